"""The radiological convention (helpers/core/anatomy.py) and the modules that follow it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.core.anatomy import IMAGE_HALVES, SIDES, image_half, image_half_index, image_x_sign, other_side


def test_the_patients_right_is_the_images_left():
    assert SIDES == ("right", "left") and IMAGE_HALVES == ("image-left", "image-right")
    assert [image_half(s) for s in SIDES] == ["image-left", "image-right"]
    assert [image_half_index(s) for s in SIDES] == [0, 1]
    assert [image_x_sign(s) for s in SIDES] == [-1.0, 1.0]
    assert [other_side(s) for s in SIDES] == ["left", "right"]
    with pytest.raises(ValueError, match="patient's"):
        image_half("both")


def test_place_prior_scores_and_demo_drawing_agree_on_the_convention():
    """The place prior's map of "right", the side the scores expect for "right", and where the
    demo draws a right lesion are all the image's left half."""
    from helpers.data.demo.draw import _Anatomy, _zone_centre
    from helpers.evaluation.scores import expected_image_side, image_side
    from helpers.model.fusion import PlacePrior
    from helpers.text.places import PLACE_CODE

    code = torch.zeros(1, len(PLACE_CODE))
    code[0, PLACE_CODE.index("right")] = 1
    right_map = PlacePrior.maps(code, torch.zeros(1, 1, 8, 8))[0, PLACE_CODE.index("right")]
    assert right_map[:, :4].min() > 0.5 > right_map[:, 4:].max()
    prob = np.zeros((8, 8))
    prob[:, :4] = 1
    assert image_side(prob) == expected_image_side("Nodule in the right upper lobe.") == "image-left"
    assert expected_image_side("No effusion.") is None
    rng = np.random.default_rng(0)
    anatomy = _Anatomy.sample(rng)
    assert _zone_centre("right upper", anatomy, rng)[0] < 0.5 < _zone_centre("left upper", anatomy, rng)[0]
