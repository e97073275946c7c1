"""Torch Datasets and augmentations over the image cache (`data.cache`).

No augmentation flips horizontally on its own: the patient's left is on the image's right, and a flip
would contradict "left"/"right" in the report. The only flip is the *concordant* one, which also swaps
the side words of the text (a text method, `training.methods`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..data.cache import build_image_cache
from ..data.io import load_masks, normalize
from ..model.losses import UNDESCRIBED
from .methods import Item, MethodUse


def train_augmentation(strength: float = 1.0) -> v2.Compose:
    """Small affine + brightness/contrast, applied jointly to an image and its `tv_tensors.Mask`
    (masks are warped with nearest neighbour and skip the colour jitter). Never a bare flip."""
    return v2.Compose([
        v2.RandomAffine(degrees=7 * strength, translate=(0.05 * strength, 0.05 * strength),
                        scale=(1 - 0.08 * strength, 1 + 0.08 * strength)),
        v2.ColorJitter(brightness=0.2 * strength, contrast=0.2 * strength),
    ])


class UnlabeledImages(Dataset):
    """Phase-1 images: `array` uint8 [N, S, S] -> item float32 [1, S, S] in [-1, 1]."""

    def __init__(self, array: np.ndarray, indices: Sequence[int] | None = None, augment: bool = False):
        self.array = array
        self.indices = list(range(len(array))) if indices is None else list(indices)
        self.transform = train_augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = torch.from_numpy(np.array(self.array[self.indices[i]]))[None]
        if self.transform is not None:
            image = self.transform(tv_tensors.Image(image)).as_subclass(torch.Tensor)
        return normalize(image)


class LabeledCases(Dataset):
    """Phase-2 cases: (image float32 [1, S, S], target float32 [1, S, S], text index int).

    `text_index[i]` points into an embedding table held by the trainer, so each text is encoded
    once. `methods` (`training.methods.MethodUse`: a text method, its share, its plan per case)
    turn some items into others: one draw per item picks at most one of the exclusive methods (in
    their order; the item stays as it is where the case's plan is None), the augmentation follows,
    then each other method (the concordant flip) is drawn for the items left as they were.

    The target marks the described lesion 1 and, with `undescribed`, a lesion the item's text does
    not describe (the one not asked for, or the case's own under a text that describes nothing
    there) `losses.UNDESCRIBED` instead of 0: a negative that costs as much as a missed positive.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, text_index: Sequence[int],
                 methods: Sequence[MethodUse] = (), augment: bool = False, undescribed: bool = False):
        if not len(images) == len(masks) == len(text_index):
            raise ValueError(f"images ({len(images)}), masks ({len(masks)}) and text_index "
                             f"({len(text_index)}) must have the same length")
        for use in methods:
            if len(use.plan) != len(images):
                raise ValueError(f"the plan of {use.method.name} has {len(use.plan)} entries for "
                                 f"{len(images)} cases")
        if sum(use.share for use in methods if use.method.exclusive) > 1:
            raise ValueError(" + ".join(u.method.setting for u in methods if u.method.exclusive)
                             + " must be <= 1 (one method per item)")
        self.images, self.masks = images, masks
        self.text_index = list(text_index)
        self.exclusive = [use for use in methods if use.method.exclusive]
        self.after = [use for use in methods if not use.method.exclusive]
        self.hard = UNDESCRIBED if undescribed else 0
        self.transform = train_augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.images)

    def _draw(self) -> MethodUse | None:
        """One draw (always made, so that the random stream does not depend on the methods) picks
        at most one exclusive method for an item (None: the item as it is)."""
        u = float(torch.rand(()))
        for use in self.exclusive:
            if u < use.share:
                return use
            u -= use.share
        return None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        item = Item(torch.from_numpy(np.array(self.images[i]))[None],
                    torch.from_numpy(np.array(self.masks[i]))[None], self.text_index[i], self.hard)
        use = self._draw()
        changed = use is not None and use.plan[i] is not None
        if changed:
            item = use.method.apply(item, use.plan[i])
        image, mask = item.image, item.mask
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
            image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        item = Item(image, mask, item.text, self.hard)
        for use in self.after:  # on the augmented item, when no other method changed it
            if not changed and torch.rand(()) < use.share and use.plan[i] is not None:
                item, changed = use.method.apply(item, use.plan[i]), True
        return normalize(item.image), item.mask.float(), item.text


@dataclass
class LabeledArrays:
    """The labeled cases of one split at model size, with their rows."""

    cases: pd.DataFrame
    images: np.ndarray  # uint8 [N, S, S]
    masks: np.ndarray  # uint8 [N, S, S] in {0, 1}


def labeled_arrays(cases: pd.DataFrame, size: int, cache_dir: str | Path | None = None,
                   progress: bool = False) -> LabeledArrays:
    """Decode the images (through the preprocessing cache) and masks of `cases` at `size`; cases
    whose image cannot be read are left out (and counted)."""
    cache = build_image_cache(sorted(set(cases["image_path"])), size, cache_dir, progress=progress)
    index = cache.index_of()
    readable = cases[cases["image_path"].isin(index)].reset_index(drop=True)
    if len(readable) < len(cases):
        print(f"Skipped {len(cases) - len(readable)} case(s) whose image cannot be read.")
    images = np.stack([cache.array[index[p]] for p in readable["image_path"]]) if len(readable) \
        else np.zeros((0, size, size), np.uint8)
    return LabeledArrays(readable, images, load_masks(list(readable["mask_path"]), size))
