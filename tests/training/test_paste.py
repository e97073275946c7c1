"""Copies of a lesion at another place (helpers/training/paste.py)."""
from __future__ import annotations

import numpy as np
import torch

from tests.training import lower_lesion, one_lesion


def test_paste_mirror_copies_the_lesion_to_its_mirror_place():
    from helpers.training.paste import mirror_overlaps, paste_mirror

    images, masks = one_lesion()
    pasted, copy = paste_mirror(torch.from_numpy(images), torch.from_numpy(masks))
    assert pasted.dtype == torch.uint8 and copy.shape == masks.shape
    assert torch.equal(copy, torch.from_numpy(masks).flip(-1))
    assert (pasted[copy.bool()] == 220).all()  # full strength inside the copy
    assert torch.equal(pasted[torch.from_numpy(masks).bool()], torch.from_numpy(images[masks > 0]))
    far = torch.zeros_like(copy, dtype=torch.bool)
    far[..., :, 14:18] = True  # between the two lesions: untouched background
    assert (pasted[far] == 40).all()
    centred = np.zeros((1, 32, 32), np.uint8)
    centred[0, 10:18, 13:19] = 1
    assert mirror_overlaps(np.concatenate([masks, centred])).tolist() == [False, True]


def test_paste_copies_the_lesion_to_the_other_level():
    from helpers.training.paste import copy_is_free, level_shift, paste_copy

    images, masks = lower_lesion()  # in the lower zone of the image's left lung
    shift = level_shift("lower", 40)
    assert shift == -12 and level_shift("mixed", 40) == 0 and level_shift("upper", 40) == 12
    mask = torch.from_numpy(masks[0])
    assert copy_is_free(mask, shift) and not copy_is_free(mask, 12)  # down: out of the image
    pasted, copy = paste_copy(torch.from_numpy(images), torch.from_numpy(masks), shift)
    assert copy[0, 14:20, 4:10].all() and copy.sum() == masks.sum()
    assert (pasted[0, 14:20, 4:10] == 220).all()
