"""Segmentation metrics and confidence intervals.

Conventions:
- Per-image Dice and IoU compare one predicted mask with its truth. When both are empty the image
  scores 1.0 (nothing to find, nothing found); when only one of them is empty it scores 0.0.
- Pooled (dataset-level) Dice sums true positives, false positives and false negatives over all
  pixels of all images before dividing, so large masks weigh more.
- Masks are bool or 0/1 tensors [N, 1, H, W]; probabilities are float [N, 1, H, W] in [0, 1].
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import Tensor


def _stats(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image (tp, fp, fn), each int64 [N]."""
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"pred and target must both have shape [N, 1, H, W], got "
                         f"{list(pred.shape)} and {list(target.shape)}")
    tp, fp, fn, _ = smp.metrics.get_stats(pred.long(), target.long(), mode="binary")
    return tp[:, 0], fp[:, 0], fn[:, 0]


def _ratio_or_one(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, 1.0 where the denominator is 0 (both masks empty)."""
    numerator, denominator = numerator.double(), denominator.double()
    ones = torch.ones_like(numerator)
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), ones).float()


def dice_per_image(pred: Tensor, target: Tensor) -> Tensor:
    """Dice 2TP / (2TP + FP + FN) of each image: bool/0-1 [N, 1, H, W] -> float [N]."""
    tp, fp, fn = _stats(pred, target)
    return _ratio_or_one(2 * tp, 2 * tp + fp + fn)


def follows_text(probs: Tensor, meant: Tensor, other: Tensor) -> Tensor:
    """bool [N]: whether each probability map [N, H, W] puts more mass on the lesion the text
    means (`meant` [N, H, W]) than on the other one (`other`): the probes' test of reading."""
    return (probs * meant).flatten(1).sum(1) > (probs * other).flatten(1).sum(1)


def dice_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two binary masks `[H, W]` (any dtype, nonzero = foreground), by `dice_per_image`'s
    convention (1.0 when both are empty)."""
    pred, target = np.asarray(pred) > 0, np.asarray(target) > 0
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and mask {target.shape} differ in shape")
    return float(dice_per_image(torch.from_numpy(pred)[None, None], torch.from_numpy(target)[None, None])[0])


def iou_per_image(pred: Tensor, target: Tensor) -> Tensor:
    """IoU TP / (TP + FP + FN) of each image: bool/0-1 [N, 1, H, W] -> float [N]."""
    tp, fp, fn = _stats(pred, target)
    return _ratio_or_one(tp, tp + fp + fn)


def pooled_dice(pred: Tensor, target: Tensor) -> float:
    """Dice over all pixels of all images (TP, FP, FN summed first)."""
    tp, fp, fn = (s.sum() for s in _stats(pred, target))
    return float(_ratio_or_one(2 * tp, 2 * tp + fp + fn))


def pointing_hits(prob: Tensor, target: Tensor) -> Tensor:
    """Pointing game: is each image's most probable pixel inside its truth mask?

    prob float [N, 1, H, W], target bool/0-1 [N, 1, H, W] -> bool [N] (False for an empty truth).
    """
    if prob.shape != target.shape:
        raise ValueError(f"prob and target shapes differ: {list(prob.shape)} and "
                         f"{list(target.shape)}")
    peak = prob.flatten(1).argmax(dim=1, keepdim=True)
    return target.flatten(1).gather(1, peak.to(target.device))[:, 0] > 0


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean of per-case `values` and its percentile-bootstrap (1 - alpha) confidence interval.

    Returns:
        (mean, low, high).
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty 1-d sequence, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(values.mean()), float(low), float(high)


def best_threshold(prob: Tensor, target: Tensor,
                   candidates: Sequence[float] | np.ndarray = np.linspace(0.1, 0.9, 17)) -> float:
    """The candidate threshold with the highest mean per-image Dice (the first on ties);
    choose it on validation data, never on the test split."""
    scores = [dice_per_image(prob >= t, target).mean().item() for t in candidates]
    return float(candidates[int(np.argmax(scores))])
