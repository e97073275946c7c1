"""A whole report read sentence by sentence: `Segmenter.ground_report`, the demo's per-sentence test
reports, the per-sentence scores, the coloured view, the explorer's per-sentence mode and the
command line."""
from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image

from helpers.__main__ import main
from helpers.evaluation.sentence_scores import cluster_ci, per_sentence
from helpers.inference.segmenter import EMPTY_AREA, Segmenter
from helpers.data.io import load_gray, load_mask
from helpers.text.reader import ReportReader
from helpers.text.regions import sentence_place
from helpers.viz.report_view import color_overlay, report_figure, report_html, sentence_color
from helpers.text.sentences import split_sentences, sentence_status
from helpers.data.demo.generate import report_items
from helpers.data.demo.reports import NORMALS

REPORT = ("Heart size is normal. Nodule in the right upper lobe. No left pleural effusion. "
          "Patchy opacity at the left lung base. The lungs are clear.")
POSITIVES = ["Nodule in the right upper lobe.", "Patchy opacity at the left lung base."]


@pytest.fixture(scope="module")
def segmenter(checkpoint, text_dir):
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu", text_cache_dir=text_dir)
    with torch.no_grad():  # as after a longer training: the text moves the mask
        for module in seg.model.fusion.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.weight.normal_(std=0.2)
    return seg


# ---------------------------------------------------------------------------------- ground_report
def test_ground_report_reads_each_positive_sentence_alone(segmenter, catalog):
    image = load_gray(catalog.cases["image_path"].iloc[0])
    grounding = segmenter.ground_report(image, REPORT)
    assert [m.text for m in grounding.sentences] == POSITIVES
    assert grounding.dropped == [("Heart size is normal.", "normal"), ("No left pleural effusion.", "negated"),
                                 ("The lungs are clear.", "normal")]
    assert [text for text, _ in grounding.labels] == split_sentences(REPORT)
    for m in grounding.sentences:
        assert m.prob.shape == image.shape and m.prob.dtype == np.float32
        np.testing.assert_allclose(m.prob, segmenter.predict(image, m.text), atol=1e-5)
        inside = m.prob >= segmenter.threshold
        assert m.area == pytest.approx(inside.mean()) and m.confidence == pytest.approx(m.prob.max())
        assert m.located == (m.area >= EMPTY_AREA)
    a, b = (m.prob for m in grounding.sentences)
    assert np.abs(a - b).max() > 1e-3  # two sentences, two masks
    rows = grounding.table()
    assert [r["index"] for r in rows] == [None, 1, None, 2, None]
    assert rows[1]["text"] == POSITIVES[0] and rows[2]["label"] == "negated"
    json.dumps(rows)  # plain values


def test_ground_report_encodes_the_image_once(segmenter, catalog):
    calls = []
    hook = segmenter.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        report = " ".join(f"Nodule number {k} in the right upper lobe." for k in range(5))
        grounding = segmenter.ground_report(catalog.cases["image_path"].iloc[0], report)
    finally:
        hook.remove()
    assert len(grounding.sentences) == 5 and len(calls) == 1


def test_not_located_normal_and_bad_reports(segmenter, catalog):
    image = catalog.cases["image_path"].iloc[0]
    high = segmenter.ground_report(image, REPORT, threshold=1.5)  # no pixel reaches it
    for m, row in zip(high.sentences, [r for r in high.table() if r["index"]]):
        # a lung lesion is drawn (the fallback vocabulary): the pixels near the peak when the peak
        # lies on the sentence's side, else nothing (test_vocabulary.py tests the rule itself)
        y, x = (np.array(np.unravel_index(np.argmax(m.prob), m.prob.shape)) + 0.5) / m.prob.shape
        assert m.drawn and m.low_confidence == bool(sentence_place(m.text).contains(x, y, strict=False))
        assert m.located == m.low_confidence == row["located"] == row["low_confidence"]
        assert np.isnan(m.mean_in_mask) != m.low_confidence and (row["mean_in_mask"] is None) != m.low_confidence
    again = high.at_threshold(segmenter.threshold)
    assert again.sentences[0].area == pytest.approx(segmenter.ground_report(image, REPORT).sentences[0].area)
    normal = segmenter.ground_report(image, "Heart size is normal. No pneumothorax.")
    assert normal.sentences == [] and not normal.describes_finding
    assert [label for _, label in normal.dropped] == ["normal", "negated"]
    with pytest.raises(ValueError, match="no sentence"):
        segmenter.ground_report(image, "  ")
    with pytest.raises(ValueError, match="uint8 image"):
        segmenter.predict_sentences(np.zeros((8, 8), np.uint8), POSITIVES)


