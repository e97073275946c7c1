"""The validation place questions (helpers/training/questions.py)."""
from __future__ import annotations

import numpy as np
import torch

from helpers.training.questions import place_questions


def test_place_questions_ask_for_the_lesion_and_its_copy():
    images = np.full((3, 40, 40), 40, np.uint8)
    images[0, 8:14, 4:10] = 220  # the image's left lung: the patient's right
    images[1, 26:32, 30:36] = 220  # the lower zone of the image's right lung
    images[2, 18:22, 18:22] = 220  # a lesion in the middle, named by no place word
    masks = torch.from_numpy((images > 100).astype(np.uint8))
    texts = ["Nodule in the right lung.", "Opacity at the left base.", "Cardiomegaly."]
    pasted, asked, meant, other = place_questions(torch.from_numpy(images), masks, texts, every_place=True)
    # the second lesion is asked about at its mirror place and at the lung's other level
    assert asked == ["Nodule in the right lung.", "Nodule in the left lung.",
                     "Opacity at the left base.", "Opacity at the right base.",
                     "Opacity at the left base.", "Opacity at the left apex."]
    assert pasted.shape == (6, 40, 40) and pasted.dtype == torch.uint8
    assert (pasted[0, 8:14, 30:36] == 220).all() and (pasted[4, 14:20, 30:36] == 220).all()
    assert torch.equal(meant[0], masks[0].bool()) and torch.equal(other[1], masks[0].bool())
    assert torch.equal(meant[1], other[0]) and meant[1][8:14, 30:36].all()
    assert meant[3][26:32, 4:10].all() and meant[5][14:20, 30:36].all()
    assert not (meant & other).any()
    # by default a case with two free places gets one: the cases take them in turn
    cases = torch.from_numpy(images[[1, 1, 1]]), masks[[1, 1, 1]], [texts[1]] * 3
    assert place_questions(*cases)[1] == ["Opacity at the left base.", "Opacity at the right base.",
                                          "Opacity at the left base.", "Opacity at the left apex.",
                                          "Opacity at the left base.", "Opacity at the right base."]
    none = place_questions(torch.from_numpy(images[2:]), masks[2:], texts[2:])
    assert none[0].shape == (0, 40, 40) and none[1] == []
