"""Torch datasets (helpers/training/datasets.py)."""
from __future__ import annotations

import numpy as np
import torch

from helpers.training.datasets import LabeledCases, UnlabeledImages


def test_labeled_cases_augment_image_and_mask_together():
    images = np.zeros((1, 32, 32), np.uint8)
    images[0, 8:16, 8:16] = 255
    masks = (images > 0).astype(np.uint8)
    torch.manual_seed(0)
    ds = LabeledCases(images, masks, [0], augment=True)
    for _ in range(5):
        image, mask, text = ds[0]
        assert image.shape == mask.shape == (1, 32, 32) and text == 0
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        # the bright square and the mask moved together
        assert (image[mask.bool()] > 0).float().mean() > 0.8


def test_unlabeled_images_scale():
    ds = UnlabeledImages(np.full((2, 8, 8), 255, np.uint8))
    assert ds[1].shape == (1, 8, 8) and torch.allclose(ds[1], torch.ones(1, 8, 8))
