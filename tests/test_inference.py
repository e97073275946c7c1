"""Segmenter, evaluation, the command line and the benchmark."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.__main__ import main
from helpers.core.checkpoint import CheckpointError
from helpers.data.io import load_mask
from helpers.core.layout import DatasetError
from helpers.evaluation.scores import counterfactual_sides, evaluate, expected_image_side, image_side
from helpers.inference.segmenter import Segmenter
from helpers.training.datasets import labeled_arrays


@pytest.fixture(scope="module")
def segmenter(checkpoint, text_dir):
    return Segmenter.from_checkpoint(checkpoint, device="cpu", text_cache_dir=text_dir)


@pytest.mark.parametrize("image", [
    np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8),            # 8-bit
    np.random.default_rng(1).integers(0, 65535, (90, 40), dtype=np.uint16),         # 16-bit
    np.random.default_rng(2).integers(0, 255, (33, 47, 3), dtype=np.uint8),         # RGB
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 4), dtype=np.uint8)),  # RGBA
])
def test_predict_returns_the_input_resolution(segmenter, image):
    prob = segmenter.predict(image, "Nodule in the right upper lobe.")
    size = image.size[::-1] if isinstance(image, Image.Image) else image.shape[:2]
    assert prob.shape == size and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    mask = segmenter.mask(image, "Nodule in the right upper lobe.")
    np.testing.assert_array_equal(mask, (prob >= segmenter.threshold).astype(np.uint8))


def test_the_text_changes_the_prediction(segmenter, catalog):
    image = catalog.cases["image_path"].iloc[0]
    a = segmenter.predict(image, "Nodule in the right upper lobe.")
    b = segmenter.predict(image, "Large left pleural effusion.")
    assert np.abs(a - b).max() > 1e-4
    assert segmenter.describe().count("tiny offline CLIP") == 1
    assert "place prior" in segmenter.describe()  # the default: the place words reach the decoder


def test_bad_image_and_checkpoint_are_clear_errors(segmenter, tmp_path):
    broken = tmp_path / "x.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="x.png"):
        segmenter.predict(broken, "text")
    with pytest.raises(CheckpointError, match="missing.pth"):
        Segmenter.from_checkpoint(tmp_path / "missing.pth")
    encoder_only = tmp_path / "enc.pth"
    torch.save({"encoder": {}, "encoder_name": "resnet18"}, encoder_only)
    with pytest.raises(CheckpointError, match="not a Phase-2 checkpoint"):
        Segmenter.from_checkpoint(encoder_only)


def test_evaluate_matches_hand_computed_dice(segmenter, cases):
    test = cases[cases["split"] == "test"].reset_index(drop=True)
    per_case, summary = evaluate(segmenter, test, n_boot=200)
    arrays = labeled_arrays(test, segmenter.image_size)
    for i, row in per_case.iterrows():
        prob = segmenter.predict(arrays.images[i], row["text"])
        pred = prob >= segmenter.threshold
        truth = arrays.masks[i].astype(bool)
        denom = pred.sum() + truth.sum()
        expected = 1.0 if denom == 0 else 2 * (pred & truth).sum() / denom
        assert row["dice"] == pytest.approx(expected, abs=1e-5)
    assert summary["dice"] == pytest.approx(per_case["dice"].mean())
    assert summary["dice_lo"] <= summary["dice"] <= summary["dice_hi"]
    assert summary["n"] == len(test) and summary["text_model_is_tiny"]


def test_shuffled_and_swapped_texts(segmenter, cases):
    test = cases[cases["split"] == "test"].reset_index(drop=True)
    report, summary = evaluate(segmenter, test, n_boot=10)
    swapped, swapped_summary = evaluate(segmenter, test, texts="swapped", n_boot=10)
    assert (summary["texts"], swapped_summary["texts"]) == ("report", "swapped")
    assert all(("left" in a.lower()) == ("right" in b.lower())
               for a, b in zip(report["text"], swapped["text"]) if ("left" in a) != ("right" in a))
    shuffled, _ = evaluate(segmenter, test, texts="shuffled", n_boot=10, seed=1)
    assert sorted(shuffled["text"]) == sorted(report["text"])
    with pytest.raises(ValueError, match="texts must be one of"):
        evaluate(segmenter, test, texts="nonsense")
    table, summary = counterfactual_sides(segmenter, test)
    assert summary["n_sided"] == len(table) and 0.0 <= summary["moved_share"] <= 1.0


def test_sides_follow_the_radiological_convention():
    prob = np.zeros((4, 8), np.float32)
    prob[:, :3] = 1.0
    assert image_side(prob) == "image-left"
    assert expected_image_side("Nodule in the right upper lobe.") == "image-left"
    assert expected_image_side("Small left pleural effusion.") == "image-right"
    assert expected_image_side("Heart size is normal.") is None


def test_cli_predict_writes_overlay_and_mask(checkpoint, catalog, tmp_path, capsys):
    image = catalog.cases["image_path"].iloc[0]
    out, mask_out = tmp_path / "o" / "overlay.png", tmp_path / "m" / "mask.png"
    assert main(["predict", "--checkpoint", str(checkpoint), "--image", image, "--text",
                 "Opacity at the left lung base.", "--out", str(out), "--mask-out", str(mask_out)]) == 0
    size = Image.open(image).size
    assert Image.open(out).size == size and Image.open(mask_out).size == size
    assert set(np.unique(load_mask(mask_out))) <= {0, 1}
    assert "tiny offline CLIP" in capsys.readouterr().out


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(tmp_path / "none.pth"), "--image", "x.png",
                 "--text", "t", "--out", str(tmp_path / "o.png")]) == 1
    assert "none.pth" in capsys.readouterr().err


def test_cli_prepare_prints_summary_and_split(demo_root, tmp_path, capsys):
    assert main(["prepare", "--data", str(demo_root), "--mode", "smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '"labeled_cases": 12' in out and (tmp_path / "splits.csv").exists()


def test_bench_prints_every_row(tmp_path, capsys):
    from helpers.evaluation.bench import run_bench

    table = run_bench(device="cpu", workdir=tmp_path)
    out = capsys.readouterr().out
    for name in ("straightforward (PIL/item)", "ours (cache)", "Phase-2 training step, straightforward",
                 "Phase-2 training step, ours", "model alone", "Phase-1 training step",
                 "place training, ours", "ours without place training"):
        assert name in out
    assert (table["value"] > 0).all() and len(table) == 20
    assert (table["unit"] == "ratio").sum() == 8 and (table["unit"] == "ms").sum() == 4
    assert "ground_report (5 sentences) / predict, shared decoder" in out
    assert "1 encoding + 5 decodings" in out and "decoder per text" in out
    assert "a few steps of finetune()" in out and "a few steps of pretrain()" in out


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
        "without null_rate", "without paste_prob", "without sentence_prob", "no place training",
        "no place prior",
        "no Phase-1 init", "Phase-1 reconstruct init", "transpose upsampling"]
    assert variants[5].overrides == {"fusion": "film", "text_mode": "positive"}
    assert [v.texts for v in variants[:3]] == ["report", "shuffled", "report"]
    assert variants[9].overrides == {"sentence_prob": 0.0}
    assert variants[10].overrides == {"null_rate": 0.0, "paste_prob": 0.0}
    assert variants[2].overrides == {"fusion": "none", "place_prior": False, "null_rate": 0.0,
                                     "paste_prob": 0.0, "sentence_prob": 0.0}  # reads no text
    assert variants[11].overrides == {"place_prior": False}
    alone = ablation_variants(dataclasses.replace(base, null_rate=0.0, place_prior=False,
                                                  sentence_prob=0.0), AblationConfig(
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


def test_mask_geometry(tmp_path):
    from helpers.data.catalog import mask_geometry

    mask = np.zeros((40, 40), np.uint8)
    mask[0:10, 30:40] = 255  # top right of the image: the patient's left upper zone
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    geo = mask_geometry([str(tmp_path / "m.png"), str(tmp_path / "empty.png")], size=40)
    assert geo.loc[0, "area"] == pytest.approx(100 / 1600)
    assert geo.loc[0, "cx"] == pytest.approx(0.875) and geo.loc[0, "cy"] == pytest.approx(0.125)
    assert geo.loc[1, "area"] == 0 and np.isnan(geo.loc[1, "cx"])


def test_run_paths_find_trained_phase1_encoders(tmp_path):
    from helpers.pipeline import RunPaths

    paths = RunPaths(tmp_path)
    assert paths.phase1_encoders() == {}
    paths.phase1("masked").mkdir(parents=True)
    (paths.phase1("masked") / "my_pretrained_encoder.pth").write_bytes(b"")
    assert paths.phase1_encoders() == {"masked": str(paths.phase1("masked") / "my_pretrained_encoder.pth")}


def test_two_lesion_probe_counts_where_the_mass_lies(tmp_path):
    from helpers.evaluation.scores import two_lesion_probe

    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    left, right = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    left[8:16, 2:10], right[8:16, 22:30] = 255, 255
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(right).save(tmp_path / "right.png")

    class LeftOnly:
        """Predicts the image's left half whatever the text: follows half of the texts."""
        image_size = 32

        def predict_arrays(self, images, texts):
            probs = torch.zeros(len(images), 1, 32, 32)
            probs[..., :16] = 1.0
            return probs

    import pandas as pd

    items = pd.DataFrame({"image_path": [str(image)] * 2, "text": ["a", "b"],
                          "mask_path": [str(tmp_path / "left.png"), str(tmp_path / "right.png")],
                          "other_mask_path": [str(tmp_path / "right.png"), str(tmp_path / "left.png")]})
    table, summary = two_lesion_probe(LeftOnly(), items)
    assert table["follows"].tolist() == [True, False] and summary["follows_share"] == 0.5
    with pytest.raises(ValueError, match="other_mask_path"):
        two_lesion_probe(LeftOnly(), items.drop(columns="other_mask_path"))


