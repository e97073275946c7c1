"""Named ablation presets: the light and full sets of the notebooks (`ablation_set`), and the
studies, each the settings of one measured study (`STUDIES`).

`python -m helpers ablate --study NAME` (and `make ablate`) starts from the mode's preset, applies
the study's Phase-2 and ablation settings, then the flags given: `--study place --seeds 0` is the
place study on one seed. Each study's findings, with the settings and commit that produced them,
are in the documentation's results.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .settings import AblationConfig, FinetuneConfig, Preset, override

ABLATION_SETS = ("light", "full")


def ablation_set(p: Preset, which: str | None) -> AblationConfig | None:
    """The ablations to run: "light" (the preset's), "full" (3 seeds, four fusions, both text
    modes, upsampling and Phase-1 init: ~21 Phase-2 trainings), None / "none" (skip)."""
    if which in (None, "none", False):
        return None
    if which == "light":
        return p.ablation
    if which == "full":
        return dataclasses.replace(AblationConfig(), text_modes=("raw",),
                                   bootstrap=p.ablation.bootstrap)
    raise ValueError(f"ablations must be one of {ABLATION_SETS} or None, got {which!r}")


# The earlier study of fusions and text modes: without the place training, at the 24 epochs it was
# measured with.
_NO_PLACE = {"paste_prob": 0.0, "swap_prob": 0.0, "null_rate": 0.0, "undescribed_weight": False,
             "epochs": 24, "patience": 10}
_ALONE = {"with_init": False, "with_upsampling": False}  # no Phase-1 or upsampling rows


@dataclass(frozen=True)
class Study:
    """What a study changes: Phase-2 settings (`FinetuneConfig` fields) and ablation settings
    (`AblationConfig` fields)."""

    help: str
    finetune: dict = field(default_factory=dict)
    ablation: dict = field(default_factory=dict)


STUDIES = {
    "place": Study("the place training: the default, its controls, no place training, each text "
                   "method left out and the epoch chosen by Dice alone, 3 seeds",
                   ablation={"seeds": (0, 1, 2), "fusions": (), "text_modes": (), "place_each": True,
                             **_ALONE}),
    "fusions": Study("the earlier study of fusions and text modes, without the place training: "
                     "three fusions x both text modes and mismatched-text negatives, one seed",
                     finetune=_NO_PLACE,
                     ablation={"seeds": (0,), "fusions": ("concat", "film_multi", "cross_attn"),
                               "text_modes": ("raw", "positive"), "negative_rates": (0.25,),
                               "with_place": False, **_ALONE}),
    "main": Study("the default design (cross_attn, positive) against the baseline (concat, raw), "
                  "without the place training, 3 seeds (add --with-init for the Phase-1 rows)",
                  finetune={**_NO_PLACE, "fusion": "cross_attn", "text_mode": "positive"},
                  ablation={"seeds": (0, 1, 2), "fusions": ("concat",), "text_modes": ("raw",),
                            "with_place": False, **_ALONE}),
}


def study_settings(name: str | None, finetune: FinetuneConfig, ablation: AblationConfig
                   ) -> tuple[FinetuneConfig, AblationConfig]:
    """`finetune` and `ablation` with the study `name`'s settings (None: as they are); ValueError
    naming the studies for an unknown one."""
    if name is None:
        return finetune, ablation
    if name not in STUDIES:
        raise ValueError(f"no study {name!r}; the studies: {', '.join(STUDIES)}")
    study = STUDIES[name]
    return override(finetune, study.finetune), override(ablation, study.ablation)


def study_help() -> str:
    """One line per study, for the command line's help."""
    return "; ".join(f"{name}: {study.help}" for name, study in STUDIES.items())

