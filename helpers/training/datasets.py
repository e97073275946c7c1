"""Torch Datasets and augmentations over the image cache (`helpers.cache`).

No augmentation flips horizontally on its own: the patient's left is on the image's right, and a flip
would contradict "left"/"right" in the report. The only flip is the *concordant* one, which also swaps
the side words of the text (see `LabeledCases`).
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
from .paste import copy_is_free, level_shift, paste_copy



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
    """Phase-2 cases: (image float32 [1, S, S], mask float32 [1, S, S] in {0, 1}, text index int).

    `text_index[i]` points into an embedding table held by the trainer, so each text is encoded once.
    With `flip_prob` > 0 and `flipped_text_index` given, an item is flipped left-right with that
    probability *concordantly*: image and mask are mirrored and the text index switches to the text
    with "left" and "right" swapped, so the report still describes the picture.

    With `negative_rate` > 0, an item gets with that probability a text drawn from
    `negative_text_index[i]` (texts whose finding lies elsewhere) and an empty mask: the model
    must check that the described finding is where it looks.

    Where a single picture would do without the text, these make the place in the words matter
    (each needs `flipped_text_index`; `sided[i]` says whether case i's text names one side):
    - `paste_prob`: the lesion is copied to another place of the same image (`paste_copy`): its
      mirror place when the text names one side, or the other level of the same lung when the
      text names one level (`levels[i]`, "upper"/"lower"; its level-swapped text:
      `level_text_index[i]`), where that place is free. Then either the text as written asks for
      the original lesion or its swapped twin asks for the copy, half and half: both lesions look
      alike, only the place in the words tells;
    - `swap_prob`: the side-swapped text with an empty target (nothing lies where it points);
    - `null_rate`: `null_text_index[i]`, a text that describes nothing present (the report's normal
      and negated sentences), with an empty target;
    - `sentence_prob`: one sentence of the report alone, half and half: the one that names the
      lesion (`lesion_text_index[i]`) with the mask, or the report's other positive sentences
      (`beside_text_index[i]`: "Mild cardiomegaly.") with an empty target (-1: not known).
    With `undescribed`, the lesion that such a text does not describe (the one not asked for, or
    the case's own lesion under a swapped, null or negative text) is marked UNDESCRIBED in the
    target instead of 0: a negative that costs as much as a missed positive.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, text_index: Sequence[int],
                 augment: bool = False, flip_prob: float = 0.0,
                 flipped_text_index: Sequence[int] | None = None, negative_rate: float = 0.0,
                 negative_text_index: Sequence[Sequence[int]] | None = None,
                 paste_prob: float = 0.0, swap_prob: float = 0.0, sided: Sequence[bool] | None = None,
                 null_rate: float = 0.0, null_text_index: Sequence[int] | None = None,
                 levels: Sequence[str | None] | None = None,
                 level_text_index: Sequence[int] | None = None, undescribed: bool = False,
                 sentence_prob: float = 0.0, lesion_text_index: Sequence[int] | None = None,
                 beside_text_index: Sequence[int] | None = None):
        if not len(images) == len(masks) == len(text_index):
            raise ValueError(f"images ({len(images)}), masks ({len(masks)}) and text_index "
                             f"({len(text_index)}) must have the same length")
        if flip_prob > 0 and flipped_text_index is None:
            raise ValueError("flip_prob > 0 needs flipped_text_index (texts with sides swapped)")
        if negative_rate > 0 and negative_text_index is None:
            raise ValueError("negative_rate > 0 needs negative_text_index (texts of other places)")
        if (paste_prob > 0 or swap_prob > 0) and (flipped_text_index is None or sided is None):
            raise ValueError("paste_prob or swap_prob > 0 needs flipped_text_index and sided")
        if null_rate > 0 and null_text_index is None:
            raise ValueError("null_rate > 0 needs null_text_index (texts that describe nothing)")
        if sentence_prob > 0 and (lesion_text_index is None or beside_text_index is None):
            raise ValueError("sentence_prob > 0 needs lesion_text_index and beside_text_index")
        if paste_prob + swap_prob + null_rate + negative_rate + sentence_prob > 1:
            raise ValueError("paste_prob + swap_prob + null_rate + negative_rate + sentence_prob "
                             "must be <= 1")
        self.paste_prob, self.swap_prob, self.null_rate = paste_prob, swap_prob, null_rate
        self.sentence_prob = sentence_prob
        self.lesion_text_index = list(lesion_text_index) if lesion_text_index is not None else None
        self.beside_text_index = list(beside_text_index) if beside_text_index is not None else None
        self.sided = [bool(x) for x in sided] if sided is not None else [False] * len(images)
        # per case, the places its lesion may be copied to, each with the text that asks for it
        self.moves: list[list[tuple[str | int, int]]] = [[] for _ in range(len(images))]
        for i in range(len(images)) if paste_prob > 0 else ():
            mask = torch.from_numpy(np.asarray(masks[i]))
            if self.sided[i] and copy_is_free(mask, "mirror"):
                self.moves[i].append(("mirror", flipped_text_index[i]))
            shift = level_shift(levels[i], mask.shape[-2]) if levels is not None else 0
            if level_text_index is not None and copy_is_free(mask, shift):
                self.moves[i].append((shift, level_text_index[i]))
        self.null_text_index = list(null_text_index) if null_text_index is not None else None
        self.undescribed = undescribed
        self.images, self.masks = images, masks
        self.text_index = list(text_index)
        self.flipped_text_index = list(flipped_text_index) if flipped_text_index is not None else None
        self.flip_prob = flip_prob
        self.negative_rate = negative_rate
        self.negative_text_index = ([list(c) for c in negative_text_index]
                                    if negative_text_index is not None else None)
        self.transform = train_augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.images)

    def _draw_method(self) -> str | None:
        """One draw picks at most one of the text methods for an item (None: the item as it is)."""
        u = float(torch.rand(()))
        for method, share in (("null", self.null_rate), ("paste", self.paste_prob),
                              ("swap", self.swap_prob), ("negative", self.negative_rate),
                              ("sentence", self.sentence_prob)):
            if u < share:
                return method
            u -= share
        return None

    @staticmethod
    def _paste(image: torch.Tensor, mask: torch.Tensor, text: int, moves: list[tuple[str | int, int]],
               hard: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Copy the lesion to one of `moves`' places, or to all of them (half the time, when there
        are two: the mirror place and the other level, three lesions alike, as in a layout where
        side and level both matter); then ask, with equal chance, for the original (its own text)
        or one copy (that move's text). The lesions not asked for are marked `hard`."""
        if len(moves) > 1 and torch.rand(()) < 0.5:
            chosen = moves
        else:
            chosen = [moves[int(torch.randint(len(moves), ()))]]
        lesions, pasted = [(mask, text)], image
        for how, other_text in chosen:  # every copy is taken from the original picture
            pasted, copy = paste_copy(image, mask, how, onto=pasted)
            lesions.append((copy, other_text))
        image = pasted
        target, text = lesions[int(torch.randint(len(lesions), ()))]
        out = target.clone()
        for other, _ in lesions:
            if other is not target:
                out = torch.where((other > 0) & (target == 0), torch.full_like(out, hard), out)
        return image, out, text

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = torch.from_numpy(np.array(self.images[i]))[None]
        mask = torch.from_numpy(np.array(self.masks[i]))[None]
        text = self.text_index[i]
        # The target marks the described lesion 1 and, with `undescribed`, a lesion the text does
        # not describe UNDESCRIBED (a weighted negative, see losses.DiceBCELoss).
        method, empty, pasted = self._draw_method(), False, False
        hard = UNDESCRIBED if self.undescribed else 0
        if method == "null":
            text, empty = self.null_text_index[i], True
        elif method == "paste" and self.moves[i]:
            pasted = True
            image, mask, text = self._paste(image, mask, text, self.moves[i], hard)
        elif method == "swap" and self.sided[i]:
            text, empty = self.flipped_text_index[i], True
        elif method == "negative" and self.negative_text_index[i]:
            candidates = self.negative_text_index[i]
            text, empty = candidates[int(torch.randint(len(candidates), ()))], True
        elif method == "sentence" and self.lesion_text_index[i] >= 0:
            if torch.rand(()) < 0.5:
                text = self.lesion_text_index[i]
            else:
                text, empty = self.beside_text_index[i], True
        if empty:
            mask = mask * hard
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
            image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        plain = not (empty or pasted)
        if plain and self.flip_prob > 0 and torch.rand(()) < self.flip_prob:
            # concordant flip: mirror picture and mask AND use the side-swapped text
            image, mask = image.flip(-1), mask.flip(-1)
            text = self.flipped_text_index[i]
        return normalize(image), mask.float(), text


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
