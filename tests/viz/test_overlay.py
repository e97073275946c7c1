"""Overlays (helpers/viz/overlay.py)."""
from __future__ import annotations

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers.viz import overlay  # noqa: E402
from tests.viz import H, W, gray


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


def test_save_overlay_png_writes_image_size(tmp_path):
    path = overlay.save_overlay_png(tmp_path / "sub" / "o.png", gray(), np.ones((H, W), np.float32))
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (W, H) and png.mode == "RGB"
