"""Where the demo's lesions go: the labeled image's target and undescribed distractors, in either
distractor setting (see `helpers.synthetic`), and the second lesion of a probe image.
"""
from __future__ import annotations

import numpy as np

from ...core.anatomy import SIDES, other_side
from .reports import KINDS, LEVELS, Lesion

DISTRACTORS = ("realistic", "forced")
EXTRA_LESION_SHARE = 0.35  # realistic: labeled images with one undescribed lesion besides the target
SAME_KIND_SHARE = 0.6  # realistic: of those extra lesions, the share of the target's kind


def pick_lesion(role: str, rng: np.random.Generator) -> Lesion:
    kind = str(rng.choice(KINDS))
    levels = ("lower",) if kind == "effusion" else LEVELS  # effusions only fill the lower zones
    return Lesion(kind, f"{rng.choice(SIDES)} {rng.choice(levels)}", role)


def _lesion_in(zone: str, role: str, rng: np.random.Generator) -> Lesion:
    kinds = KINDS if zone.endswith("lower") else tuple(k for k in KINDS if k != "effusion")
    return Lesion(str(rng.choice(kinds)), zone, role)


# Three lesion zones with no two neighbours on one side (lesions there would overlap): the upper
# and lower zone of one lung and any zone of the other.
_LAYOUTS = [(f"{a} upper", f"{a} lower", f"{b} {lv}")
            for a, b in (("right", "left"), ("left", "right")) for lv in LEVELS]


def pick_labeled_lesions(rng: np.random.Generator) -> list[Lesion]:
    """A target and two distractors: a layout drawn uniformly, then the target uniformly among its
    three zones, so nothing in the picture says which lesion the text describes (an earlier plan
    that placed distractors relative to the target leaked it, and an image-only model learned it).
    The target comes first."""
    zones = list(_LAYOUTS[int(rng.integers(len(_LAYOUTS)))])
    target = zones.pop(int(rng.integers(3)))
    return [_lesion_in(target, "target", rng)] + [_lesion_in(z, "distractor", rng) for z in zones]


def _other_zones(zone: str) -> tuple[list[str], list[str]]:
    """Zones a second lesion may take without touching one in `zone`: (same lung, other lung).
    Neighbouring levels of one lung would overlap, so the same lung offers upper <-> lower only."""
    side, level = zone.split()
    same = [f"{side} {lv}" for lv in LEVELS if {lv, level} == {"upper", "lower"}]
    return same, [f"{other_side(side)} {lv}" for lv in LEVELS]


def second_lesion(target: Lesion, role: str, same_kind: bool, other_lung: bool,
                   rng: np.random.Generator) -> Lesion:
    """A lesion away from `target`: of its kind when `same_kind` (and the zone allows it), in the
    other lung when `other_lung` (or when the same lung has no free zone)."""
    same, other = _other_zones(target.zone)
    zones = other if other_lung or not same else same
    if same_kind and target.kind == "effusion":  # effusions only fill the lower zones
        zones = [z for z in zones if z.endswith("lower")] or [z for z in other if z.endswith("lower")]
    zone = zones[int(rng.integers(len(zones)))]
    return Lesion(target.kind, zone, role) if same_kind else _lesion_in(zone, role, rng)


def pick_realistic_lesions(rng: np.random.Generator) -> list[Lesion]:
    """A target, and with probability EXTRA_LESION_SHARE one undescribed lesion elsewhere (of the
    target's kind with probability SAME_KIND_SHARE, in the other lung half of the time)."""
    target = pick_lesion("target", rng)
    if rng.random() >= EXTRA_LESION_SHARE:
        return [target]
    same_kind, other_lung = rng.random() < SAME_KIND_SHARE, rng.random() < 0.5
    return [target, second_lesion(target, "distractor", same_kind, other_lung, rng)]
