"""Places: the words that name where a finding lies, and copies of a lesion at another place.

The words: "left"/"right" (`swap_sides`, `names_side`) and the levels of a lung ("upper"/"lower",
"apex"/"base", ...: `swap_levels`, `names_level`). The pixels: `paste_copy` puts a second copy of a
lesion at its mirror place in the other lung or at the other level of the same lung, so that one
image holds two lesions that look alike and only the words tell which one is meant. Training
(`datasets.LabeledCases`), the reading probes (`evaluation.mirror_probe`, and `place_questions`
for validation) use both. `place_code` turns the words into flags (right, left, upper, middle,
lower) for the model's place prior (`fusion.PlacePrior`).
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np
import torch
from torchvision.transforms import v2

from .sentences import names_lesion, split_sentences

# The version of the place words (`place_code` and the side and level words it reads): raise it when
# a change gives some text another code. An exported model records it; loading it under another warns.
RULES_VERSION = 1
SIDES = ("left", "right")
_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_BOTH = re.compile(r"\b(bilateral(ly)?|both|bibasilar|bibasal|biapical)\b", re.IGNORECASE)


def _swap_word(match: re.Match) -> str:
    word = match.group(0)
    other = "right" if word.lower() == "left" else "left"
    if word.isupper():
        return other.upper()
    return other.capitalize() if word[0].isupper() else other


def swap_sides(text: str) -> str:
    """Exchange the words "left" and "right", keeping their case ("Left" -> "Right")."""
    return _SIDE.sub(_swap_word, text)


def names_side(text: str) -> str | None:
    """The side a text names: "left", "right", "both" (both words, or "bilateral"/"both"),
    or None."""
    sides = {m.lower() for m in _SIDE.findall(text)}
    if len(sides) == 2 or _BOTH.search(text):
        return "both"
    return sides.pop() if sides else None


# Levels: the words that place a finding high or low in a lung, each with its opposite. Words of
# the middle ("perihilar", "lingula") have none: a text that uses them names no swappable level.
_LEVEL_OPPOSITE = {"upper": "lower", "apex": "base", "apices": "bases", "apical": "basilar",
                   "suprahilar": "infrahilar", "biapical": "bibasilar"}
_UPPER_WORDS = frozenset(_LEVEL_OPPOSITE)
_LEVEL_OPPOSITE.update({low: high for high, low in list(_LEVEL_OPPOSITE.items())}, basal="apical",
                       bibasal="biapical")
_LEVEL = re.compile(rf"\b({'|'.join(sorted(_LEVEL_OPPOSITE, key=len, reverse=True))})\b", re.IGNORECASE)
_MIDDLE = re.compile(r"\b(middle|mid|midlung|mid-lung|perihilar|parahilar|hilar|hilum|lingula|lingular)\b",
                     re.IGNORECASE)


_LOW_ONLY = re.compile(r"\b(costophrenic|(hemi)?diaphragms?|retrocardiac)\b", re.IGNORECASE)


def _swap_level(match: re.Match) -> str:
    word = match.group(0)
    other = _LEVEL_OPPOSITE[word.lower()]
    if word.isupper():
        return other.upper()
    return other.capitalize() if word[0].isupper() else other


def swap_levels(text: str) -> str:
    """Exchange the words of the upper and the lower lung ("upper" <-> "lower", "apex" <-> "base",
    "apical" <-> "basilar", ...), keeping their case."""
    return _LEVEL.sub(_swap_level, text)


def names_level(text: str) -> str | None:
    """The level a text names: "upper", "lower", "mixed" (both, or a word of the middle), or None."""
    levels = {"upper" if w.lower() in _UPPER_WORDS else "lower" for w in _LEVEL.findall(text)}
    if len(levels) == 2 or (levels and _MIDDLE.search(text)):
        return "mixed"
    return levels.pop() if levels else None


# The place code: what a text says of where its finding lies, one flag per entry. Sides are the
# patient's (the radiological convention puts the patient's right on the image's left).
PLACE_CODE = ("right", "left", "upper", "middle", "lower")


def levels_named(text: str) -> set[str]:
    """The levels of a lung a text names: a subset of {"upper", "middle", "lower"}."""
    found = {"upper" if w.lower() in _UPPER_WORDS else "lower" for w in _LEVEL.findall(text)}
    if _MIDDLE.search(text):
        found.add("middle")
    if _LOW_ONLY.search(text):
        found.add("lower")
    return found


def place_code(texts: list[str], drawn: Callable[[str], bool] | None = None) -> torch.Tensor:
    """float32 [N, 5]: for each text, which of `PLACE_CODE` it names (1) or not (0). "Both sides"
    ("bilateral", "bibasilar", "left and right") sets both sides; a text naming no place is all 0.

    Only the sentences that describe a finding the masks draw count (`drawn`: the masks'
    vocabulary, `vocabulary.MaskVocabulary.describes_drawn`; None: the lung lesions,
    `sentences.names_lesion`): "Healed right rib fracture." names a side, but not of anything a
    mask marks, and a text made only of such sentences points nowhere."""
    drawn = drawn or names_lesion
    code = torch.zeros(len(texts), len(PLACE_CODE))
    for row, text in zip(code, texts):
        text = " ".join(s for s in split_sentences(text) if drawn(s))
        side, levels = names_side(text), levels_named(text)
        named = ({"right", "left"} if side == "both" else {side} if side else set()) | levels
        row[[i for i, name in enumerate(PLACE_CODE) if name in named]] = 1.0
    return code


LEVEL_SHIFT = 0.3  # of the image height: from a lung's lower zone to its upper zone, or back


def _moved(x: torch.Tensor, how: str | int) -> torch.Tensor:
    """`x` [..., H, W] mirrored left-right (`how="mirror"`) or moved `how` rows down (up when
    negative; what leaves the image is lost, what enters is zero)."""
    if how == "mirror":
        return x.flip(-1)
    out = torch.zeros_like(x)
    if how > 0:
        out[..., how:, :] = x[..., :-how, :]
    elif how < 0:
        out[..., :how, :] = x[..., -how:, :]
    else:
        out = x.clone()
    return out


def level_shift(level: str | None, size: int) -> int:
    """Rows that move a lesion of a lung's `level` ("upper" / "lower") to the other level."""
    return {"upper": 1, "lower": -1}.get(level or "", 0) * round(LEVEL_SHIFT * size)


