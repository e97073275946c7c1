from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from helpers.viz import charts, overlay, plots# noqa: E402
from helpers.viz.explorer import explore  # noqa: E402
from helpers.model.metrics import dice_score  # noqa: E402

H, W = 24, 32


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def gray(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8)


def box_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


# ---------------------------------------------------------------- exploration
def test_plot_counts_orders_known_keys_and_labels_bars():
    fig = charts.plot_counts({"masks": 5, "extra": 2, "images": 10, "problems": 0})
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["images", "masks", "problems", "extra"]
    assert [p.get_height() for p in ax.patches] == [10, 5, 0, 2]
    assert {"10", "5", "0", "2"} <= {t.get_text() for t in ax.texts}


def test_plot_counts_rejects_empty_summary():
    with pytest.raises(ValueError, match="empty"):
        charts.plot_counts({})


def test_plot_text_lengths_titles_share_over_limit():
    fig = charts.plot_text_lengths([5, 9, 40, 12], [10, 80, 50, 77], max_tokens=77)
    ax_words, ax_tokens = fig.axes
    assert "25.0% over 77" in ax_tokens.get_title()
    assert list(ax_tokens.lines[0].get_xdata()) == [77, 77]
    assert "median" in ax_words.get_title()


def test_plot_term_frequencies_counts_words_without_stopwords():
    texts = ["The effusion is large.", "No effusion. Small opacity", "Effusion and opacity, XXXX"]
    fig = charts.plot_term_frequencies(texts, top=2)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    widths = [p.get_width() for p in ax.patches]
    assert labels == ["opacity", "effusion"]  # barh draws the first bar at the bottom
    assert widths == [2, 3]
    fig = charts.plot_term_frequencies(texts, top=10, stopwords={"effusion"})
    words = {t.get_text() for t in fig.axes[0].get_yticklabels()}
    assert "effusion" not in words and "the" in words


def test_plot_mask_stats_counts_centroids_by_patient_side():
    centroids = np.array([[0.2, 0.1], [0.8, 0.9], [0.7, 0.85]])
    fig = charts.plot_mask_stats([0.1, 0.2, 0.05], centroids)
    ax_areas, ax_cells = fig.axes
    assert "n=3" in ax_areas.get_title()
    ticks = dict(zip(ax_cells.get_xticks(), (t.get_text() for t in ax_cells.get_xticklabels())))
    assert ticks[0.25] == "patient's right" and ticks[0.75] == "patient's left"
    cells = {(round(t.get_position()[0], 2), round(t.get_position()[1], 2)): t.get_text()
             for t in ax_cells.texts}
    assert cells[(0.25, 0.17)] == "1"  # upper, image-left = patient's right
    assert cells[(0.75, 0.83)] == "2"  # lower, patient's left
    assert cells[(0.75, 0.17)] == "0"
    assert sorted(cells.values()) == ["0", "0", "0", "0", "1", "2"]


@pytest.mark.parametrize("centroids", [np.array([[1.5, 0.2]]), np.zeros((2, 3))])
def test_plot_mask_stats_rejects_bad_centroids(centroids):
    with pytest.raises(ValueError, match="centroids"):
        charts.plot_mask_stats([0.1] * len(centroids), centroids)


def test_plot_case_grid_draws_contours_and_wrapped_text():
    long_text = "There is a small opacity in the right lower lobe, concerning for pneumonia."
    fig = plots.plot_case_grid([gray(0), gray(1), gray(2)], [box_mask(2, 10, 3, 9), None, box_mask(0, 5, 0, 5)],
                             [long_text, "clear", "left"], titles=["a", "b", "c"], ncols=2, wrap=20)
    assert len(fig.axes) == 3
    ax = fig.axes[0]
    assert ax.get_title() == "a"
    assert "\n" in ax.get_xlabel() and "pneumonia" in ax.get_xlabel()
    assert len(ax.collections) == 1 and len(fig.axes[1].collections) == 0


def test_plot_case_grid_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one of each"):
        plots.plot_case_grid([gray()], [], ["x"])


# ---------------------------------------------------------------- phase 1
def test_plot_history_groups_losses():
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.7, 0.5],
                            "val_loss": [1.1, 0.8, 0.6], "val_dice": [0.2, 0.4, 0.5],
                            "lr": [1e-3, 5e-4, 1e-4]})
    fig = plots.plot_history(history)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["train_loss / val_loss", "val_dice", "lr"]
    assert len(fig.axes[0].lines) == 2 and fig.axes[2].get_yscale() == "log"
    assert [ax.get_title() for ax in plots.plot_history(history, metrics=["val_dice"]).axes] == ["val_dice"]
    with pytest.raises(ValueError, match="epoch"):
        plots.plot_history(history.drop(columns="epoch"))
    with pytest.raises(ValueError, match="val_iou"):
        plots.plot_history(history, metrics=["val_iou"])