# ---------------------------------------------------------------------------------- test reports
def test_report_items_describe_every_lesion_of_an_image(demo_root, catalog):
    denies = {text: set(kinds) for _, kinds, text in NORMALS}
    normals = set(denies)
    items = report_items(demo_root, catalog.cases)
    assert set(items["n_lesions"]) == {3}  # forced setting: the target and two undescribed lesions
    assert items["report_id"].nunique() == len(catalog.cases) and len(items) == 3 * len(catalog.cases)
    for _, rows in items.groupby("report_id"):
        sentences = split_sentences(rows["report"].iloc[0])
        assert set(rows["sentence"]) <= set(sentences)
        others = [s for s in sentences if s not in set(rows["sentence"])]
        assert 1 <= len(others) <= 2 and set(others) <= normals
        assert not any(kinds & set(rows["kind"]) for kinds in map(denies.get, others))  # none denies a lesion
        assert all(sentence_status(s) == "positive" for s in rows["sentence"])
        assert rows["mask_path"].nunique() == 3 and all((load_mask(p) > 0).any() for p in rows["mask_path"])
    assert items.equals(report_items(demo_root, catalog.cases))  # seeded
    orders = [report_items(demo_root, catalog.cases, seed=s)["report"].tolist() for s in (0, 1)]
    assert orders[0] != orders[1]


# ---------------------------------------------------------------------------------- scores
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


def test_per_sentence_on_the_demo_reports(segmenter, demo_root, catalog):
    items = report_items(demo_root, catalog.cases.head(3))
    table, summary = per_sentence(segmenter, items, n_boot=50)
    assert len(table) == len(items) == 9 and summary["n_reports"] == 3 and table["kept"].all()
    for name in ("dice", "on_own_share"):
        assert 0 <= summary[f"{name}_lo"] <= summary[name] <= summary[f"{name}_hi"] <= 1


def test_other_findings_asks_each_sentence_that_names_no_lesion_alone(segmenter, catalog):
    import copy

    from helpers.evaluation.sentence_scores import other_findings

    cases = catalog.cases[catalog.cases["mask_path"].notna()].head(4).copy()
    cases["text"] = [f"Mild cardiomegaly. {t} Tortuous aorta." for t in cases["text"]]
    table, summary = other_findings(segmenter, cases)
    assert {"Mild cardiomegaly.", "Tortuous aorta."} <= set(table["text"])
    assert summary["n"] == len(table) == 4 * summary["n_sentences"]  # every sentence on every image
    kinds = ("opacit", "mass", "nodul", "effusion", "consolidation", "atelectasis")  # the demo's lesions
    assert not any(kind in t.lower() for t in table["text"] for kind in kinds)  # never asked
    for threshold, empty in ((0.0, 0.0), (1.01, 1.0)):  # every pixel marked, none marked
        seg = copy.copy(segmenter)
        seg.threshold = threshold
        assert other_findings(seg, cases)[1]["empty_share"] == empty


# ---------------------------------------------------------------------------------- the view
def _rgb(index: int) -> np.ndarray:
    return np.array(to_rgb(sentence_color(index))) * 255


def test_color_overlay_fills_and_outlines_each_mask_in_its_colour():
    image = np.full((20, 20), 100, np.uint8)
    a, b = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    a[2:8, 2:8], b[10:16, 10:16] = True, True
    rgb = color_overlay(image, [a, b], alpha=0.5)
    np.testing.assert_allclose(rgb[2, 2], _rgb(0), atol=1)  # outline: the colour itself
    np.testing.assert_allclose(rgb[4, 4], 100 * 0.5 + _rgb(0) * 0.5, atol=1)  # inside: blended
    np.testing.assert_allclose(rgb[12, 12], 100 * 0.5 + _rgb(1) * 0.5, atol=1)
    assert (rgb[0, 0] == 100).all()
    only = color_overlay(image, [a, b], alpha=0.5, selected=1)
    assert (only[4, 4] == 100).all() and (only[12, 12] == rgb[12, 12]).all()
    with pytest.raises(ValueError, match="selected"):
        color_overlay(image, [a, b], selected=2)


