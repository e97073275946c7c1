"""Text fusions and the place prior (helpers/model/fusion.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.model.fusion import PlacePrior
from helpers.model.unet import MultimodalUnet
from helpers.text.places import PLACE_CODE, place_code
from tests.model import make_model, same_image_two_texts, text_args


def test_concat_text_changes_logits():
    images, texts = same_image_two_texts()
    with torch.no_grad():
        logits = make_model("concat")(images, texts)
    assert (logits[0] - logits[1]).abs().max() > 1e-4


@pytest.mark.parametrize("fusion", ["film", "film_multi"])
def test_film_is_identity_at_init_and_uses_text_once_trained(fusion):
    images, texts = same_image_two_texts()
    model = make_model(fusion)
    with torch.no_grad():
        torch.testing.assert_close(model(images, texts)[0], model(images, texts)[1])
        baseline = make_model("none")  # same seed: same encoder, decoder and head
        baseline.load_state_dict(model.state_dict(), strict=False)
        torch.testing.assert_close(model(images, texts), baseline(images, texts))
        for film in model.fusion.films:
            film.proj.weight.normal_(std=0.1)
        logits = model(images, texts)
    assert len(model.fusion.films) == (5 if fusion == "film_multi" else 1)
    assert (logits[0] - logits[1]).abs().max() > 1e-4


def test_cross_attention_is_identity_at_init_and_reads_tokens_after_training():
    images = torch.randn(1, 1, 64, 64).expand(2, -1, -1, -1)
    emb, tokens, mask = text_args(2)
    model = make_model("cross_attn")
    assert model.needs_tokens and not make_model("film_multi").needs_tokens
    baseline = make_model("none")
    baseline.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(model(images, emb, tokens, mask), baseline(images, emb))
    # A few steps toward different targets for the two texts: the output comes to depend on them.
    target = torch.zeros(2, 1, 64, 64)
    target[0, :, :, :32] = 1
    target[1, :, :, 32:] = 1
    optimizer = torch.optim.Adam(model.fusion.parameters(), lr=1e-2)
    model.train()
    for _ in range(5):
        loss = F.binary_cross_entropy_with_logits(model(images, emb, tokens, mask), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(images, emb, tokens, mask)
        assert (logits[0] - logits[1]).abs().max() > 1e-3
        # padded tokens are ignored: changing them changes nothing
        noisy = tokens.clone()
        noisy[-1, 3:] = 100.0
        torch.testing.assert_close(model(images, emb, noisy, mask), logits)
    with pytest.raises(ValueError, match="token states"):
        model(images, emb)


def test_none_fusion_ignores_text():
    images, texts = same_image_two_texts()
    with torch.no_grad():
        logits = make_model("none")(images, texts)
    torch.testing.assert_close(logits[0], logits[1])


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
