"""Static figures (helpers/viz/plots.py)."""
from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers.model.metrics import dice_score  # noqa: E402
from helpers.viz import charts, plots  # noqa: E402
from tests.viz import H, W, box_mask, gray


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


def test_save_figure_writes_png(tmp_path):
    fig = charts.plot_counts({"images": 3, "masks": 1})
    path = tmp_path / "a" / "counts.png"
    plots.save_figure(fig, path)
    assert path.exists() and Image.open(path).format == "PNG"
    plt.close(fig)
