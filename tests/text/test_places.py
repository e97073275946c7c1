"""Place words and the place code (helpers/text/places.py)."""
from __future__ import annotations

import pytest
import torch

from helpers.core.settings import TINY_TEXT_MODEL
from helpers.model.unet import MultimodalUnet
from helpers.text.encoders import (
    EmbeddingCache,
    load_text_encoder,
)
from helpers.text.places import PLACE_CODE, levels_named, names_side, place_code, swap_sides


@pytest.mark.parametrize("text, named", [
    ("Patchy opacity in the right lower lobe.", {"right", "lower"}),
    ("Bibasilar atelectasis.", {"right", "left", "lower"}),
    ("There is XXXX opacity in the left perihilar upper lobe.", {"left", "upper", "middle"}),
    ("Blunting of the left costophrenic angle.", {"left", "lower"}),
    ("Biapical pleural thickening.", {"right", "left", "upper"}),
    ("Mild cardiomegaly.", set()),
    # only the sentences that name a lung lesion point somewhere
    ("Healed right rib fracture.", set()),
    ("Surgical clips in the left axilla. Patchy opacity in the right upper lobe.", {"right", "upper"}),
    ("No left effusion. Right basilar atelectasis.", {"right", "lower"}),
])
def test_place_code_names_the_patient_sides_and_the_levels(text, named):
    code = place_code([text])
    assert code.shape == (1, len(PLACE_CODE)) and code.dtype == torch.float32
    assert {name for name, flag in zip(PLACE_CODE, code[0]) if flag} == named


def test_bibasilar_names_both_sides_and_the_lower_level():
    assert names_side("Bibasilar opacities.") == "both"
    assert levels_named("Bibasilar opacities.") == {"lower"}


def test_the_model_text_input_is_the_embedding_then_the_place_code(text_dir):
    """One packing, read the same by the embedding cache, the model and training."""
    from helpers.text.places import split_text_input, text_input, text_input_dim

    texts = ["Right upper lobe nodule.", "Mild cardiomegaly."]
    emb = torch.randn(2, 8)
    packed = text_input(emb, texts, places=True)
    assert packed.shape == (2, text_input_dim(8, True)) == (2, 8 + len(PLACE_CODE))
    got_emb, got_code = split_text_input(packed, 8)
    assert torch.equal(got_emb, emb) and torch.equal(got_code, place_code(texts))
    assert text_input(emb, texts, places=False) is emb and split_text_input(emb, 8)[1].shape == (2, 0)
    encoder = load_text_encoder(TINY_TEXT_MODEL, cache_dir=text_dir)
    cache = EmbeddingCache(encoder, places=True)
    assert cache.dim == MultimodalUnet("resnet18", text_dim=encoder.dim, place_prior=True).input_dim
    torch.testing.assert_close(cache.get(texts), text_input(encoder.encode(texts), texts, places=True))


@pytest.mark.parametrize("text, expected", [
    ("Left lower lobe opacity", "Right lower lobe opacity"),
    ("RIGHT effusion, left nodule", "LEFT effusion, right nodule"),
    ("left-sided and right.", "right-sided and left."),
    ("Leftover brightness, no leftward shift", "Leftover brightness, no leftward shift"),
    ("", ""),
])
def test_swap_sides(text, expected):
    assert swap_sides(text) == expected
    assert swap_sides(swap_sides(text)) == text


@pytest.mark.parametrize("text, side", [
    ("Right upper lobe nodule.", "right"),
    ("small LEFT effusion", "left"),
    ("left and right basilar atelectasis", "both"),
    ("Bilateral pleural effusions", "both"),
    ("Lungs are clear. Bright spot.", None),
])
def test_names_side(text, side):
    assert names_side(text) == side


def test_level_words_swap_and_name_one_level():
    from helpers.text.places import names_level, swap_levels

    assert swap_levels("Patchy opacity at the Right base.") == "Patchy opacity at the Right apex."
    assert swap_levels("RIGHT LOWER LOBE nodule, left apical scar") == "RIGHT UPPER LOBE nodule, left basilar scar"
    assert names_level("Nodule in the left upper lobe.") == "upper"
    assert names_level("Right basilar atelectasis.") == "lower"
    assert names_level("Left apical and basilar scarring.") == "mixed"
    assert names_level("Opacity in the left lower lobe and lingula.") == "mixed"
    assert names_level("Right perihilar density.") is None
    assert names_level("Small left pleural effusion.") is None
