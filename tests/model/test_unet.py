"""The multimodal U-Net (helpers/model/unet.py)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from helpers.model.fusion import FUSIONS
from helpers.model.unet import UPSAMPLINGS, MultimodalUnet, TransposeUpsample, freeze_encoder, from_config
from tests.model import ENCODER, D, make_model, same_image_two_texts, text_args


def _text_sensitive(model: MultimodalUnet) -> MultimodalUnet:
    """`model` with its zero-initialised text paths given random weights, as after training."""
    with torch.no_grad():
        for module in model.fusion.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.weight.normal_(std=0.1)
    return model


@pytest.mark.parametrize("upsampling", UPSAMPLINGS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_shape(fusion, upsampling):
    model = make_model(fusion, upsampling).train()
    logits = model(torch.randn(2, 1, 64, 64), *text_args(2))
    assert logits.shape == (2, 1, 64, 64) and logits.dtype == torch.float32
    logits.mean().backward()
    assert model.encoder.conv1.weight.grad is not None


@pytest.mark.parametrize("shared_decoder", [False, True])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_encode_once_then_decode_equals_forward(fusion, shared_decoder):
    model = _text_sensitive(make_model(fusion, "transpose", shared_decoder=shared_decoder))
    images = torch.randn(3, 1, 64, 64)
    emb, tokens, mask = text_args(3)
    with torch.no_grad():
        whole = model(images, emb, tokens, mask)
        split = model.decode(model.encode_image(images), emb, tokens, mask)
        assert torch.equal(whole, split)  # the same operations: bit for bit
        # one image, three texts: the image is encoded once and read with each text (another
        # batch size may take another convolution algorithm: float rounding differs by CPU, and
        # the random text weights make logits of up to ~100s, so the tolerance follows their scale)
        one = model.decode(model.encode_image(images[:1]), emb, tokens, mask)
        atol = 1e-5 * max(10.0, one.abs().max().item())
        torch.testing.assert_close(one, model(images[:1].expand(3, -1, -1, -1), emb, tokens, mask),
                                   rtol=1e-4, atol=atol)
        for k in range(3):  # each text alone gives what it gives in the batch
            alone = model(images[:1], emb[k:k + 1], tokens[k:k + 1], mask[k:k + 1])
            torch.testing.assert_close(one[k:k + 1], alone, rtol=1e-4, atol=atol)
    if fusion != "none":
        assert (one[0] - one[1]).abs().max() > 1e-3  # the texts matter


def test_shared_decoder_decodes_an_image_once_for_all_its_texts():
    model = _text_sensitive(make_model("cross_attn", shared_decoder=True))
    assert model.segmentation_head is None and model.config()["shared_decoder"]
    batches = []
    hook = model.decoder.register_forward_hook(lambda _m, _i, out: batches.append(out.shape[0]))
    emb, tokens, mask = text_args(3)
    with torch.no_grad():
        logits = model.decode(model.encode_image(torch.randn(1, 1, 64, 64)), emb, tokens, mask)
    hook.remove()
    assert batches == [1] and logits.shape == (3, 1, 64, 64)  # one decoder pass for three texts
    assert (logits[0] - logits[1]).abs().max() > 1e-3  # the text still decides the mask
    # training reaches the decoder, the fusion and the text's head
    model.train()
    model(torch.randn(2, 1, 64, 64), *text_args(2)).square().mean().backward()
    for part in (model.decoder, model.fusion, model.select):
        assert all(p.grad is not None for p in part.parameters())


def test_decode_explains_mismatched_batches():
    model = make_model("concat")
    features = model.encode_image(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="2 images cannot be read with 3 texts"):
        model.decode(features, torch.randn(3, D))
    with pytest.raises(ValueError, match="text_emb"):
        model.decode(features, torch.randn(2, D + 1))
    with pytest.raises(ValueError, match="multiples of 32"):
        model.encode_image(torch.randn(1, 1, 60, 64))


def test_transpose_upsampling_starts_as_nearest():
    block = TransposeUpsample(torch.nn.Identity(), in_channels=3)
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(block.up(x), F.interpolate(x, scale_factor=2, mode="nearest"))


def test_text_norm_standardises_embeddings():
    images, texts = same_image_two_texts()
    mean, std = torch.randn(D), torch.rand(D) + 0.5
    model = make_model("concat")
    model.set_text_norm(mean, std)
    assert torch.equal(model.state_dict()["text_std"], std)
    plain = make_model("concat")
    with torch.no_grad():
        torch.testing.assert_close(model(images, texts), plain(images, (texts - mean) / std))
    with pytest.raises(ValueError, match="shape"):
        model.set_text_norm(torch.zeros(D + 1), torch.ones(D + 1))


@pytest.mark.parametrize("shared_decoder", [False, True])
def test_config_rebuilds_model(shared_decoder):
    model = make_model("film_multi", "transpose", shared_decoder=shared_decoder)
    model.set_text_norm(torch.randn(D), torch.rand(D) + 0.5)
    cfg = model.config()
    assert json.loads(json.dumps(cfg)) == cfg  # plain values only
    rebuilt = from_config(cfg).eval()
    rebuilt.load_state_dict(model.state_dict())
    images, texts = same_image_two_texts()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images, texts), model(images, texts))


def test_bad_inputs_are_explained():
    model = make_model()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 1, 60, 64), torch.randn(1, D))
    with pytest.raises(ValueError, match="text_emb"):
        model(torch.randn(1, 1, 64, 64), torch.randn(1, D + 1))
    with pytest.raises(ValueError, match="fusion"):
        MultimodalUnet(ENCODER, text_dim=D, fusion="sum")


def test_freeze_encoder_keeps_batchnorm_in_eval():
    model = make_model()
    freeze_encoder(model, True)
    model.train()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert not model.encoder.bn1.training and model.decoder.training
    freeze_encoder(model, False)
    assert model.encoder.bn1.training and model.encoder.conv1.weight.requires_grad