def test_demo_probe_items_pair_each_distractor_with_the_target(demo_root, catalog):
    from helpers.data.demo.generate import probe_items

    items = probe_items(demo_root, catalog.cases.head(3))
    assert len(items) == 3 * 2 * 2  # 2 distractors per image, both directions
    first = items.iloc[0]
    assert first["mask_path"] == catalog.cases["mask_path"].iloc[0]
    assert items.iloc[1]["other_mask_path"] == first["mask_path"]
    assert (load_mask(items.iloc[1]["mask_path"]) > 0).any()


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


def test_best_median_worst_picks_by_score():
    import pandas as pd

    from helpers.evaluation.scores import best_median_worst

    assert best_median_worst(pd.Series([0.2, 0.9, 0.5, 0.1, 0.7], index=list("abcde"))) == ["b", "c", "d"]
    assert best_median_worst(pd.Series([0.3])) == [0, 0, 0]


class ReadsSide:
    """Marks the image half the text's side word points to (the patient's right is on the image's
    left); marks nothing for a text that describes no finding."""
    image_size = 32
    threshold = 0.5

    def model_text(self, text):
        return text

    def predict_arrays(self, images, texts):
        from helpers.text.sentences import describes_finding

        probs = torch.zeros(len(images), 1, 32, 32)
        for k, text in enumerate(texts):
            if describes_finding(text):
                probs[k, ..., :16] = float("right" in text.lower())
                probs[k, ..., 16:] = float("left" in text.lower())
        return probs


