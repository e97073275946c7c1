"""A report read sentence by sentence, coloured (helpers/viz/report_view.py)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from helpers.data.io import load_gray
from helpers.viz.report_view import color_overlay, report_figure, report_html, sentence_color
from tests import REPORT


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


def test_report_html_and_figure_quote_each_sentence(reading_segmenter, catalog):
    image = load_gray(catalog.cases["image_path"].iloc[0])
    grounding = reading_segmenter.ground_report(image, REPORT)
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
    normal = report_figure(image, reading_segmenter.ground_report(image, "No pneumothorax."))
    assert "no abnormal finding described" in [t.get_text() for t in normal.axes[1].get_legend().get_texts()]
    plt.close(normal)
