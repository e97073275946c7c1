"""The settings (helpers/core/settings.py): each defined once, the run mode read in one place."""
from __future__ import annotations

import dataclasses

import pytest

from helpers.core import settings
from helpers.core.settings import FinetuneConfig, PretrainConfig, TrainingConfig, setting_help


def test_the_settings_both_phases_share_are_defined_once():
    shared = setting_help(TrainingConfig)
    pretrain, finetune = setting_help(PretrainConfig), setting_help(FinetuneConfig)
    assert set(pretrain) & set(finetune) == set(shared)  # no other field of the same name
    assert all(pretrain[k] == finetune[k] == shared[k] for k in shared)  # one help text each
    assert (PretrainConfig().epochs, FinetuneConfig().epochs) == (20, 60)  # the phases' defaults
    assert (PretrainConfig().batch_size, FinetuneConfig().batch_size) == (32, 8)
    assert {f.name for f in dataclasses.fields(FinetuneConfig)} >= {"encoder_lr", "fusion", "seed"}


@pytest.mark.parametrize("smoke,mode,expected", [("1", "demo", "smoke"), ("0", "demo", "demo"),
                                                 ("", "real", "real"), ("", "bogus", None), ("", "", None)])
def test_the_run_mode_is_read_from_the_environment_in_one_place(monkeypatch, smoke, mode, expected):
    monkeypatch.setenv(settings.SMOKE_ENV, smoke)
    monkeypatch.setenv(settings.MODE_ENV, mode)
    assert settings.mode_from_env() == expected
    assert settings.resolve_mode(None, "demo") == (expected or "demo")
    assert settings.resolve_mode(None, "/data/iu") == (expected or "real")
    assert settings.resolve_mode("real") == "real"


def test_real_preset_runs_a_light_ablation_and_the_full_one_on_request():
    from helpers.core.settings import preset
    from helpers.core.studies import ablation_set
    from helpers.evaluation.ablation import ablation_variants

    real = preset("real", "x")
    light, full = ablation_set(real, "light"), ablation_set(real, "full")
    assert ablation_set(real, None) is None
    encoders = {"masked": "m.pth", "reconstruct": "r.pth"}
    base = dataclasses.replace(real.finetune, pretrained_encoder="m.pth")

    def trainings(settings):
        return sum(len(v.seeds or settings.seeds) for v in ablation_variants(base, settings, encoders)
                   if v.texts == "report")

    assert light.seeds == (0,) and trainings(light) <= 8
    names = [v.name for v in ablation_variants(base, light, encoders)]
    assert "no place training" in names and "no place prior" in names
    assert full.seeds == (0, 1, 2) and trainings(full) >= 20
    with pytest.raises(ValueError, match="light"):
        ablation_set(real, "everything")
