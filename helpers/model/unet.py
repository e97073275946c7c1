"""The Phase-2 multimodal U-Net: image encoder (`model.encoders`) + text fusion + decoder.

Images are 1-channel float tensors normalised as `(uint8 / 255 - 0.5) / 0.5`; text embeddings come
from `text.encoders.TextEncoder`, with the place code at their end (`text.places.text_input`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

from ..data.io import normalize
from .encoders import ENCODER_DEPTH, build_encoder
from .fusion import TOKEN_FUSIONS, ConcatFusion, PlacePrior, SelectHead, build_fusion
from ..text.places import split_text_input, text_input_dim

UPSAMPLINGS = ("interp", "transpose")
SIZE_DIVISOR = 2 ** ENCODER_DEPTH


class TransposeUpsample(nn.Module):
    """A U-Net decoder block whose upsampling is a learned ConvTranspose2d (kernel 2, stride 2).

    The transposed convolution starts as nearest-neighbour upsampling (identity kernel), so the
    wrapped block's own interpolation to the skip's size becomes a no-op.
    """

    def __init__(self, block: nn.Module, in_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2)
        with torch.no_grad():
            self.up.weight.zero_()
            self.up.weight[range(in_channels), range(in_channels)] = 1.0
            self.up.bias.zero_()
        self.block = block

    def forward(self, feature_map: Tensor, *args, **kwargs) -> Tensor:
        return self.block(self.up(feature_map), *args, **kwargs)


class MultimodalUnet(nn.Module):
    """U-Net segmenter conditioned on a text embedding.

    Image encoder (`build_encoder`) -> text fusion (`fusion`) -> smp `UnetDecoder` ->
    `SegmentationHead` -> 1-channel mask logits. Text embeddings are standardised with the
    buffers `text_mean` / `text_std` (see `set_text_norm`).

    Args:
        encoder_name: smp encoder name.
        text_dim: size D of the text embeddings.
        fusion: "concat" (the baseline: the sentence embedding at the bottleneck), "film" (deepest
            map), "film_multi" (every map the decoder reads), "cross_attn" (the default: the text's
            tokens attended at the three deepest scales) or "none" (image-only control).
        upsampling: "interp" (smp's nearest interpolation) or "transpose" (ConvTranspose2d).
        in_channels: image channels.
        decoder_channels: output channels of the 5 decoder blocks.
        place_prior: the text embedding ends with the text's place code (`text.places.text_input`,
            5 entries), which `fusion.PlacePrior` turns into maps for the decoder.
        shared_decoder: the decoder reads the image alone, once per image, and the text enters
            through the fusion into a light head (`fusion.SelectHead`) that picks from the
            decoder's pixel features: reading one image with many texts costs little more than
            with one. Otherwise (the U-Net as first designed) the decoder reads the fused features.
    """

    def __init__(self, encoder_name: str = "resnet34", text_dim: int = 512,
                 fusion: str = "concat", upsampling: str = "interp", in_channels: int = 1,
                 decoder_channels: Sequence[int] = (256, 128, 64, 32, 16), token_dim: int = 0,
                 place_prior: bool = False, shared_decoder: bool = False):
        super().__init__()
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {upsampling!r}")
        self._config = {"encoder_name": encoder_name, "text_dim": int(text_dim),
                        "fusion": fusion, "upsampling": upsampling,
                        "in_channels": int(in_channels),
                        "decoder_channels": [int(c) for c in decoder_channels],
                        "token_dim": int(token_dim), "place_prior": bool(place_prior),
                        "shared_decoder": bool(shared_decoder)}
        self.encoder_frozen = False
        self.encoder = build_encoder(encoder_name, in_channels)
        channels = list(self.encoder.out_channels)
        self.fusion = build_fusion(fusion, channels, text_dim, token_dim)
        self.select = SelectHead(channels, decoder_channels[-1]) if shared_decoder else None
        # with the shared decoder, the prior's maps go where the text is read: the head's maps
        prior_levels = self.select.levels if shared_decoder else None
        self.place_prior = PlacePrior(channels, prior_levels) if place_prior else None
        self.decoder = UnetDecoder(encoder_channels=channels, decoder_channels=decoder_channels,
                                   n_blocks=ENCODER_DEPTH, use_norm="batchnorm",
                                   interpolation_mode="nearest")
        if upsampling == "transpose":
            block_in = [channels[-1], *decoder_channels[:-1]]
            self.decoder.blocks = nn.ModuleList(
                TransposeUpsample(block, c) for block, c in zip(self.decoder.blocks, block_in))
        self.segmentation_head = (None if shared_decoder else
                                  SegmentationHead(decoder_channels[-1], 1, kernel_size=3))
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.register_buffer("text_std", torch.ones(text_dim))
        initialize_decoder(self.decoder)
        if self.select is None:
            initialize_head(self.segmentation_head)
        else:
            initialize_decoder(self.select)
        if isinstance(self.fusion, ConcatFusion):
            initialize_decoder(self.fusion)

    def config(self) -> dict:
        """Plain values that rebuild this model: `MultimodalUnet(**model.config())`."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    def set_text_norm(self, mean: Tensor, std: Tensor) -> None:
        """Standardise text embeddings with these statistics [D] of the training texts.

        Reports' embeddings share a large common component; standardising makes the differences
        that carry the place visible to the fusion.
        """
        dim = self.text_mean.shape[0]
        if mean.shape != (dim,) or std.shape != (dim,):
            raise ValueError(f"text mean and std must have shape [{dim}], got "
                             f"{list(mean.shape)} and {list(std.shape)}")
        self.text_mean.copy_(mean)
        self.text_std.copy_(std.clamp_min(1e-6))  # constant dimensions would divide by zero

    def train(self, mode: bool = True) -> MultimodalUnet:
        super().train(mode)
        if self.encoder_frozen:  # frozen BatchNorm keeps its running statistics
            self.encoder.eval()
        return self

    @property
    def input_dim(self) -> int:
        """Width of the `text_emb` the model reads: the text embedding, then the place code."""
        return text_input_dim(self._config["text_dim"], self.place_prior is not None)

    @property
    def needs_tokens(self) -> bool:
        """Whether `forward` needs the text's token states (the fusion attends to them)."""
        return self._config["fusion"] in TOKEN_FUSIONS

    def forward(self, images: Tensor, text_emb: Tensor, text_tokens: Tensor | None = None,
                token_mask: Tensor | None = None) -> Tensor:
        """images float [B, C, H, W] (H, W multiples of 32), text_emb float [B, input_dim], and for
        `needs_tokens` text_tokens float [B, L, token_dim] with token_mask bool [B, L] ->
        mask logits float [B, 1, H, W]."""
        self._check_inputs(images, text_emb)
        return self.decode(self.encode_image(images), text_emb, text_tokens, token_mask)

    def encode_image(self, images: Tensor) -> list[Tensor]:
        """The text-independent half of `forward`: images float [B, C, H, W] (H, W multiples of
        32) -> the encoder's 6 feature maps, shallow to deep ([B, C_i, H / 2^i, W / 2^i]).

        Encode an image once and `decode` it with many texts: `decode(encode_image(x), e, ...)`
        equals `forward(x, e, ...)`."""
        self._check_inputs(images)
        return self.encoder(images)

    def decode(self, features: Sequence[Tensor], text_emb: Tensor, text_tokens: Tensor | None = None,
               token_mask: Tensor | None = None) -> Tensor:
        """The text-dependent half of `forward`: fusion -> decoder -> head (with
        `shared_decoder`, the decoder runs once per image, before the texts).

        Args:
            features: `encode_image`'s feature maps of B images, or of one image (B = 1), which
                is then read with every text (expanded, not copied).
            text_emb: float [N, input_dim], N = B or any N when B = 1.
            text_tokens, token_mask: float [N, L, token_dim] and bool [N, L] (`needs_tokens`).

        Returns:
            Mask logits float [N, 1, H, W].
        """
        n, batch = text_emb.shape[0], features[0].shape[0]
        if text_emb.ndim != 2 or text_emb.shape[1] != self.input_dim:
            raise ValueError(f"text_emb must have shape [N, {self.input_dim}], got "
                             f"{list(text_emb.shape)}: use the text encoder the model was built for")
        pixels = self.decoder(features) if self.select is not None else None  # text-free
        if batch != n:
            if batch != 1:
                raise ValueError(f"features of {batch} images cannot be read with {n} texts: give "
                                 "one text per image, or the features of one image")
            features = [f.expand(n, *f.shape[1:]) for f in features]
        text, code = (x.float() for x in split_text_input(text_emb, self._config["text_dim"]))
        text = (text - self.text_mean) / self.text_std
        features = self.fusion(list(features), text, text_tokens, token_mask)
        if self.place_prior is not None:
            features = self.place_prior(features, code)
        if self.select is not None:
            logits = self.select(pixels, features)
        else:
            logits = self.segmentation_head(self.decoder(features))
        return logits if self.place_prior is None else self.place_prior.logits(logits, code)

    def _check_inputs(self, images: Tensor, text_emb: Tensor | None = None) -> None:
        cfg = self._config
        if images.ndim != 4 or images.shape[1] != cfg["in_channels"]:
            raise ValueError(f"images must have shape [B, {cfg['in_channels']}, H, W], got "
                             f"{list(images.shape)}")
        height, width = images.shape[2:]
        if height % SIZE_DIVISOR or width % SIZE_DIVISOR:
            raise ValueError(f"image height and width must be multiples of {SIZE_DIVISOR}, got "
                             f"{height}x{width}: resize the images (the image_size setting)")
        if text_emb is not None and text_emb.shape != (images.shape[0], self.input_dim):
            raise ValueError(f"text_emb must have shape [{images.shape[0]}, {self.input_dim}] "
                             f"(one embedding per image), got {list(text_emb.shape)}: use the "
                             "text encoder the model was built for")


