"""Heat-map overlays as RGB arrays and PNG files, without pyplot (the command line writes them).

Images are uint8 grayscale `[H, W]`, probability maps float32 `[H, W]` in [0, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Colormap
from PIL import Image

OUTLINE_RGB = (255, 255, 255)
HEAT_CMAP = "jet"


def check_same_shape(image: np.ndarray, other: np.ndarray, name: str) -> None:
    if np.shape(image) != np.shape(other):
        raise ValueError(f"image {np.shape(image)} and {name} {np.shape(other)} must have the same "
                         f"[H, W] shape; resize the {name} to the image first")


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask `[H, W]`: in the mask with a 4-neighbour outside it."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~interior


def overlay(image: np.ndarray, prob: np.ndarray, threshold: float = 0.5, alpha: float = 0.4,
            cmap: str | Colormap = HEAT_CMAP) -> np.ndarray:
    """Blend a probability heat map over a grayscale image.

    Args:
        image: uint8 `[H, W]`.
        prob: float `[H, W]` in [0, 1].
        threshold: the mask threshold; the heat map is blended where `prob >= threshold / 2` and
            the mask `prob >= threshold` is outlined in white.
        alpha: opacity of the heat map.

    Returns:
        uint8 `[H, W, 3]` RGB; equal to the gray image wherever `prob < threshold / 2`.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 grayscale [H, W], got {image.dtype} {image.shape}")
    check_same_shape(image, prob, "probability map")
    prob = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
    gray = np.repeat(image[..., None].astype(np.float32), 3, axis=-1)
    heat = colormaps.get_cmap(cmap)(prob)[..., :3].astype(np.float32) * 255.0
    weight = (alpha * (prob >= threshold / 2))[..., None]
    rgb = np.rint(gray * (1 - weight) + heat * weight).astype(np.uint8)
    rgb[outline(prob >= threshold)] = OUTLINE_RGB
    return rgb



def save_overlay_png(path: str | Path, image: np.ndarray, prob: np.ndarray, threshold: float = 0.5,
                     alpha: float = 0.4) -> Path:
    """Write `overlay(image, prob, ...)` as an RGB PNG at the image's resolution; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, prob, threshold, alpha), mode="RGB").save(path, format="PNG")
    return path

