"""The charts of the data (helpers/viz/charts.py)."""
from __future__ import annotations

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers.viz import charts  # noqa: E402


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
