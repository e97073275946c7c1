"""Decoding images and masks into uint8 arrays, with errors that name the file.

Every module that reads pixels goes through `load_gray` / `gray_image` (images) and `load_mask`
(masks), so training, evaluation and inference see the same conversion.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..core.layout import DatasetError


def _size_tuple(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    return (size, size) if isinstance(size, int) else size


def open_image(path: Path) -> Image.Image:
    """Opens and fully decodes an image; DatasetError naming the file when it cannot."""
    try:
        with Image.open(path) as img:  # leaving closes the file only; the decoded pixels stay
            img.load()
        return img
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: not found") from err
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DatasetError(f"{path}: cannot decode the image ({err}); re-download or remove it") from err

def gray_image(img: Image.Image, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """A PIL image as uint8 [H, W] grayscale.

    8-bit images are kept; 16/32-bit and float images are stretched from their own min..max to
    0..255; RGB(A) and palette images are converted to luminance. `size` (w, h), or an int for a
    square, resizes bilinearly (antialiased when shrinking).
    """
    if img.mode in ("I;16", "I;16L", "I;16B", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        img = Image.fromarray(scaled.round().astype(np.uint8))
    elif img.mode != "L":
        img = img.convert("L")
    size = _size_tuple(size)
    if size is not None and img.size != size:
        img = img.resize(size, Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).copy()


def load_gray(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Reads an image as uint8 [H, W] grayscale (see `gray_image`); a file that cannot be decoded
    raises DatasetError naming it."""
    return gray_image(open_image(Path(path)), size)


def load_mask(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Reads a mask as uint8 [H, W] in {0, 1}: a pixel is 1 where any colour channel is > 0 (so 0/1,
    0/255 and coloured masks all work; when all colours are black, the opaque pixels of a partly
    transparent mask). `size` (w, h) or int resizes with nearest neighbour."""
    img = open_image(Path(path))
    if img.mode in ("1", "L", "I;16", "I;16L", "I;16B", "I", "F"):
        fg = np.asarray(img) > 0
    else:
        rgba = np.asarray(img.convert("RGBA"))
        fg = rgba[..., :3].max(axis=-1) > 0
        alpha = rgba[..., 3]
        if not fg.any() and (alpha == 0).any():  # black strokes on a transparent background
            fg = alpha > 0
    mask = fg.astype(np.uint8)
    size = _size_tuple(size)
    if size is not None and mask.shape[::-1] != size:
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    return mask


def load_masks(mask_paths: Sequence[str], size: int) -> np.ndarray:
    """Masks resized with nearest neighbour to `size` x `size`: uint8 [N, S, S] in {0, 1}."""
    if not mask_paths:
        return np.zeros((0, size, size), np.uint8)
    return np.stack([load_mask(p, size) for p in mask_paths])


def fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A binary uint8 mask at `shape` (h, w), resized with nearest neighbour when it differs
    (hand-made masks may have another resolution than their image)."""
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    if mask.shape != tuple(shape):
        mask = np.asarray(Image.fromarray(mask).resize(tuple(shape)[::-1], Image.NEAREST))
    return mask


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W] in 0..255 -> float32 in [-1, 1], the model's input scale."""
    return images.float().div(127.5).sub(1.0)
