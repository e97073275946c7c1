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