def test_report_html_and_figure_quote_each_sentence(segmenter, catalog):
    image = load_gray(catalog.cases["image_path"].iloc[0])
    grounding = segmenter.ground_report(image, REPORT)
    text = report_html(grounding)
    r, g, b = (int(255 * c) for c in to_rgb(sentence_color(1)))
    assert f"rgb({r}, {g}, {b})" in text and "<b>2</b> Patchy opacity at the left lung base." in text
    assert "<s style=\"color: gray\">No left pleural effusion.</s> <small>(negated)</small>" in text
    assert text.index("Heart size") < text.index("Nodule") < text.index("No left")  # report order
    assert "not located" in report_html(grounding.at_threshold(1.5))
    truths = [np.zeros_like(image), None]
    fig = report_figure(image, grounding, truths=truths)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels[0].startswith("1. Nodule in the right upper lobe.") and labels[1].startswith("2. Patchy")
    assert any(label.startswith("dropped (negated): No left pleural effusion.") for label in labels)
    plt.close(fig)
    with pytest.raises(ValueError, match="true masks"):
        report_figure(image, grounding, truths=truths[:1])
    normal = report_figure(image, segmenter.ground_report(image, "No pneumothorax."))
    assert "no abnormal finding described" in [t.get_text() for t in normal.axes[1].get_legend().get_texts()]
    plt.close(normal)


def test_explorer_per_sentence_mode_and_a_click_shows_one_mask(segmenter, cases):
    from helpers.viz.explorer import explore

    table = cases.assign(text=REPORT).head(2)
    box = explore(table, segmenter)
    assert box.sentence_buttons.children == ()
    box.controls["per_sentence"].value = True
    buttons = box.sentence_buttons.children
    assert [b.description for b in buttons] == ["all", "1", "2"]
    assert buttons[2].style.button_color == sentence_color(1) and buttons[1].tooltip == POSITIVES[0]
    assert "<s style" in box.given.value and "<b>1</b> Nodule" in box.given.value
    image = load_gray(table["image_path"].iloc[0])
    grounding = segmenter.ground_report(image, REPORT)
    masks = [m.prob >= segmenter.threshold for m in grounding.sentences]
    shown = box.last_figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown, color_overlay(image, masks, 0.4))
    buttons[2].click()  # the second sentence alone
    shown = box.last_figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown, color_overlay(image, masks, 0.4, selected=1))
    assert "font-weight: bold" in box.given.value
    box.controls["per_sentence"].value = False
    assert box.sentence_buttons.children == () and "model reads" in box.given.value


# ---------------------------------------------------------------------------------- command line
def test_cli_predict_per_sentence_writes_overlay_masks_and_json(checkpoint, catalog, tmp_path, capsys):
    image = catalog.cases["image_path"].iloc[0]
    out = tmp_path / "o" / "report.png"
    assert main(["predict", "--checkpoint", str(checkpoint), "--image", image, "--text", REPORT,
                 "--out", str(out), "--per-sentence", "--json"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # stdout holds the JSON alone
    rows = [r for r in payload["sentences"] if r["index"]]
    assert [r["text"] for r in rows] == POSITIVES and payload["describes_finding"]
    size = Image.open(image).size
    for row in rows:
        assert Image.open(row["mask_file"]).size == size
        assert set(np.unique(load_mask(row["mask_file"]))) <= {0, 1}
    assert out.is_file() and "dropped: negated" in captured.err
    table = tmp_path / "t.json"
    assert main(["predict", "--checkpoint", str(checkpoint), "--image", image, "--text", REPORT,
                 "--out", str(out), "--per-sentence", "--json", str(table)]) == 0
    assert json.loads(table.read_text())["sentences"] == payload["sentences"]
    assert "1. Nodule in the right upper lobe." in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(checkpoint), "--image", image, "--text", REPORT,
                 "--out", str(out), "--json"]) == 1
    assert "add --per-sentence" in capsys.readouterr().err


def test_cli_evaluate_per_sentence(checkpoint, demo_root, tmp_path, capsys):
    out = tmp_path / "eval" / "test.csv"
    assert main(["evaluate", "--data", str(demo_root), "--mode", "smoke", "--checkpoint", str(checkpoint),
                 "--split", "train", "--out-dir", str(tmp_path / "run"), "--per-sentence", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"): printed.rindex("}") + 1])["per_sentence"]
    table = pd.read_csv(out.with_suffix(".sentences.csv"))
    assert summary["n_sentences"] == len(table) > 0 and set(table["n_lesions"]) == {3}
    assert summary["on_own_share"] == pytest.approx(table["on_own"].mean())
    assert summary["on_own_share_lo"] <= summary["on_own_share"] <= summary["on_own_share_hi"]
