"""Where a sentence points on a frontal image, the connected parts of a mask, and the mask a
described finding gets when nothing passes the threshold.

Places are in the image's frame, normalised to [0, 1] (x to the right, y down); by the
radiological convention the patient's right is the image's left. The masks' vocabulary
(`vocabulary`) and inference (`Segmenter.ground_report`) use them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from .places import levels_named, names_side

# The heart's place on a frontal image: central, low, bulging to the image's right (patient's left).
HEART_BOX = (0.4, 0.64, 0.5, 0.85)  # x0, x1, y0, y1
_HEART = re.compile(r"\b(cardiomegal\w*|heart|cardiac)\b", re.IGNORECASE)
# Generous bands of the lungs' levels (they overlap: a lesion near a border belongs to both).
LEVEL_BANDS = {"upper": (0.0, 0.5), "middle": (0.3, 0.7), "lower": (0.45, 1.0)}


@dataclass(frozen=True)
class Place:
    """Where a sentence's words point: the heart (`HEART_BOX`), and sides (the patient's "right" /
    "left") and levels ("upper" / "middle" / "lower") of the lungs, an empty set meaning any."""

    heart: bool = False
    sides: frozenset[str] = frozenset()
    levels: frozenset[str] = frozenset()

    def contains(self, x: np.ndarray | float, y: np.ndarray | float, strict: bool = True) -> np.ndarray:
        """bool, shaped as `x` and `y` (normalised image coordinates). `strict`: the lungs' places
        leave out `HEART_BOX` (a part there is the heart's, when the masks may draw it)."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        x0, x1, y0, y1 = HEART_BOX
        in_heart = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        if self.heart and not (self.sides or self.levels):
            return in_heart
        lung = ~in_heart if strict else np.ones_like(in_heart)
        if self.sides and self.sides != {"right", "left"}:  # the patient's right: the image's left
            lung &= (x < 0.5) if "right" in self.sides else (x >= 0.5)
        if self.levels:
            lung &= np.any([(y >= LEVEL_BANDS[lv][0]) & (y <= LEVEL_BANDS[lv][1])
                            for lv in self.levels], axis=0)
        return lung | in_heart if self.heart else lung

    def region(self, shape: tuple[int, int], strict: bool = True) -> np.ndarray:
        """bool [H, W]: the pixels of an image of `shape` that the place covers."""
        y, x = np.mgrid[0:shape[0], 0:shape[1]]
        return self.contains((x + 0.5) / shape[1], (y + 0.5) / shape[0], strict)


def sentence_place(sentence: str) -> Place | None:
    """Where `sentence` points: the heart ("cardiomegaly", "heart", "cardiac") and the side and
    level of the lungs it names; None when it names no place."""
    side, levels = names_side(sentence), levels_named(sentence)
    heart = bool(_HEART.search(sentence))
    if side is None and not levels and not heart:
        return None
    sides = frozenset({"right", "left"} if side == "both" else {side} if side else set())
    return Place(heart=heart, sides=sides, levels=frozenset(levels))


def components(mask: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
    """The connected parts of a mask [H, W] (8-connected): (bool [H, W], centroid x, centroid y),
    the centroid normalised to [0, 1]."""
    labels, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3)))
    h, w = labels.shape
    out = []
    for k in range(1, n + 1):
        part = labels == k
        ys, xs = np.nonzero(part)
        out.append((part, (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h))
    return out


NEAR_PEAK = 0.5  # of the peak probability: what the low-confidence mask keeps


def near_peak(prob: np.ndarray, places: Sequence[Place | None]) -> np.ndarray | None:
    """The low-confidence mask of a described finding that left nothing above the threshold: the
    pixels connected to the peak of `prob` [H, W] at >= `NEAR_PEAK` x the peak probability, when
    the peak lies in one of `places` (None: anywhere; the text names no place). None when it lies
    elsewhere (a swapped side: nothing there), when `places` is empty or `prob` is all zero."""
    prob = np.asarray(prob, dtype=np.float32)
    peak = float(prob.max()) if prob.size else 0.0
    if peak <= 0 or not places:
        return None
    y, x = np.unravel_index(int(np.argmax(prob)), prob.shape)
    h, w = prob.shape
    if not any(p is None or p.contains((x + 0.5) / w, (y + 0.5) / h, strict=False) for p in places):
        return None
    labels, _ = ndimage.label(prob >= NEAR_PEAK * peak, structure=np.ones((3, 3)))
    return labels == labels[y, x]
