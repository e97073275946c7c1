"""Image encoders and their weights: the ResNet (or other smp) encoder that both phases share,
the Phase-1 autoencoder, and loading ImageNet or Phase-1 weights into an encoder.

Both phases build the encoder the same way (`build_encoder`), so the encoder weights that Phase 1
saves (`record.EncoderRecord`) load strictly into Phase 2 (`load_pretrained_encoder`).
"""
from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

from ..core.checkpoint import CheckpointError, load_checkpoint
from .record import EncoderRecord

ENCODER_DEPTH = 5
IMAGENET = "imagenet"


def build_encoder(name: str = "resnet34", in_channels: int = 1,
                  weights: str | None = None) -> nn.Module:
    """An smp encoder of depth 5; `forward(x)` returns 6 feature maps (the first is `x`).

    weights: None (random), "imagenet" (downloaded by smp from the model hub) or the path of a
    weights file of this encoder (see `load_encoder_weights`)."""
    encoder = smp.encoders.get_encoder(name, in_channels=in_channels, depth=ENCODER_DEPTH)
    if weights is not None:
        load_encoder_weights(encoder, name, weights)
    return encoder


def build_autoencoder(encoder: str = "resnet34", in_channels: int = 1,
                      encoder_weights: str | None = None) -> smp.Unet:
    """Phase 1: a U-Net reconstructing its input ([B, C, H, W] -> [B, C, H, W], no activation);
    `encoder_weights` as in `build_encoder` (the decoder always starts random)."""
    model = smp.Unet(encoder, encoder_weights=None, in_channels=in_channels, classes=in_channels,
                     activation=None)
    if encoder_weights is not None:
        load_encoder_weights(model.encoder, encoder, encoder_weights)
    return model


def load_encoder_weights(encoder: nn.Module, name: str, weights: str | Path) -> None:
    """Load ImageNet-style weights into `encoder` (built with its final number of input channels):
    "imagenet" (smp downloads `model.safetensors` from the model hub, e.g. `smp-hub/resnet34.imagenet`),
    or the path of such a state dict: `.safetensors`, `.pth` / `.pt` (torchvision's
    `resnet34(weights=...).state_dict()` fits; `fc.*` keys are ignored). The first convolution's 3
    RGB channels are adapted by smp (`set_in_channels`: summed for 1 channel, so a gray image gives
    what its RGB copy gave). CheckpointError naming the file or the download otherwise."""
    if str(weights) == IMAGENET:
        try:
            loaded = smp.encoders.get_encoder(name, in_channels=3, depth=ENCODER_DEPTH,
                                              weights=IMAGENET)
        except KeyError as err:
            raise CheckpointError(f"No ImageNet weights for the encoder {name!r} in "
                                  f"segmentation-models-pytorch ({err})") from err
        except Exception as err:  # the hub download: connection, offline mode, missing file
            repo = (smp.encoders.encoders.get(name, {}).get("pretrained_settings", {})
                    .get(IMAGENET, {}).get("repo_id", "the model hub"))
            raise CheckpointError(
                f"The ImageNet weights of {name} could not be downloaded from {repo} "
                f"({type(err).__name__}: {str(err)[:200]}): no network or model hub here? On a "
                f"machine that has one, download {repo}'s model.safetensors and pass its path "
                "instead of 'imagenet' (--encoder-weights PATH), or start from random weights "
                "(encoder_weights None).") from err
        state = loaded.state_dict()
    else:
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"Encoder weights {path}: no such file; pass 'imagenet' or the "
                                  f"path of a {name} state dict (.safetensors, .pth)")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = load_checkpoint(path)
            state = state.get("state_dict", state)
    _load_rgb_state(encoder, name, state, str(weights))


def _load_rgb_state(encoder: nn.Module, name: str, state: dict, source: str) -> None:
    """Load a 3-channel (or already matching) state dict into `encoder`, adapting the first conv."""
    state = {k: v for k, v in state.items() if isinstance(v, Tensor) and not k.startswith("fc.")}
    channels = encoder.out_channels[0]
    rgb = smp.encoders.get_encoder(name, in_channels=3, depth=ENCODER_DEPTH)
    target = rgb if state.get("conv1.weight", torch.empty(0, 3)).shape[1:2] == (3,) else encoder
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{source} does not hold {name} encoder weights: {err}") from err
    if target is rgb:
        rgb.set_in_channels(channels, pretrained=True)  # smp's 3 -> N channel adaptation
        encoder.load_state_dict(rgb.state_dict())


def load_pretrained_encoder(encoder: nn.Module, path_or_payload: str | Path | dict,
                            encoder_name: str) -> dict:
    """Load Phase-1 encoder weights (`record.EncoderRecord`) strictly into `encoder`; "imagenet", a
    `.safetensors` file or a plain state dict (`conv1.weight`, ...) load as ImageNet-style weights
    (`load_encoder_weights`).

    Returns:
        What the file says besides the weights (settings, metrics), for logging.

    Raises:
        CheckpointError: the checkpoint holds no encoder, another encoder architecture, or any
            missing, unexpected or differently shaped weight.
    """
    if not isinstance(path_or_payload, dict) and (
            str(path_or_payload) == IMAGENET or Path(path_or_payload).suffix == ".safetensors"):
        load_encoder_weights(encoder, encoder_name, path_or_payload)  # no Phase 1: ImageNet start
        return {"encoder_name": encoder_name, "weights": str(path_or_payload)}
    if isinstance(path_or_payload, dict):
        payload, source = path_or_payload, "the encoder checkpoint"
    else:
        payload, source = load_checkpoint(path_or_payload), str(path_or_payload)
    if "encoder" not in payload and "conv1.weight" in payload:  # a plain (ImageNet) state dict
        _load_rgb_state(encoder, encoder_name, payload, str(path_or_payload))
        return {"encoder_name": encoder_name, "weights": str(path_or_payload)}
    record = EncoderRecord.from_payload(payload, source)
    saved_name = record.encoder_name
    if saved_name is not None and saved_name != encoder_name:
        raise CheckpointError(f"{source} holds a {saved_name} encoder, but the model expects "
                              f"{encoder_name}: set the encoder to {saved_name} or pre-train a "
                              f"{encoder_name}.")
    try:
        encoder.load_state_dict(record.state_dict, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{source} (encoder {saved_name or 'unknown'}) does not fit the "
                              f"expected {encoder_name} encoder: {err}") from err
    return record.info()
