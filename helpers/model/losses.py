"""Losses: Dice + class-weighted BCE for Phase 2, reconstruction objectives for Phase 1."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import Tensor, nn


HIDE_MODES = ("noise", "zero")
UNDESCRIBED = 2  # target value of a lesion the text does not describe (see DiceBCELoss)


class DiceBCELoss(nn.Module):
    """`dice_weight * DiceLoss + bce_weight * BCEWithLogits(pos_weight)` on mask logits.

    smp's binary Dice pools all pixels of the batch (images without any positive pixel add
    nothing to it). Computed in float32 even under autocast: a half-precision Dice is a known
    cause of a validation Dice near 0.
    """

    def __init__(self, pos_weight: float = 1.0, dice_weight: float = 1.0,
                 bce_weight: float = 1.0):
        super().__init__()
        self.dice = DiceLoss(mode="binary", from_logits=True)
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]), persistent=False)
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """logits float [B, 1, H, W], target [B, 1, H, W] -> scalar float32 loss.

        target: 1 where the described finding lies, 0 elsewhere, and `UNDESCRIBED` (2) on a lesion
        that the text does not describe: a negative pixel weighted like a positive one
        (`pos_weight`), so that marking a lesion the words do not name costs as much as missing
        the one they name."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, target = logits.float(), target.float()
            pos_weight = self.pos_weight.to(logits.device)
            weight = torch.where(target == UNDESCRIBED, pos_weight, torch.ones_like(target))
            target = (target == 1).float()
            bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight,
                                                     pos_weight=pos_weight)
            return self.dice_weight * self.dice(logits, target) + self.bce_weight * bce


def pos_weight_from_masks(masks: np.ndarray | Tensor, max_weight: float = 50.0) -> float:
    """BCE weight of positive pixels: negatives / positives over all pixels of `masks` (any
    shape; non-zero = positive), clipped to [1, max_weight]."""
    masks = torch.as_tensor(masks)
    positives = int(torch.count_nonzero(masks))
    negatives = masks.numel() - positives
    ratio = negatives / positives if positives else math.inf
    return float(min(max(ratio, 1.0), max_weight))


def scaled_patch(patch_size: int, image_size: int) -> int:
    """Side of a hidden patch in pixels: `patch_size` is given at 256 px and scales with the image."""
    return max(2, round(patch_size * image_size / 256))


def hide_patches(images: Tensor, patch_size: int, ratio: float,
                 generator: torch.Generator | None = None,
                 mode: str = "noise") -> tuple[Tensor, Tensor]:
    """Hide a random `ratio` of the square patches of each image.

    Args:
        images: float [B, C, H, W], normalised.
        patch_size: side of the patches in pixels (edge patches may be cut).
        ratio: fraction of each image's patch grid to hide, rounded to whole patches.
        generator: random source (on any device) for reproducible patches.
        mode: "noise" fills hidden pixels with N(0, 1) noise (in normalised units), "zero" with 0.

    Returns:
        (corrupted float [B, C, H, W], hidden bool [B, 1, H, W]).
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {list(images.shape)}")
    if patch_size < 1 or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"need patch_size >= 1 and 0 <= ratio <= 1, got {patch_size}, {ratio}")
    if mode not in HIDE_MODES:
        raise ValueError(f"mode must be one of {HIDE_MODES}, got {mode!r}")
    batch, _, height, width = images.shape
    grid_h, grid_w = math.ceil(height / patch_size), math.ceil(width / patch_size)
    n_hidden = round(ratio * grid_h * grid_w)
    rand_device = generator.device if generator is not None else images.device
    order = torch.rand(batch, grid_h * grid_w, generator=generator, device=rand_device).argsort(1)
    grid = torch.zeros(batch, grid_h * grid_w, dtype=torch.bool, device=rand_device)
    grid.scatter_(1, order[:, :n_hidden], True)
    hidden = (grid.view(batch, 1, grid_h, grid_w)
              .repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)
              [:, :, :height, :width].to(images.device))
    if mode == "noise":
        fill = torch.randn(images.shape, generator=generator, device=rand_device,
                           dtype=images.dtype).to(images.device)
    else:
        fill = torch.zeros((), dtype=images.dtype, device=images.device)
    return torch.where(hidden, fill, images), hidden


def reconstruction_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Plain Phase-1 objective: mean squared error."""
    return F.mse_loss(pred, target)


def masked_reconstruction_loss(pred: Tensor, target: Tensor, hidden: Tensor,
                               hidden_weight: float = 4.0) -> Tensor:
    """Squared error weighted `hidden_weight` on hidden pixels and 1 elsewhere, divided by the
    weight sum.

    Copying the input through the skip connections cannot reduce the hidden part, so the encoder
    must learn anatomy to fill it.

    Args:
        pred, target: float [B, C, H, W].
        hidden: bool [B, 1, H, W] from `hide_patches`.
    """
    weight = (1.0 + (hidden_weight - 1.0) * hidden.float()).expand_as(pred)
    error = (pred.float() - target.float()) ** 2
    return (weight * error).sum() / weight.sum()