def copy_is_free(mask: torch.Tensor, how: str | int, margin: int = 2) -> bool:
    """Whether the lesion under `mask` [H, W] moved by `how` (see `_moved`) stays whole inside the
    image and keeps `margin` pixels away from the original."""
    if how == 0:
        return False
    m = mask.float()[None, None]
    copy = _moved(m, how)
    if copy.sum() < m.sum():
        return False
    grown = torch.nn.functional.max_pool2d(m, 2 * margin + 1, stride=1, padding=margin)
    return not bool((grown * copy).any())


def mirror_overlaps(masks: np.ndarray, margin: int = 2) -> np.ndarray:
    """bool [N]: whether each mask of uint8 [N, S, S] touches (within `margin` pixels) its own
    left-right mirror image, i.e. has no free mirror place to be pasted into."""
    return np.array([not copy_is_free(torch.from_numpy(np.asarray(m)), "mirror", margin) for m in masks],
                    dtype=bool)


def paste_copy(image: torch.Tensor, mask: torch.Tensor, how: str | int = "mirror",
               feather: float = 0.015, onto: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy the lesion under `mask` to another place of the same image: its mirror place in the
    other lung (`how="mirror"`) or `how` rows down (up when negative; see `level_shift`).

    image uint8 [..., S, S], mask [..., S, S] in {0, 1} -> (image with a second copy of the lesion,
    uint8 [..., S, S]; the copy's mask). The copy is alpha-blended through a Gaussian-feathered mask
    (sigma = `feather` x the image width) so no hard seam marks it as pasted. `onto` (default:
    `image`) is the picture it is pasted into, e.g. one that holds a copy already.
    """
    copy = _moved(mask, how)
    sigma = max(0.5, feather * image.shape[-1])
    kernel = 2 * int(3 * sigma) + 1
    alpha = v2.functional.gaussian_blur(copy.float().reshape(-1, 1, *mask.shape[-2:]),
                                        [kernel, kernel], [sigma, sigma]).reshape(mask.shape)
    alpha = torch.maximum(alpha * 2, copy.float()).clamp(0, 1)  # full strength inside
    base = image if onto is None else onto
    pasted = base.float() * (1 - alpha) + _moved(image, how).float() * alpha
    return pasted.round().to(torch.uint8), copy


def paste_mirror(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`paste_copy` to the mirror place: the same spot in the other lung."""
    return paste_copy(image, mask, "mirror")


def place_questions(images: torch.Tensor, masks: torch.Tensor, texts: list[str],
                    every_place: bool = False) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """A reading probe built from labeled cases: each lesion is copied to its mirror place (a
    text naming one side) or to the lung's other level (a text naming upper or lower), where that
    place is free; each pasted image is asked twice: with the text (the original is meant) and
    with its side or level swapped (the copy is meant). Where both places are free, the cases take
    them in turn (`every_place`: both, apart), so that both kinds are asked at half the cost.

    images uint8 [N, S, S], masks [N, S, S] in {0, 1}, texts: the model texts ->
    (pasted images uint8 [M, S, S], their texts [M], the meant lesion bool [M, S, S], the other
    lesion bool [M, S, S]); M = 2 x the places asked (0 when none is free).
    """
    out_images, out_texts, meant, other = [], [], [], []
    turn = 0
    for image, mask, text in zip(images, masks, texts):
        mask = mask.bool()
        places = [("mirror", swap_sides)] if names_side(text) in SIDES else []
        if shift := level_shift(names_level(text), mask.shape[-1]):
            places.append((shift, swap_levels))
        places = [(how, swap) for how, swap in places if mask.any() and copy_is_free(mask, how)]
        if len(places) > 1 and not every_place:
            places, turn = [places[turn % 2]], turn + 1
        for how, swap in places:
            pasted, copy = paste_copy(image, mask, how)
            out_images += [pasted, pasted]
            out_texts += [text, swap(text)]
            meant += [mask, copy.bool()]
            other += [copy.bool(), mask]
    if not out_images:
        empty = torch.zeros(0, *images.shape[1:], dtype=torch.bool)
        return empty.to(torch.uint8), [], empty, empty
    return torch.stack(out_images), out_texts, torch.stack(meant), torch.stack(other)
