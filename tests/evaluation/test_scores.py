"""Scores and probes (helpers/evaluation/scores.py): Dice, the counterfactual, the reading probes,
the per-sentence scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.data.demo.generate import report_items
from helpers.evaluation.scores import counterfactual_sides, evaluate, expected_image_side, image_side
from helpers.evaluation.sentence_scores import cluster_ci, per_sentence
from helpers.text.reader import ReportReader
from helpers.training.datasets import labeled_arrays


class SideReader:
    """Puts all its probability on the image half that a sentence's side word names (the
    patient's right is the image's left); `swap` reads the sides the wrong way round."""
    image_size, threshold = 32, 0.5
    reader = ReportReader("positive")

    def __init__(self, swap: bool = False):
        self.swap, self.calls = swap, []

    def predict_sentences(self, image: np.ndarray, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        probs = torch.zeros(len(texts), 1, 32, 32)
        for k, text in enumerate(texts):
            image_left = ("right" in text) != self.swap
            probs[k, 0, 8:16, :16] = 1.0 if image_left else 0.0
            probs[k, 0, 8:16, 16:] = 0.0 if image_left else 1.0
        return probs


@pytest.fixture
def two_lesion_report(tmp_path):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "image.png")
    right, left = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    right[8:16, 2:10], left[8:16, 22:30] = 255, 255  # patient's right: image-left
    Image.fromarray(right).save(tmp_path / "right.png")
    Image.fromarray(left).save(tmp_path / "left.png")
    report = "Nodule in the right upper lobe. Heart size is normal. Opacity in the left upper lobe."
    return pd.DataFrame({"report_id": ["r"] * 2, "image_path": [str(tmp_path / "image.png")] * 2,
                         "report": [report] * 2,
                         "sentence": ["Nodule in the right upper lobe.", "Opacity in the left upper lobe."],
                         "mask_path": [str(tmp_path / "right.png"), str(tmp_path / "left.png")]})


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


def test_per_sentence_scores_each_mask_against_its_own_lesion(two_lesion_report):
    reader = SideReader()
    table, summary = per_sentence(reader, two_lesion_report, n_boot=50)
    assert reader.calls == [["Nodule in the right upper lobe.", "Opacity in the left upper lobe."]]
    assert table["on_own"].all() and table["kept"].all() and table["located"].all()
    # each mask: 8 x 16 pixels, its lesion 8 x 8 inside it -> Dice 2 * 64 / (128 + 64)
    assert table["dice"].tolist() == pytest.approx([2 * 64 / 192] * 2)
    assert table["mass_own"].tolist() == [64, 64] and table["mass_other"].tolist() == [0, 0]
    assert summary["on_own_share"] == 1.0 and summary["n_reports"] == 1 and summary["n_sentences"] == 2
    wrong, summary = per_sentence(SideReader(swap=True), two_lesion_report, n_boot=50)
    assert not wrong["on_own"].any() and wrong["dice"].tolist() == [0, 0] and summary["on_own_share"] == 0


def test_a_sentence_the_filter_drops_gets_no_mask(two_lesion_report):
    items = two_lesion_report.assign(report=lambda t: t["report"].str.replace(
        "Opacity in the left upper lobe.", "No opacity in the left upper lobe."))
    table, summary = per_sentence(SideReader(), items, n_boot=50)
    assert table["kept"].tolist() == [True, False] and table["on_own"].tolist() == [True, False]
    assert table["dice"].iloc[1] == 0 and summary["kept_share"] == 0.5
    with pytest.raises(ValueError, match="mask_path"):
        per_sentence(SideReader(), items.drop(columns="mask_path"))


def test_cluster_interval_resamples_whole_reports():
    mean, lo, hi = cluster_ci(np.array([1.0, 1.0, 0.0, 0.0]), np.array(["a", "a", "b", "b"]), n_boot=400)
    assert mean == 0.5 and lo == 0.0 and hi == 1.0  # two reports: each resample is all a or all b, or both
    same = cluster_ci(np.ones(6), np.arange(6) // 2)
    assert same == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="one length"):
        cluster_ci(np.ones(3), np.zeros(2))


def test_per_sentence_on_the_demo_reports(reading_segmenter, demo_root, catalog):
    items = report_items(demo_root, catalog.cases.head(3))
    table, summary = per_sentence(reading_segmenter, items, n_boot=50)
    assert len(table) == len(items) == 9 and summary["n_reports"] == 3 and table["kept"].all()
    for name in ("dice", "on_own_share"):
        assert 0 <= summary[f"{name}_lo"] <= summary[name] <= summary[f"{name}_hi"] <= 1


def test_other_findings_asks_each_sentence_that_names_no_lesion_alone(reading_segmenter, catalog):
    import copy

    from helpers.evaluation.sentence_scores import other_findings

    cases = catalog.cases[catalog.cases["mask_path"].notna()].head(4).copy()
    cases["text"] = [f"Mild cardiomegaly. {t} Tortuous aorta." for t in cases["text"]]
    table, summary = other_findings(reading_segmenter, cases)
    assert {"Mild cardiomegaly.", "Tortuous aorta."} <= set(table["text"])
    assert summary["n"] == len(table) == 4 * summary["n_sentences"]  # every sentence on every image
    kinds = ("opacit", "mass", "nodul", "effusion", "consolidation", "atelectasis")  # the demo's lesions
    assert not any(kind in t.lower() for t in table["text"] for kind in kinds)  # never asked
    for threshold, empty in ((0.0, 0.0), (1.01, 1.0)):  # every pixel marked, none marked
        seg = copy.copy(reading_segmenter)
        seg.threshold = threshold
        assert other_findings(seg, cases)[1]["empty_share"] == empty


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
        image_size, threshold = 32, 0.5

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
    assert table["hit"].tolist() == [True, False] and not table["empty"].any()  # the mask: the left half
    assert summary["hit_share"] == summary["hit_share_fallback"] == 0.5 and summary["low_confidence_share"] == 0
    assert not table["same_lung"].any() and summary["n_items_other_lung"] == 2  # one in each lung
    with pytest.raises(ValueError, match="other_mask_path"):
        two_lesion_probe(LeftOnly(), items.drop(columns="other_mask_path"))


def test_best_median_worst_picks_by_score():
    import pandas as pd

    from helpers.evaluation.scores import best_median_worst

    assert best_median_worst(pd.Series([0.2, 0.9, 0.5, 0.1, 0.7], index=list("abcde"))) == ["b", "c", "d"]
    assert best_median_worst(pd.Series([0.3])) == [0, 0, 0]


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
    # a lesion whose own sentence names no side stays where it is when the side words are swapped
    still = _lesion_cases(tmp_path, ["Right rib fracture. Opacity in the lingula.", "Right upper lobe nodule."])
    table, summary = counterfactual_sides(ReadsSide(), still)
    assert list(table["case_id"]) == ["c1"] and (summary["n_sided"], summary["n_left_out"]) == (1, 1)


def test_pairs_in_one_lung_have_their_centroids_in_one_half_and_off_the_heart():
    from helpers.evaluation.scores import same_lung

    def at(x0, x1, y0, y1):
        m = torch.zeros(32, 32)
        m[y0:y1, x0:x1] = 1
        return m

    upper, lower, other, heart = at(2, 10, 4, 10), at(2, 10, 20, 28), at(22, 30, 4, 10), at(14, 19, 19, 25)
    pairs = [(upper, lower), (lower, upper), (upper, other), (heart, other), (other, heart)]
    found = same_lung(torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs]))
    assert found.tolist() == [True, True, False, False, False]


def test_per_sentence_scores_the_sentences_that_name_no_lesion_apart(two_lesion_report):
    items = two_lesion_report.assign(report=lambda t: t["report"].str.replace(
        "Opacity in the left upper lobe.", "Enlarged heart on the left."),
        sentence=lambda t: t["sentence"].replace("Opacity in the left upper lobe.", "Enlarged heart on the left."))
    table, summary = per_sentence(SideReader(), items, n_boot=50)
    assert summary["not_lesion"]["n"] == 1 and summary["not_lesion"]["on_own_share"] == 1.0
    assert summary["not_lesion"]["dice"] == pytest.approx(table["dice"].iloc[1])
    assert "not_lesion" not in per_sentence(SideReader(), two_lesion_report, n_boot=50)[1]
