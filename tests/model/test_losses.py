"""Losses (helpers/model/losses.py): Dice + BCE, patch hiding, reconstruction, against hand computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.model.losses import (
    DiceBCELoss,
    hide_patches,
    masked_reconstruction_loss,
    pos_weight_from_masks,
    reconstruction_loss,
)


def hand_dice_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float) -> tuple:
    p = torch.sigmoid(logits.double())
    t = target.double()
    dice = 1 - 2 * (p * t).sum() / (p.sum() + t.sum())
    bce = -(pos_weight * t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()
    return dice, bce


def test_dice_bce_matches_hand_computation():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]], [[[0.0, 1.5], [-2.0, 4.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 1.0]]]])
    dice, bce = hand_dice_bce(logits, target, pos_weight=3.0)
    loss = DiceBCELoss(pos_weight=3.0, dice_weight=0.5, bce_weight=2.0)(logits, target)
    assert loss.item() == pytest.approx((0.5 * dice + 2.0 * bce).item(), rel=1e-5)


def test_dice_bce_is_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.7).float()
    criterion = DiceBCELoss(pos_weight=2.0)
    half = logits.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = criterion(half, target)
    assert loss.dtype == torch.float32
    dice, bce = hand_dice_bce(half.float(), target, pos_weight=2.0)
    assert loss.item() == pytest.approx((dice + bce).item(), rel=1e-5)


@pytest.mark.parametrize("positives, expected", [(2, 7.0), (0, 50.0), (16, 1.0), (1, 15.0)])
def test_pos_weight_from_masks(positives, expected):
    mask = np.zeros((1, 4, 4), dtype=np.uint8)
    mask.flat[:positives] = 255
    assert pos_weight_from_masks(mask) == expected
    assert pos_weight_from_masks(torch.from_numpy(mask) > 0, max_weight=10.0) == min(expected, 10.0)


def test_hide_patches_hides_the_ratio_in_whole_patches():
    images = torch.randn(3, 2, 64, 64)
    corrupted, hidden = hide_patches(images, 8, 0.25, torch.Generator().manual_seed(0))
    assert corrupted.shape == images.shape and hidden.shape == (3, 1, 64, 64)
    assert hidden.dtype == torch.bool
    assert hidden.float().mean(dim=(1, 2, 3)).tolist() == [0.25] * 3
    patches = hidden.float().view(3, 8, 8, 8, 8)  # [B, grid row, row in patch, grid col, col]
    assert torch.equal(patches.amin(dim=(2, 4)), patches.amax(dim=(2, 4)))
    visible = ~hidden.expand_as(images)
    assert torch.equal(corrupted[visible], images[visible])
    assert not torch.equal(corrupted[~visible], images[~visible])
    assert not torch.equal(hidden[0], hidden[1])  # each image draws its own patches


def test_hide_patches_zero_mode_edges_and_seed():
    images = torch.ones(2, 1, 20, 20)
    corrupted, hidden = hide_patches(images, 8, 0.5, torch.Generator().manual_seed(1), mode="zero")
    assert hidden.shape == (2, 1, 20, 20) and hidden.any() and not hidden.all()
    assert torch.equal(corrupted, (~hidden).float())
    _, again = hide_patches(images, 8, 0.5, torch.Generator().manual_seed(1), mode="zero")
    assert torch.equal(hidden, again)
    assert not hide_patches(images, 8, 0.0)[1].any()
    with pytest.raises(ValueError, match="mode"):
        hide_patches(images, 8, 0.5, mode="blur")
    with pytest.raises(ValueError, match="ratio"):
        hide_patches(images, 8, 1.5)


def test_masked_loss_weights_hidden_pixels():
    target = torch.zeros(1, 1, 4, 4)
    hidden = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    hidden[..., :2, :2] = True  # a quarter of the pixels
    error_hidden = target.clone()
    error_hidden[..., :2, :2] = 1.0
    error_visible = target.clone()
    error_visible[..., 2:, 2:] = 1.0
    # weight sum: 4 hidden * 4 + 12 visible * 1 = 28
    assert masked_reconstruction_loss(error_hidden, target, hidden).item() == pytest.approx(16 / 28)
    assert masked_reconstruction_loss(error_visible, target, hidden).item() == pytest.approx(4 / 28)
    pred = torch.randn(2, 3, 4, 4)
    full = torch.randn(2, 3, 4, 4)
    plain = masked_reconstruction_loss(pred, full, hidden.expand(2, -1, -1, -1), hidden_weight=1.0)
    assert plain.item() == pytest.approx(F.mse_loss(pred, full).item(), rel=1e-6)
    expected = ((pred - full) ** 2).mean().item()
    assert reconstruction_loss(pred, full).item() == pytest.approx(expected)


def test_undescribed_lesion_pixels_cost_like_positives():
    from helpers.model.losses import UNDESCRIBED, DiceBCELoss

    target = torch.zeros(1, 1, 8, 8)
    target[..., :2, :2] = 1
    plain, hard = target.clone(), target.clone()
    hard[..., 6:, 6:] = UNDESCRIBED
    logits = torch.full((1, 1, 8, 8), -4.0)
    logits[..., :2, :2] = 4.0
    logits[..., 6:, 6:] = 4.0  # marks the undescribed lesion too
    loss = DiceBCELoss(pos_weight=10.0)
    assert loss(logits, hard) > loss(logits, plain)  # the same mistake costs more
    clean = logits.clone()
    clean[..., 6:, 6:] = -4.0
    # left unmarked, the weighted pixels cost next to nothing
    assert loss(clean, hard) - loss(clean, plain) < 0.01 * (loss(logits, hard) - loss(logits, plain))
