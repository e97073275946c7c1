"""The place prior: the place code of a text, its maps for the decoder, the validation probe."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers.model.fusion import PlacePrior
from helpers.model.unet import MultimodalUnet
from helpers.text.places import PLACE_CODE, levels_named, names_side, place_code
from helpers.training.questions import place_questions


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


def test_prior_maps_point_at_the_named_region_and_are_empty_for_no_place():
    like = torch.zeros(3, 1, 32, 32)
    code = place_code(["Right lower lobe opacity.", "Left upper lobe nodule.", "Cardiomegaly."])
    maps = PlacePrior.maps(code, like)
    assert maps.shape == (3, PlacePrior.n_maps, 32, 32)
    region = maps[:, -1]
    # the patient's right is the image's left: the first region lies bottom-left, the second top-right
    assert region[0, 28, 4] > 0.9 and region[0, 4, 28] < 0.1 and region[0, 28, 28] < 0.1
    assert region[1, 4, 28] > 0.9 and region[1, 28, 4] < 0.1 and region[1, 28, 28] < 0.1
    assert maps[2].abs().max() == 0


@pytest.mark.parametrize("shared_decoder", [False, True])
def test_prior_starts_as_the_identity_and_can_move_the_mask(shared_decoder):
    torch.manual_seed(0)
    plain = MultimodalUnet("resnet18", text_dim=8, fusion="film", shared_decoder=shared_decoder)
    prior = MultimodalUnet("resnet18", text_dim=8, fusion="film", place_prior=True,
                           shared_decoder=shared_decoder)
    prior.load_state_dict(plain.state_dict(), strict=False)
    plain.eval(), prior.eval()
    assert prior.input_dim == 8 + len(PLACE_CODE) and prior.config()["place_prior"]
    x, emb = torch.randn(2, 1, 64, 64), torch.randn(2, 8)
    code = place_code(["Right lower lobe opacity.", "Left upper lobe nodule."])
    with torch.no_grad():
        assert torch.allclose(prior(x, torch.cat([emb, code], 1)), plain(x, emb), atol=1e-5)
        with pytest.raises(ValueError, match="text_emb must have shape"):
            prior(x, emb)
        prior.place_prior.gain.fill_(4.0)
        right, left = (prior(x[:1], torch.cat([emb[:1], code[i:i + 1]], 1)) for i in (0, 1))
    gain = right - left  # positive where "right lower" points: the image's lower left
    assert gain[0, 0, 48:, :24].mean() > 3 and gain[0, 0, :16, 40:].mean() < -3


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


def test_finetune_selects_on_the_validation_probe_and_keeps_the_prior(cases, tmp_path, finetune_cfg,
                                                                        text_dir):
    from helpers.core.checkpoint import load_checkpoint
    from helpers.training.finetune import finetune

    cfg = dataclasses.replace(finetune_cfg, epochs=2, fusion="cross_attn", text_mode="positive",
                              place_prior=True, select_on_probe=True)
    result = finetune(cfg, cases, tmp_path / "a", text_cache_dir=text_dir, progress=False)
    history = result.history
    assert history["val_follows"].between(0, 1).all()
    assert np.allclose(history["val_select"], (history["val_dice"] + history["val_follows"]) / 2)
    best = load_checkpoint(result.best_path)
    assert best["config"]["model"]["place_prior"] and "val_follows" in best["metrics"]
    plain = dataclasses.replace(cfg, epochs=1, place_prior=False, select_on_probe=False)
    history = finetune(plain, cases, tmp_path / "b", text_cache_dir=text_dir, progress=False).history
    assert np.allclose(history["val_select"], history["val_dice"])
    assert not load_checkpoint(tmp_path / "b" / "best_model.pth")["config"]["model"]["place_prior"]


def test_the_model_text_input_is_the_embedding_then_the_place_code(text_dir):
    """One packing, read the same by the embedding cache, the model and training."""
    from helpers.core.settings import TINY_TEXT_MODEL
    from helpers.text.encoders import EmbeddingCache, load_text_encoder
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
