"""Text fusions: how the text embedding enters the U-Net.

A fusion takes the encoder's feature maps (a list, shallow to deep) and the standardised text
embedding [B, D] and returns the feature maps the decoder reads. New fusions start as the identity
(or close to it) so that a Phase-1 U-Net starts undisturbed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

FUSIONS = ("concat", "film", "film_multi", "none")


def coordinate_maps(like: Tensor) -> Tensor:
    """[B, 2, H, W]: x and y of each position in [-1, 1], in `like`'s dtype and device."""
    b, _, h, w = like.shape
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))
    return grid[None].expand(b, -1, -1, -1)


class ConcatFusion(nn.Module):
    """The text embedding tiled over the deepest feature map, concatenated to it and fused back
    to its channels by Conv3x3 + BatchNorm + ReLU, which replaces the deepest feature.

    Two coordinate maps (x, y) are concatenated too: a convolution is translation-equivariant, so
    without them it can hardly tell *where* it is, and relating "right upper lobe" in the text to a
    place in the feature map is the whole point of the fusion.
    """

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + text_dim + 2, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, features: list[Tensor], text: Tensor) -> list[Tensor]:
        deepest = features[-1]
        tiled = text[:, :, None, None].expand(-1, -1, *deepest.shape[2:]).to(deepest.dtype)
        fused = self.fuse(torch.cat([deepest, tiled, coordinate_maps(deepest)], dim=1))
        return [*features[:-1], fused]


class FiLM(nn.Module):
    """Feature-wise modulation `x * (1 + dgamma(t)) + beta(t)`, zero-initialised to the identity
    so that a pre-trained U-Net starts undisturbed."""

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.proj = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        dgamma, beta = self.proj(text).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + dgamma) + beta


class FiLMFusion(nn.Module):
    """FiLM on the encoder features at `levels` (indices into the feature list)."""

    def __init__(self, channels: Sequence[int], text_dim: int, levels: Sequence[int]):
        super().__init__()
        self.levels = list(levels)
        self.films = nn.ModuleList(FiLM(channels[i], text_dim) for i in self.levels)

    def forward(self, features: list[Tensor], text: Tensor) -> list[Tensor]:
        features = list(features)
        for level, film in zip(self.levels, self.films):
            features[level] = film(features[level], text)
        return features


class NoFusion(nn.Module):
    """Image-only baseline: the text is ignored."""

    def forward(self, features: list[Tensor], text: Tensor) -> list[Tensor]:
        return features


def build_fusion(fusion: str, channels: Sequence[int], text_dim: int) -> nn.Module:
    """`channels`: the encoder's out_channels, e.g. (1, 64, 64, 128, 256, 512) for resnet34."""
    if fusion == "concat":
        return ConcatFusion(channels[-1], text_dim)
    if fusion == "film":
        return FiLMFusion(channels, text_dim, levels=[len(channels) - 1])
    if fusion == "film_multi":
        # every map the decoder reads: the skips at all scales and the bottleneck (not the input)
        return FiLMFusion(channels, text_dim, levels=range(1, len(channels)))
    if fusion == "none":
        return NoFusion()
    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")

