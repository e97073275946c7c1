"""Autoencoder, multimodal U-Net (fusions, upsampling), Phase-1 encoder loading, checkpoints."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from helpers.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from helpers.fusion import FUSIONS
from helpers.model import (UPSAMPLINGS, MultimodalUnet, TransposeUpsample,
                           build_autoencoder, encoder_checkpoint, freeze_encoder, from_config,
                           load_pretrained_encoder)

D = 16
T = 12  # token width
ENCODER = "resnet18"


class Untrusted:
    """An arbitrary class: weights_only loading must refuse it."""


def make_model(fusion: str = "concat", upsampling: str = "interp", seed: int = 0) -> MultimodalUnet:
    torch.manual_seed(seed)
    return MultimodalUnet(ENCODER, text_dim=D, fusion=fusion, upsampling=upsampling,
                          token_dim=T).eval()


def text_args(n: int, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled embeddings [n, D], token states [n, 5, T] and their mask (the last text is shorter)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, 5, dtype=torch.bool)
    mask[-1, 3:] = False
    return torch.randn(n, D, generator=gen), torch.randn(n, 5, T, generator=gen), mask


def same_image_two_texts() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(1, 1, 64, 64).expand(2, -1, -1, -1), torch.randn(2, D)


@pytest.mark.parametrize("upsampling", UPSAMPLINGS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_shape(fusion, upsampling):
    model = make_model(fusion, upsampling).train()
    logits = model(torch.randn(2, 1, 64, 64), *text_args(2))
    assert logits.shape == (2, 1, 64, 64) and logits.dtype == torch.float32
    logits.mean().backward()
    assert model.encoder.conv1.weight.grad is not None


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


def _text_sensitive(model: MultimodalUnet) -> MultimodalUnet:
    """`model` with its zero-initialised text paths given random weights, as after training."""
    with torch.no_grad():
        for module in model.fusion.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.weight.normal_(std=0.1)
    return model


@pytest.mark.parametrize("fusion", FUSIONS)
def test_encode_once_then_decode_equals_forward(fusion):
    model = _text_sensitive(make_model(fusion, "transpose"))
    images = torch.randn(3, 1, 64, 64)
    emb, tokens, mask = text_args(3)
    with torch.no_grad():
        whole = model(images, emb, tokens, mask)
        split = model.decode(model.encode_image(images), emb, tokens, mask)
        assert torch.equal(whole, split)  # the same operations: bit for bit
        # one image, three texts: the image is encoded once and read with each text
        one = model.decode(model.encode_image(images[:1]), emb, tokens, mask)
        torch.testing.assert_close(one, model(images[:1].expand(3, -1, -1, -1), emb, tokens, mask),
                                   rtol=1e-5, atol=1e-5)
        for k in range(3):  # each text alone gives what it gives in the batch
            alone = model(images[:1], emb[k:k + 1], tokens[k:k + 1], mask[k:k + 1])
            torch.testing.assert_close(one[k:k + 1], alone, rtol=1e-5, atol=1e-5)
    if fusion != "none":
        assert (one[0] - one[1]).abs().max() > 1e-3  # the texts matter


def test_decode_explains_mismatched_batches():
    model = make_model("concat")
    features = model.encode_image(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="2 images cannot be read with 3 texts"):
        model.decode(features, torch.randn(3, D))
    with pytest.raises(ValueError, match="text_emb"):
        model.decode(features, torch.randn(2, D + 1))
    with pytest.raises(ValueError, match="multiples of 32"):
        model.encode_image(torch.randn(1, 1, 60, 64))


def test_none_fusion_ignores_text():
    images, texts = same_image_two_texts()
    with torch.no_grad():
        logits = make_model("none")(images, texts)
    torch.testing.assert_close(logits[0], logits[1])


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


def test_config_rebuilds_model():
    model = make_model("film_multi", "transpose")
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


def test_autoencoder_reconstructs_input_shape():
    model = build_autoencoder(ENCODER).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 1, 64, 64)


def test_phase1_encoder_loads_into_multimodal_model(tmp_path):
    torch.manual_seed(3)
    autoencoder = build_autoencoder(ENCODER)
    path = save_checkpoint(encoder_checkpoint(autoencoder, ENCODER, epoch=4), tmp_path / "enc.pth")
    model = make_model()
    info = load_pretrained_encoder(model.encoder, path, ENCODER)
    assert info == {"encoder_name": ENCODER, "in_channels": 1, "epoch": 4}
    saved = autoencoder.encoder.state_dict()
    loaded = model.encoder.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_encoder_checkpoint_of_another_encoder_is_refused(tmp_path):
    payload = encoder_checkpoint(build_autoencoder("resnet18"), "resnet18")
    path = save_checkpoint(payload, tmp_path / "enc.pth")
    target = MultimodalUnet("resnet34", text_dim=D)
    with pytest.raises(CheckpointError, match=r"enc\.pth.*resnet18.*resnet34"):
        load_pretrained_encoder(target.encoder, path, "resnet34")
    mislabeled = {**payload, "encoder_name": "resnet34"}  # the weights still differ
    with pytest.raises(CheckpointError, match="does not fit"):
        load_pretrained_encoder(target.encoder, mislabeled, "resnet34")
    with pytest.raises(CheckpointError, match="no 'encoder'"):
        load_pretrained_encoder(target.encoder, {"model": {}}, "resnet34")


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    model = make_model()
    payload = {"model": model.state_dict(), "config": model.config(), "epoch": 3,
               "metrics": {"val_dice": 0.5}, "history": [{"loss": 1.0}]}
    path = save_checkpoint(payload, tmp_path / "new" / "best_model.pth")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    loaded = load_checkpoint(path)
    assert loaded["config"] == payload["config"] and loaded["epoch"] == 3
    assert all(torch.equal(v, loaded["model"][k]) for k, v in payload["model"].items())
    save_checkpoint({"epoch": 4}, path)  # replaces the previous file
    assert load_checkpoint(path) == {"epoch": 4}


def test_untrusted_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"epoch": 1, "payload": Untrusted()}, path)
    with pytest.raises(CheckpointError, match="evil.pth.*untrusted"):
        load_checkpoint(path)


def test_damaged_or_missing_checkpoint_is_explained(tmp_path):
    path = save_checkpoint({"weights": torch.randn(1000)}, tmp_path / "last.pth")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="last.pth is truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    torch.save(torch.ones(2), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(tmp_path / "tensor.pth")


def test_unwritable_folder_is_explained(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(CheckpointError, match="runs.*not writable.*writable output folder"):
        save_checkpoint({"epoch": 1}, blocker / "best_model.pth")
