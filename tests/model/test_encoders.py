"""Image encoders and their weights (helpers/model/encoders.py): Phase-1 and ImageNet starts."""
from __future__ import annotations

import pytest
import torch

from helpers.core.checkpoint import CheckpointError, save_checkpoint
from helpers.model.encoders import build_autoencoder, load_pretrained_encoder
from helpers.model.record import EncoderRecord
from helpers.model.unet import MultimodalUnet
from tests.model import ENCODER, D, make_model


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