def from_config(cfg: dict) -> MultimodalUnet:
    """Rebuild a `MultimodalUnet` from `model.config()` (weights not included)."""
    return MultimodalUnet(**cfg)


def freeze_encoder(model: MultimodalUnet, frozen: bool) -> None:
    """Stop (or restart) training the image encoder; while frozen its BatchNorm stays in eval
    mode, also after `model.train()`."""
    model.encoder_frozen = frozen
    model.encoder.requires_grad_(not frozen)
    model.train(model.training)


@torch.no_grad()
def predict_arrays(model: nn.Module, images: np.ndarray, text_emb: Tensor, device: torch.device,
                   batch_size: int = 16, tokens: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Probabilities of `model` for uint8 images [N, S, S] and text embeddings [N, D] (with the
    token states [N, L, H] and mask [N, L] for a model that `needs_tokens`).

    Returns float32 [N, 1, S, S] on the CPU. The model is left in eval mode.
    """
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        x = normalize(torch.from_numpy(np.array(images[part]))[:, None])
        extra = [t[part].to(device) for t in tokens] if tokens is not None else []
        out.append(torch.sigmoid(model(x.to(device), text_emb[part].to(device), *extra).float()).cpu())
    return torch.cat(out) if out else torch.zeros(0, 1, *images.shape[1:])
