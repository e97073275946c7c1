"""Reading pixels (helpers/data/io.py): gray images and binary masks from any PNG."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers.core.layout import DatasetError
from helpers.data import io
from tests.data import H, W, box


def test_load_gray_modes_and_resize(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(io.load_gray(tmp_path / "g.png"), gray)

    deep = np.linspace(1000, 5000, H * W).reshape(H, W).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as img:
        assert img.mode.startswith("I")
    out = io.load_gray(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert (np.diff(out.ravel().astype(int)) >= 0).all()  # order kept

    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = io.load_gray(tmp_path / "c.png", size=16)
    assert out.shape == (16, 16) and abs(int(out[0, 0]) - round(0.587 * 200)) <= 1

    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    assert io.load_gray(tmp_path / "p.png", size=(20, 10)).shape == (10, 20)


def test_load_mask_alpha_only_counts_on_a_transparent_background(tmp_path):
    strokes = np.zeros((H, W, 4), np.uint8)
    strokes[..., 3] = box(255)  # black, opaque where the lesion is
    Image.fromarray(strokes).save(tmp_path / "strokes.png")
    np.testing.assert_array_equal(io.load_mask(tmp_path / "strokes.png"), box(1))
    opaque_black = np.zeros((H, W, 4), np.uint8)
    opaque_black[..., 3] = 255
    Image.fromarray(opaque_black).save(tmp_path / "empty.png")
    assert not io.load_mask(tmp_path / "empty.png").any()


def test_load_gray_and_mask_name_bad_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="bad.png"):
        io.load_gray(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match="bad.png"):
        io.load_mask(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match="not found"):
        io.load_gray(tmp_path / "missing.png")
