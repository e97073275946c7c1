"""Autoencoder, multimodal U-Net (fusions, upsampling), Phase-1 encoder loading, checkpoints and
the Phase-2 record."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from helpers.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from helpers.model.encoders import build_autoencoder, load_pretrained_encoder
from helpers.model.record import EncoderRecord
from helpers.model.fusion import FUSIONS
from helpers.model.unet import UPSAMPLINGS, MultimodalUnet, TransposeUpsample, freeze_encoder, from_config
from helpers.model.record import VERSION, ModelRecord

D = 16
T = 12  # token width
ENCODER = "resnet18"


class Untrusted:
    """An arbitrary class: weights_only loading must refuse it."""


def make_model(fusion: str = "concat", upsampling: str = "interp", seed: int = 0,
               shared_decoder: bool = False) -> MultimodalUnet:
    torch.manual_seed(seed)
    return MultimodalUnet(ENCODER, text_dim=D, fusion=fusion, upsampling=upsampling,
                          token_dim=T, shared_decoder=shared_decoder).eval()


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


def test_autoencoder_reconstructs_input_shape():
    model = build_autoencoder(ENCODER).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 1, 64, 64)


def test_phase1_encoder_loads_into_multimodal_model(tmp_path):
    torch.manual_seed(3)
    autoencoder = build_autoencoder(ENCODER)
    path = EncoderRecord(autoencoder.encoder.state_dict(), ENCODER, epoch=4).save(tmp_path / "enc.pth")
    model = make_model()
    info = load_pretrained_encoder(model.encoder, path, ENCODER)
    assert info == {"encoder_name": ENCODER, "in_channels": 1, "epoch": 4}
    saved = autoencoder.encoder.state_dict()
    loaded = model.encoder.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_encoder_checkpoint_of_another_encoder_is_refused(tmp_path):
    payload = EncoderRecord(build_autoencoder("resnet18").encoder.state_dict(), "resnet18").to_payload()
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
    payload = {"model": torch.nn.Linear(4, 2).state_dict(), "config": {"fusion": "concat"}, "epoch": 3,
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


def make_record(model: MultimodalUnet) -> ModelRecord:
    return ModelRecord(model.state_dict(), model.config(), image_size=64, text_model="tiny-clip",
                       text_dim=D, threshold=0.35, text_model_requested="openai/clip-vit-base-patch32",
                       text_model_is_tiny=True, text_mode="positive",
                       text_report={"text_mode": "positive", "sentences_kept": 3},
                       finetune={"phase": 2, "fusion": "concat"}, epoch=4, metrics={"val_dice": 0.5})


def test_record_round_trip_is_weights_only_and_rebuilds_the_model(tmp_path):
    model = make_model()
    path = make_record(model).save(tmp_path / "best_model.pth")
    raw = torch.load(path, weights_only=True)  # plain values and tensors only
    assert raw["version"] == VERSION and raw["config"]["threshold"] == 0.35
    assert raw["config"]["text_mode"] == "positive" and raw["metrics"] == {"val_dice": 0.5}
    loaded = ModelRecord.load(path)
    assert loaded.config() == make_record(model).config() and loaded.epoch == 4
    rebuilt = from_config(loaded.model_config)
    rebuilt.load_state_dict(loaded.state_dict)
    image, emb = same_image_two_texts()
    torch.testing.assert_close(rebuilt.eval()(image, emb), model(image, emb))


def test_record_written_before_versions_loads_as_version_1(tmp_path):
    """A best_model.pth from before the record: no version, no text_report/finetune, an entry this
    version does not know (kept as it is)."""
    model = make_model()
    old = {"model": model.state_dict(), "epoch": 2, "metrics": {"val_dice": 0.4},
           "config": {"model": model.config(), "image_size": 64, "text_model": "tiny-clip",
                      "text_model_is_tiny": True, "text_dim": D, "text_mode": "positive",
                      "threshold": 0.45, "note": "kept"}}
    record = ModelRecord.load(save_checkpoint(old, tmp_path / "old.pth"))
    assert (record.version, record.threshold, record.text_mode, record.epoch) == (1, 0.45, "positive", 2)
    assert record.text_report == {} and record.extra == {"note": "kept"}
    assert record.config()["note"] == "kept"


def test_record_refuses_other_files_and_newer_versions(tmp_path):
    model = make_model()
    newer = make_record(model).to_payload() | {"version": VERSION + 1}
    with pytest.raises(CheckpointError, match=f"newer.pth was written by a newer version.*{VERSION + 1}"):
        ModelRecord.load(save_checkpoint(newer, tmp_path / "newer.pth"))
    encoder = EncoderRecord(build_autoencoder(ENCODER).encoder.state_dict(), ENCODER).save(tmp_path / "enc.pth")
    with pytest.raises(CheckpointError, match="Phase-1 encoder.*not a Phase-2 checkpoint"):
        ModelRecord.load(encoder)
    last = save_checkpoint({"model": model.state_dict(), "optimizer": {}, "config": {"phase": 2}},
                           tmp_path / "last.pth")
    with pytest.raises(CheckpointError, match="training state.*best_model.pth"):
        ModelRecord.load(last)
    partial = make_record(model).to_payload()
    del partial["config"]["text_dim"]
    with pytest.raises(CheckpointError, match="lacks text_dim"):
        ModelRecord.load(save_checkpoint(partial, tmp_path / "partial.pth"))


@pytest.fixture
def rgb_weights(tmp_path):
    """A self-made ImageNet-style resnet18 state dict (torchvision's keys, 3 input channels)."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18_rgb.pth"
    torch.save(state, path)
    return path, state


def test_imagenet_style_weights_load_with_the_first_conv_adapted_to_one_channel(rgb_weights, tmp_path):
    from helpers.model.encoders import build_encoder, load_encoder_weights

    path, state = rgb_weights
    encoder = build_encoder("resnet18", 1, weights=str(path))
    assert torch.allclose(encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(encoder.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    autoencoder = build_autoencoder("resnet18", encoder_weights=str(path))
    assert torch.equal(autoencoder.encoder.layer4[0].bn1.running_mean, state["layer4.0.bn1.running_mean"])
    phase2 = MultimodalUnet("resnet18", text_dim=8)
    info = load_pretrained_encoder(phase2.encoder, str(path), "resnet18")  # Phase 2, no Phase 1
    assert info["weights"] == str(path)
    assert torch.equal(phase2.encoder.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="wrong.pth does not hold resnet18 encoder weights"):
        load_encoder_weights(build_encoder("resnet18"), "resnet18", tmp_path / "wrong.pth")


def test_imagenet_through_smp_download_and_a_clear_error_offline(rgb_weights, tmp_path, monkeypatch):
    """'imagenet' goes through smp's own hub download (faked here with a file we made); without
    a network the error says so and what to pass instead."""
    import segmentation_models_pytorch.encoders as smp_encoders
    from safetensors.torch import save_file

    from helpers.model.encoders import build_encoder

    _, state = rgb_weights
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("fc.")}, str(weights))
    (tmp_path / "config.json").write_text("{}")
    asked = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        asked.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr(smp_encoders, "hf_hub_download", fake_download)
    encoder = build_encoder("resnet18", 1, weights="imagenet")
    assert ("smp-hub/resnet18.imagenet", "model.safetensors") in asked
    assert torch.allclose(encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the model hub")

    monkeypatch.setattr(smp_encoders, "hf_hub_download", offline)
    with pytest.raises(CheckpointError, match=r"ImageNet weights of resnet18 could not be downloaded "
                                              r"from smp-hub/resnet18.imagenet.*--encoder-weights PATH"):
        load_pretrained_encoder(MultimodalUnet("resnet18", text_dim=8).encoder, "imagenet", "resnet18")


def test_phase1_continues_from_imagenet_weights(rgb_weights, demo_root, tmp_path, monkeypatch):
    """`pretrain --encoder-weights FILE` starts Phase 1 from them, in its own folder, and says so."""
    from helpers.__main__ import main
    from helpers.core.checkpoint import load_checkpoint

    path, state = rgb_weights
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(demo_root), "--mode", "smoke", "--out", str(out),
                 "--encoder", "resnet18", "--encoder-weights", str(path), "--max-images", "8"]) == 0
    saved = load_checkpoint(out / "phase1" / "masked-imagenet" / "my_pretrained_encoder.pth")
    assert saved["config"]["encoder_weights"] == str(path)
    moved = saved["encoder"]["layer2.0.conv1.weight"] - state["layer2.0.conv1.weight"]
    assert moved.abs().max() < 0.1  # one short epoch from the ImageNet-style start, not random
    from helpers.core.layout import RunPaths

    assert set(RunPaths(out).phase1_encoders()) == {"masked-imagenet"}


def test_imagenet_starts_pass_the_leak_check_silently(rgb_weights, capsys):
    """ImageNet weights saw no patient of this collection: nothing to check, nothing to warn."""
    import pandas as pd

    from helpers.model.record import check_encoder_patients

    cases = pd.DataFrame({"uid": [1, 2], "split": ["val", "test"]})
    for start in ("imagenet", str(rgb_weights[0])):
        check_encoder_patients(start, cases)
    assert capsys.readouterr().out == ""