class LeftOnly(ReadsSide):
    """Marks the image's left half whatever the text."""

    def predict_arrays(self, images, texts):
        probs = torch.zeros(len(images), 1, 32, 32)
        probs[..., :16] = 1.0
        return probs


def _lesion_cases(tmp_path, texts):
    import pandas as pd

    rows = []
    for k, text in enumerate(texts):
        image = np.full((32, 32), 30, np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        mask[10:18, 3:10] = 255  # on the image's left: the patient's right
        image[mask > 0] = 200
        Image.fromarray(image).save(tmp_path / f"i{k}.png")
        Image.fromarray(mask).save(tmp_path / f"m{k}.png")
        rows.append({"case_id": f"c{k}", "uid": k, "text": text, "image_path": str(tmp_path / f"i{k}.png"),
                     "mask_path": str(tmp_path / f"m{k}.png")})
    return pd.DataFrame(rows)


def test_mirror_probe_tells_a_reader_from_a_model_that_marks_one_place(tmp_path):
    from helpers.evaluation.scores import mirror_probe

    cases = _lesion_cases(tmp_path, ["Opacity at the right base.", "Nodule in the right upper lobe.",
                                     "Mild cardiomegaly."])  # the last names no side: left out
    table, summary = mirror_probe(ReadsSide(), cases)
    assert summary == {"n_cases": 2, "follows_share": 1.0, "both_share": 1.0}
    assert list(table["case_id"]) == ["c0", "c1"]
    _, summary = mirror_probe(LeftOnly(), cases)
    assert summary["follows_share"] == 0.5 and summary["both_share"] == 0.0
    _, none = mirror_probe(ReadsSide(), cases.iloc[2:])
    assert none["n_cases"] == 0


def test_normal_reports_are_asked_and_must_give_an_empty_mask(tmp_path):
    import pandas as pd

    from helpers.evaluation.scores import empty_on_normal, normal_reports

    reports = pd.DataFrame({"text": ["Heart size is normal. No pneumothorax.", "Right basilar opacity.",
                                     "", "The lungs are clear."]})
    texts = normal_reports(reports)
    assert texts == ["Heart size is normal. No pneumothorax.", "The lungs are clear."]
    cases = _lesion_cases(tmp_path, ["Opacity at the right base."] * 3)
    table, summary = empty_on_normal(ReadsSide(), cases, texts)
    assert list(table["text"]) == [texts[0], texts[1], texts[0]]
    assert summary["empty_share"] == 1.0 and summary["n"] == 3
    _, summary = empty_on_normal(LeftOnly(), cases, texts)
    assert summary["empty_share"] == 0.0 and summary["mean_area"] == 0.5
    assert empty_on_normal(ReadsSide(), cases, [])[1]["n"] == 0


def test_counterfactual_counts_a_mask_that_moves_or_empties(tmp_path):
    class OnlyWhereTheLesionIs(ReadsSide):
        """Marks the image's left half when the text names the patient's right, else nothing."""

        def predict_arrays(self, images, texts):
            probs = torch.zeros(len(images), 1, 32, 32)
            for k, text in enumerate(texts):
                probs[k, ..., :16] = float("right" in text.lower())
            return probs

    cases = _lesion_cases(tmp_path, ["Opacity at the right base.", "Right upper lobe nodule.",
                                     "Mild cardiomegaly."])
    table, reader = counterfactual_sides(ReadsSide(), cases)
    assert len(table) == 2 and reader["moved_share"] == 1.0 and reader["emptied_share"] == 0.0
    assert reader["correct_side_share"] == 1.0 and reader["follows_share"] == 1.0
    _, fixed = counterfactual_sides(LeftOnly(), cases)
    assert fixed["moved_share"] == 0.0 and fixed["follows_share"] == 0.0
    _, checks = counterfactual_sides(OnlyWhereTheLesionIs(), cases)
    assert checks["emptied_share"] == 1.0 and checks["follows_share"] == 1.0
