"""The interactive explorer (helpers/viz/explorer.py)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image

from helpers.data.io import load_gray
from helpers.viz.explorer import explore  # noqa: E402
from helpers.viz.report_view import color_overlay, sentence_color
from tests import POSITIVES, REPORT
from tests.viz import H, W, box_mask, gray


class FakeSegmenter:
    threshold = 0.4

    def __init__(self):
        self.calls: list[str] = []

    def predict(self, image: np.ndarray, text: str) -> np.ndarray:
        self.calls.append(text)
        prob = np.zeros(image.shape, np.float32)
        if "left" in text:
            prob[:, image.shape[1] // 2:] = 1.0  # the patient's left is on the image's right
        return prob


class FakePlot:
    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, image, prob, text, **kwargs) -> Figure:
        self.calls.append({"image": image, "prob": prob, "text": text, **kwargs})
        fig, _ = plt.subplots(figsize=(2, 2))
        return fig


def load_png(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


@pytest.fixture
def explorer(tmp_path):
    paths = {}
    for i in range(3):
        paths[i] = tmp_path / f"img{i}.png"
        Image.fromarray(gray(i)).save(paths[i])
    Image.fromarray(box_mask(0, 12, 0, 16)[::2, ::2] * 255).save(tmp_path / "mask0.png")  # half size
    cases = pd.DataFrame({
        "case_id": ["c0", "c1", "c2"],
        "image_path": [str(paths[i]) for i in range(3)],
        "mask_path": [str(tmp_path / "mask0.png"), None, np.nan],
        "text": ["effusion on the left", "clear lungs", None],
        "split": ["train", "test", "test"],
    })
    segmenter, plot = FakeSegmenter(), FakePlot()
    box = explore(cases, segmenter, load_image=load_png, load_mask=load_png, plot_fn=plot,
                      save_dir=tmp_path / "saved")
    return box, segmenter, plot


def test_explorer_per_sentence_mode_and_a_click_shows_one_mask(reading_segmenter, cases):
    from helpers.viz.explorer import explore

    table = cases.assign(text=REPORT).head(2)
    box = explore(table, reading_segmenter)
    assert box.sentence_buttons.children == ()
    box.controls["per_sentence"].value = True
    buttons = box.sentence_buttons.children
    assert [b.description for b in buttons] == ["all", "1", "2"]
    assert buttons[2].style.button_color == sentence_color(1) and buttons[1].tooltip == POSITIVES[0]
    assert "<s style" in box.given.value and "<b>1</b> Nodule" in box.given.value
    image = load_gray(table["image_path"].iloc[0])
    grounding = reading_segmenter.ground_report(image, REPORT)
    masks = [m.prob >= reading_segmenter.threshold for m in grounding.sentences]
    shown = box.last_figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown, color_overlay(image, masks, 0.4))
    buttons[2].click()  # the second sentence alone
    shown = box.last_figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown, color_overlay(image, masks, 0.4, selected=1))
    assert "font-weight: bold" in box.given.value
    box.controls["per_sentence"].value = False
    assert box.sentence_buttons.children == () and "model reads" in box.given.value


def test_explore_builds_and_plots_first_case(explorer):
    box, segmenter, plot = explorer
    assert len(plot.calls) == 1 and segmenter.calls == ["effusion on the left"]
    call = plot.calls[0]
    assert call["title"] == "c0" and call["threshold"] == pytest.approx(0.4) and call["alpha"] == 0.4
    assert call["mask"].shape == (H, W) and call["mask"].sum() == 12 * 16  # resized to the image
    assert call["prob"][:, W // 2:].all() and not call["prob"][:, : W // 2].any()
    assert box.controls["text"].value == "effusion on the left"
    assert box.controls["prev"].disabled and not box.controls["next"].disabled
    assert isinstance(box.last_figure, Figure)


def test_explore_text_edit_reruns_model_threshold_does_not(explorer):
    box, segmenter, plot = explorer
    box.controls["text"].value = "new text"
    assert segmenter.calls[-1] == "new text" and plot.calls[-1]["text"] == "new text"
    assert not plot.calls[-1]["prob"].any()
    n_predict = len(segmenter.calls)
    box.controls["threshold"].value = 0.7
    box.controls["alpha"].value = 0.8
    assert plot.calls[-1]["threshold"] == pytest.approx(0.7) and plot.calls[-1]["alpha"] == 0.8
    assert len(segmenter.calls) == n_predict
    box.controls["reset"].click()
    assert plot.calls[-1]["text"] == "effusion on the left"
    assert len(segmenter.calls) == n_predict  # cached per (case_id, text)


def test_explore_next_prev_and_split(explorer):
    box, segmenter, plot = explorer
    box.controls["next"].click()
    assert box.controls["case"].value == "c1" and len(plot.calls) == 2  # one plot per move
    assert plot.calls[-1]["title"] == "c1" and plot.calls[-1]["mask"] is None
    assert box.controls["text"].value == "clear lungs"
    box.controls["next"].click()
    box.controls["next"].click()  # already at the end: stays
    assert box.controls["case"].value == "c2" and plot.calls[-1]["text"] == ""
    assert box.controls["next"].disabled
    box.controls["prev"].click()
    assert box.controls["case"].value == "c1"
    box.controls["split"].value = "test"
    assert list(box.controls["case"].options) == ["c1", "c2"]
    assert plot.calls[-1]["title"] == "c1"
    box.controls["case"].value = "c2"
    assert plot.calls[-1]["title"] == "c2"


def test_explore_save_writes_png(explorer, tmp_path):
    box, _, _ = explorer
    box.controls["save"].click()
    assert box.last_saved == tmp_path / "saved" / "c0.png"
    with Image.open(box.last_saved) as png:
        assert png.format == "PNG"


def test_explore_rejects_missing_columns():
    cases = pd.DataFrame({"case_id": ["a"], "image_path": ["a.png"], "text": ["x"]})
    with pytest.raises(ValueError, match="mask_path"):
        explore(cases, FakeSegmenter(), load_image=load_png, load_mask=load_png)


def test_explorer_shows_which_sentences_the_model_reads():
    from helpers.text.sentences import select_sentences
    from helpers.viz.explorer import sentences_html

    class Reads:
        def sentences(self, text):
            return select_sentences(text)

    shown = sentences_html(Reads(), "No left effusion. Right basilar <opacity>.")
    assert "Right basilar &lt;opacity&gt;." in shown and "<s>No left effusion.</s>" in shown
    assert "whole text" in sentences_html(Reads(), "Heart size is normal.")
    assert "no abnormal finding described" in sentences_html(Reads(), "Heart size is normal.")
    assert "no abnormal finding" not in shown
    assert sentences_html(FakeSegmenter(), "anything") == ""


def test_sentence_table_lists_kept_and_dropped_sentences():
    from helpers.viz.explorer import sentence_table

    table = sentence_table(["No left effusion. Right basilar opacity.", "Heart size is normal."])
    assert table.to_dict("list") == {"kept": ["Right basilar opacity.", "Heart size is normal."],
                                     "dropped": ["No left effusion.", ""]}