def test_plot_reconstructions_columns_and_value_range():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(3, 8, 8)).astype(np.float32)
    fig = plots.plot_reconstructions(inputs, inputs * 0, inputs * 0.5, n=2)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["input", "masked input", "reconstruction"]
    assert fig.axes[5].images[0].get_clim() == pytest.approx((inputs[1].min(), inputs[1].max()))
    fig = plots.plot_reconstructions(inputs[:, None], None, inputs[:, None], n=5)
    assert len(fig.axes) == 6 and fig.axes[1].get_title() == "reconstruction"
    with pytest.raises(ValueError, match="same shape"):
        plots.plot_reconstructions(inputs, None, inputs[:2])


# ---------------------------------------------------------------- phase 2
def test_plot_prediction_grid_titles_dice():
    mask = box_mask(0, 12, 0, 16)  # 192 px
    prob = np.zeros((H, W), np.float32)
    prob[0:12, 0:8] = 0.9  # 96 px, all inside the mask: Dice = 2*96 / (96 + 192)
    fig = plots.plot_prediction_grid([gray(), gray()], [mask, mask], [prob, prob], ["a", "b"], n=1)
    (ax,) = fig.axes
    assert ax.get_title() == f"Dice {2 * 96 / 288:.2f}"
    assert len(ax.collections) == 2  # predicted (red) and true (green) contours
    fig = plots.plot_prediction_grid([gray()], [mask], [prob], ["a"], dices=[0.834])
    assert fig.axes[0].get_title() == "Dice 0.83"


def test_plot_ablation_bars_errors_and_labels():
    table = pd.DataFrame({"variant": ["concat", "film"], "dice": [0.6, 0.7], "dice_lo": [0.5, 0.65],
                          "dice_hi": [0.68, 0.8], "dice_sd": [0.01, 0.02]})
    fig = plots.plot_ablation(table)
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.6, 0.7])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["concat", "film"]
    assert ax.get_xticklabels()[0].get_rotation() == 30
    segments = ax.collections[0].get_segments()  # error bars: one vertical segment per bar
    assert [tuple(s[:, 1]) for s in segments] == [pytest.approx((0.5, 0.68)), pytest.approx((0.65, 0.8))]
    assert "0.700\n± 0.020" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError, match="dice_hi"):
        plots.plot_ablation(table.drop(columns="dice_hi"))


def test_plot_counterfactual_two_panels_and_colorbar():
    prob_a, prob_b = np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
    prob_a[:, W // 2:], prob_b[:, : W // 2] = 1.0, 1.0
    fig = plots.plot_counterfactual(gray(), prob_a, prob_b, "left effusion", "right effusion")
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title() == "left effusion" and fig.axes[1].get_title() == "right effusion"
    assert "50.0%" in fig.axes[0].get_xlabel()


# ---------------------------------------------------------------- inference figures
def test_overlay_changes_only_high_probability_pixels():
    image = gray()
    prob = np.zeros((H, W), np.float32)
    prob[4:12, 6:20] = 0.9
    rgb = overlay.overlay(image, prob, threshold=0.5, alpha=0.4)
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    changed = (rgb != image[..., None]).any(-1)
    assert not changed[prob == 0].any()
    assert changed[prob > 0].all()
    assert (rgb[4, 10] == 255).all() and not (rgb[8, 10] == 255).all()  # outline, not the inside
    assert (overlay.overlay(image, prob, alpha=0.0)[8, 10] == image[8, 10]).all()


def test_overlay_rejects_bad_input():
    with pytest.raises(ValueError, match="same"):
        overlay.overlay(gray(), np.zeros((H, W + 1), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        overlay.overlay(gray().astype(np.float32), np.zeros((H, W), np.float32))


def test_dice_by_hand():
    assert dice_score(box_mask(0, 2, 0, 2), box_mask(0, 2, 0, 4)) == pytest.approx(2 * 4 / 12)
    assert dice_score(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_case_figure_title_has_dice():
    mask = box_mask(0, 12, 0, 16)
    prob = np.zeros((H, W), np.float32)
    prob[0:12, 8:24] = 0.8  # overlap 96 px of 192 + 192
    fig = plots.case_figure(gray(), prob, "effusion on the left", mask=mask, title="case7")
    assert len(fig.axes) == 5  # 4 panels + colour bar
    assert fig.get_suptitle() == "case7 | Dice 0.50"
    assert "effusion on the left" in fig._supxlabel.get_text()
    fig = plots.case_figure(gray(), prob, "text", threshold=0.9)
    assert fig.get_suptitle() == ""
    assert "no mask" in [t.get_text() for t in fig.axes[1].texts]
    fig = plots.case_figure(gray(), prob, "No pneumothorax. The lungs are clear.")
    assert fig.get_suptitle() == "no abnormal finding described"


def test_save_overlay_png_writes_image_size(tmp_path):
    path = overlay.save_overlay_png(tmp_path / "sub" / "o.png", gray(), np.ones((H, W), np.float32))
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (W, H) and png.mode == "RGB"


# ---------------------------------------------------------------- explorer
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


def test_save_figure_writes_png(tmp_path):
    fig = charts.plot_counts({"images": 3, "masks": 1})
    path = tmp_path / "a" / "counts.png"
    plots.save_figure(fig, path)
    assert path.exists() and Image.open(path).format == "PNG"
    plt.close(fig)


def test_explorer_shows_which_sentences_the_model_reads():
    from helpers.viz.explorer import sentences_html
    from helpers.text.sentences import select_sentences

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
