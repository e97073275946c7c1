"""The ablations (helpers/evaluation/ablation.py): variants, summaries, paired differences."""
from __future__ import annotations

import dataclasses

import pytest


def test_ablation_variants_and_summary():
    import pandas as pd

    from helpers.core.settings import AblationConfig, FinetuneConfig
    from helpers.evaluation.ablation import ablation_variants, summarize_runs

    base = FinetuneConfig(pretrained_encoder="masked.pth", fusion="concat", text_mode="raw",
                          paste_prob=0.3, swap_prob=0.0, null_rate=0.2)
    settings = AblationConfig(fusions=("concat", "film"), text_modes=("positive",),
                              negative_rates=(0.0, 0.25), place_each=True)
    variants = ablation_variants(base, settings, {"masked": "masked.pth", "reconstruct": "rec.pth"})
    assert [v.name for v in variants] == [
        "text (concat, raw)", "shuffled test text (concat, raw)", "image only (none)",
        "text (concat, positive)", "text (film, raw)", "text (film, positive)", "negatives 0.25",
        "without null_rate", "without paste_prob", "without sentence_prob", "epoch by Dice alone",
        "no place training", "no place prior",
        "no Phase-1 init", "Phase-1 reconstruct init", "transpose upsampling"]
    assert variants[5].overrides == {"fusion": "film", "text_mode": "positive"}
    assert [v.texts for v in variants[:3]] == ["report", "shuffled", "report"]
    assert variants[9].overrides == {"sentence_prob": 0.0}
    assert variants[10].overrides == {"select_on_probe": False}
    assert variants[11].overrides == {"null_rate": 0.0, "paste_prob": 0.0}
    assert variants[2].overrides == {"fusion": "none", "place_prior": False, "null_rate": 0.0,
                                     "paste_prob": 0.0, "sentence_prob": 0.0}  # reads no text
    assert variants[12].overrides == {"place_prior": False}
    alone = ablation_variants(dataclasses.replace(base, null_rate=0.0, place_prior=False,
                                                  sentence_prob=0.0, select_on_probe=False), AblationConfig(
        fusions=(), with_init=False, with_upsampling=False, place_each=True))
    assert [v.name for v in alone][-1] == "no place training"  # one method: no "without" rows
    assert alone[-1].overrides == {"paste_prob": 0.0}
    per_case = pd.DataFrame({"variant": ["a"] * 4, "seed": [0, 0, 1, 1], "dice": [1.0, 0.0, 0.5, 0.5],
                             "iou": [1.0, 0.0, 0.5, 0.5], "pointing_hit": [1.0, 0.0, 1.0, 1.0]})
    runs = pd.DataFrame({"variant": ["a", "a"], "seed": [0, 1], "dice": [0.5, 0.5], "iou": [0.5, 0.5],
                         "pointing_hit": [0.5, 1.0]})
    row = summarize_runs(runs, per_case, n_boot=200).iloc[0]
    assert row["dice"] == pytest.approx(0.5) and row["dice_sd"] == pytest.approx(0.0)
    assert row["pointing_hit"] == pytest.approx(0.75) and row["seeds"] == 2 and row["n_cases"] == 4
    assert row["dice_lo"] <= 0.5 <= row["dice_hi"]


def test_paired_difference_pairs_seed_and_case():
    import pandas as pd

    from helpers.evaluation.ablation import paired_difference

    per_case = pd.DataFrame({"variant": ["a", "a", "b", "b", "a"], "seed": [0, 1, 0, 1, 2],
                             "case_id": ["x", "x", "x", "x", "x"], "dice": [0.9, 0.7, 0.5, 0.5, 0.0]})
    diff = paired_difference(per_case, "a", "b", n_boot=200)
    assert diff["difference"] == pytest.approx(0.3) and diff["n_pairs"] == 2  # seed 2 has no pair
    assert diff["lo"] <= 0.3 <= diff["hi"]
    with pytest.raises(ValueError, match="both"):
        paired_difference(per_case, "a", "c")


def test_differences_to_the_main_variant():
    import pandas as pd

    from helpers.evaluation.ablation import differences_to

    per_case = pd.DataFrame({"variant": ["m", "m", "x", "x", "y", "y"], "seed": [0] * 6,
                             "case_id": ["a", "b"] * 3, "dice": [0.8, 0.6, 0.5, 0.5, 0.8, 0.6]})
    diffs = differences_to(per_case, "m", n_boot=100)
    assert diffs["b"].tolist() == ["x", "y"]
    assert diffs["difference"].round(6).tolist() == [0.2, 0.0]
