"""The studies as named presets (helpers/core/studies.py), as the command line and `make ablate`
name them."""
from __future__ import annotations

import re
import shlex

import pytest

from helpers.__main__ import ablation_settings, build_parser
from helpers.core.settings import preset
from helpers.core.studies import STUDIES, study_settings
from tests.test_structure import ROOT

# The flags each study was measured with, before the studies had names (the Makefile's PLACE,
# NO_PLACE, GRID and MAIN, all with --no-with-upsampling).
NO_PLACE = ("--paste-prob 0 --swap-prob 0 --null-rate 0 --no-undescribed-weight --no-with-place "
            "--epochs 24 --patience 10")
MEASURED = {
    "--study place": "--seeds 0 1 2 --fusions --text-modes --no-with-init --place-each",
    "--study place --seeds 0 --no-place-each": "--seeds 0 --fusions --text-modes --no-with-init",
    "--study fusions": f"--no-with-init {NO_PLACE} --seeds 0 --fusions concat film_multi cross_attn "
                       "--text-modes raw positive --negative-rates 0.25",
    "--study main": f"--no-with-init {NO_PLACE} --fusion cross_attn --text-mode positive --seeds 0 1 2 "
                    "--fusions concat --text-modes raw",
    "--study main --with-init": f"--with-init {NO_PLACE} --fusion cross_attn --text-mode positive "
                                "--seeds 0 1 2 --fusions concat --text-modes raw",
}


def _settings(flags: str):
    return ablation_settings(preset("demo"), build_parser().parse_args(["ablate", *shlex.split(flags)]))


def test_make_ablate_names_the_studies_with_the_settings_they_were_measured_with():
    recipe = (ROOT / "Makefile").read_text().split("\nablate:", 1)[1].split("\n\n", 1)[0]
    commands = recipe.replace("\\\n", " ").replace("; wait", "").replace("&", "").split("$(RUN1)")
    named = [" ".join(re.sub(r"--(data|out|text-model) \S+", "", c.split("$(STUDY)", 1)[1]).split())
             for c in commands if "ablate $(STUDY)" in c]
    assert sorted(set(named)) == sorted(MEASURED)
    for study, flags in MEASURED.items():
        assert _settings(study) == _settings(f"--no-with-upsampling {flags}"), study


def test_a_study_starts_from_the_preset_and_the_flags_change_it():
    finetune, ablation = _settings("--study fusions --epochs 3 --seeds 1")
    assert (finetune.epochs, finetune.paste_prob, ablation.seeds) == (3, 0.0, (1,))
    assert ablation.fusions == STUDIES["fusions"].ablation["fusions"]
    assert finetune.image_size == preset("demo").finetune.image_size  # not in the study: the preset's
    assert _settings("") == (preset("demo").finetune, preset("demo").ablation)
    with pytest.raises(ValueError, match="no study 'grid'; the studies: place, fusions, main"):
        study_settings("grid", preset("demo").finetune, preset("demo").ablation)
