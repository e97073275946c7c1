"""Metrics (helpers/model/metrics.py), against hand computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.model.metrics import (
    best_threshold,
    bootstrap_ci,
    dice_per_image,
    iou_per_image,
    pointing_hits,
    pooled_dice,
)


def masks(*rows: list[int]) -> torch.Tensor:
    """Each row: the 4 pixels of a 2x2 mask -> bool [N, 1, 2, 2]."""
    return torch.tensor(rows, dtype=torch.bool).view(len(rows), 1, 2, 2)


def test_dice_and_iou_per_image_with_empty_masks():
    pred = masks([1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0])
    true = masks([1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1])
    dice = dice_per_image(pred, true)
    assert dice.dtype == torch.float32 and dice.shape == (5,)
    torch.testing.assert_close(dice, torch.tensor([2 / 3, 1.0, 0.0, 0.0, 4 / 6]))
    torch.testing.assert_close(iou_per_image(pred.long(), true.long()),
                               torch.tensor([1 / 2, 1.0, 0.0, 0.0, 2 / 4]))
    # pooled: TP 1 + 2 = 3, FP 1 + 1 + 1 = 3, FN 1 + 1 = 2
    assert pooled_dice(pred, true) == pytest.approx(6 / 11)
    assert pooled_dice(masks([0, 0, 0, 0]), masks([0, 0, 0, 0])) == 1.0
    with pytest.raises(ValueError, match="shape"):
        dice_per_image(pred, true[:2])


def test_pointing_game():
    prob = torch.tensor([[0.1, 0.9, 0.2, 0.3], [0.8, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]])
    prob = prob.view(3, 1, 2, 2)
    target = masks([0, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0])
    assert pointing_hits(prob, target).tolist() == [True, False, False]


def test_bootstrap_ci_contains_the_mean():
    values = np.random.default_rng(0).uniform(0, 1, 50)
    mean, low, high = bootstrap_ci(values, n_boot=500, seed=1)
    assert mean == pytest.approx(values.mean())
    assert low < mean < high and high - low < 0.4
    assert bootstrap_ci(values, n_boot=500, seed=1) == (mean, low, high)
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])


def test_best_threshold_maximises_mean_dice():
    target = masks([1, 1, 0, 0], [0, 0, 0, 1])
    prob = torch.where(target, 0.7, 0.5)  # any threshold in (0.5, 0.7] is perfect
    assert best_threshold(prob, target) == pytest.approx(0.55)
    assert best_threshold(prob, target, candidates=[0.3, 0.6, 0.8]) == pytest.approx(0.6)


def test_follows_text_compares_the_mass_on_the_meant_and_the_other_lesion():
    from helpers.model.metrics import follows_text

    meant = torch.zeros(3, 4, 4, dtype=torch.bool)
    meant[:, :2, :2] = True
    other = torch.zeros_like(meant)
    other[:, 2:, 2:] = True
    probs = torch.zeros(3, 4, 4)
    probs[0, :2, :2] = 0.9  # on the meant lesion
    probs[1, 2:, 2:] = 0.9  # on the other one
    probs[2] = 0.5  # on both alike: not following
    assert follows_text(probs, meant, other).tolist() == [True, False, False]
