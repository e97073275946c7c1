"""Text fusions: how the text embedding enters the U-Net.

A fusion takes the encoder's feature maps (a list, shallow to deep), the standardised text
embedding [B, D] and, for the fusions that attend, the token states [B, L, H] with their mask
[B, L] (True on real tokens), and returns the feature maps the decoder reads. New fusions start as the identity
(or close to it) so that a Phase-1 U-Net starts undisturbed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.anatomy import image_x_sign
from ..text.places import PLACE_CODE

FUSIONS = ("concat", "film", "film_multi", "cross_attn", "none")
TOKEN_FUSIONS = ("cross_attn",)  # fusions that read the token states, not only the pooled text


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

    def forward(self, features: list[Tensor], text: Tensor, tokens: Tensor | None = None,
                token_mask: Tensor | None = None) -> list[Tensor]:
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

    def forward(self, features: list[Tensor], text: Tensor, tokens: Tensor | None = None,
                token_mask: Tensor | None = None) -> list[Tensor]:
        features = list(features)
        for level, film in zip(self.levels, self.films):
            features[level] = film(features[level], text)
        return features


class NoFusion(nn.Module):
    """Image-only baseline: the text is ignored."""

    def forward(self, features: list[Tensor], text: Tensor, tokens: Tensor | None = None,
                token_mask: Tensor | None = None) -> list[Tensor]:
        return features


class CrossAttention(nn.Module):
    """Every image position (a query, with its x/y coordinates) attends to the text tokens (keys
    and values), as in GuideDecoder / LViT; the result is added back through a zero-initialised
    1x1 convolution, so the block starts as the identity.

    x float [B, C, H, W], tokens float [B, L, T], token_mask bool [B, L] -> float [B, C, H, W].
    """

    def __init__(self, channels: int, token_dim: int, dim: int = 128, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.query = nn.Sequential(nn.GroupNorm(1, channels), nn.Conv2d(channels, dim, 1))
        self.position = nn.Conv2d(2, dim, 1)
        self.token_norm = nn.LayerNorm(token_dim)
        self.key, self.value = nn.Linear(token_dim, dim), nn.Linear(token_dim, dim)
        self.out = nn.Conv2d(dim, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _heads(self, y: Tensor) -> Tensor:
        """[B, N, dim] -> [B, heads, N, dim / heads]."""
        return y.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: Tensor, tokens: Tensor, token_mask: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = (self.query(x) + self.position(coordinate_maps(x))).flatten(2).transpose(1, 2)
        t = self.token_norm(tokens.to(q.dtype))
        attended = F.scaled_dot_product_attention(
            self._heads(q), self._heads(self.key(t)), self._heads(self.value(t)),
            attn_mask=token_mask[:, None, None, :])  # [B, heads, HW, dim / heads]
        attended = attended.transpose(1, 2).flatten(2)  # [B, HW, dim]
        return x + self.out(attended.transpose(1, 2).reshape(b, -1, h, w))


class CrossAttentionFusion(nn.Module):
    """`CrossAttention` on the encoder features at `levels` (the deeper ones: few positions)."""

    def __init__(self, channels: Sequence[int], token_dim: int, levels: Sequence[int]):
        super().__init__()
        self.levels = list(levels)
        self.blocks = nn.ModuleList(CrossAttention(channels[i], token_dim) for i in self.levels)

    def forward(self, features: list[Tensor], text: Tensor, tokens: Tensor | None = None,
                token_mask: Tensor | None = None) -> list[Tensor]:
        if tokens is None or token_mask is None:
            raise ValueError("the cross_attn fusion needs the text's token states and mask")
        features = list(features)
        for level, block in zip(self.levels, self.blocks):
            features[level] = block(features[level], tokens, token_mask)
        return features


class PlacePrior(nn.Module):
    """A rule-based place prior from the text's place words, given to the decoder.

    The text's place code (float [B, 5], `text.places.place_code`: the patient's right and
    left, the upper, middle and lower lung) becomes six coarse maps at each scale: one per named
    place (the patient's right is the image's left half; upper, middle and lower are soft
    horizontal bands) and their product, the region the text points at. Each map set is added to
    the feature map the decoder reads at that scale through a zero-initialised 1x1 convolution,
    and the region is added to the mask logits with a zero-initialised gain: the prior starts as
    the identity and training decides how much it counts. It tells the decoder where the words
    point, not what lies there: the image still decides what is marked.
    """

    n_maps = len(PLACE_CODE) + 1

    def __init__(self, channels: Sequence[int], levels: Sequence[int] | None = None):
        """levels: indices of the feature maps that get the maps (default: all but the input)."""
        super().__init__()
        self.levels = list(range(1, len(channels)) if levels is None else levels)
        self.convs = nn.ModuleList(nn.Conv2d(self.n_maps, channels[i], 1) for i in self.levels)
        for conv in self.convs:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.gain = nn.Parameter(torch.zeros(1))

    @staticmethod
    def maps(code: Tensor, like: Tensor) -> Tensor:
        """code float [B, 5] (`PLACE_CODE`: right, left, upper, middle, lower) -> float
        [B, 6, H, W] at `like`'s size: the five named places and their region (0 everywhere for a
        text that names no place)."""
        x, y = coordinate_maps(like[:, :1]).to(code.dtype).unbind(1)  # [B, H, W] each, in [-1, 1]
        right = torch.sigmoid(image_x_sign("right") * x / 0.08)  # the image's left half
        spatial = torch.stack([right, 1 - right, torch.sigmoid((-0.1 - y) / 0.1),
                               torch.exp(-(y / 0.3) ** 2), torch.sigmoid((y - 0.1) / 0.1)], 1)
        named = code[:, :, None, None] * spatial  # [B, 5, H, W]
        sides, levels = code[:, :2].amax(1), code[:, 2:].amax(1)
        side_part = torch.where(sides[:, None, None] > 0, named[:, :2].sum(1).clamp(max=1), 1.0)
        level_part = torch.where(levels[:, None, None] > 0, named[:, 2:].amax(1), 1.0)
        region = side_part * level_part * torch.maximum(sides, levels)[:, None, None]
        return torch.cat([named, region[:, None]], 1).to(like.dtype)

    def forward(self, features: list[Tensor], code: Tensor) -> list[Tensor]:
        """features: the encoder's maps, shallow to deep; those at `levels` get the maps."""
        out = list(features)
        for level, conv in zip(self.levels, self.convs):
            out[level] = out[level] + conv(self.maps(code, out[level]))
        return out

    def logits(self, logits: Tensor, code: Tensor) -> Tensor:
        """Mask logits [B, 1, H, W] plus the gain times the region (-1 outside, +1 inside)."""
        region = self.maps(code, logits)[:, -1:]
        named = code.amax(1)[:, None, None, None].to(logits.dtype)
        return logits + self.gain.to(logits.dtype) * (2 * region - 1) * named


class SelectHead(nn.Module):
    """The text's part of a U-Net whose decoder is shared by all texts of an image.

    The decoder reads the image alone, once per image, and gives pixel features P float
    [B, C, H, W]. Per text, only this head runs: the deepest feature maps that the text has
    read through the fusion (strides 8, 16 and 32) are merged top-down, as in a feature pyramid,
    into a coarse map at stride 8 that holds, at each place, a query of C weights and a bias. Upsampled, the
    query's dot product with P plus the bias is the mask logit. The coarse map says which
    finding and where (the text), P draws its outline (the image). At 256 px a text costs a few
    per cent of a decoder pass, so a report's sentences cost little more than the report.

    pixels float [B, C, H, W] (B = 1 for one image read with N texts), features: the fused maps,
    shallow to deep, of N texts -> mask logits float [N, 1, H, W].
    """

    def __init__(self, channels: Sequence[int], pixel_channels: int, width: int = 64, depth: int = 3):
        super().__init__()
        self.levels = list(range(len(channels) - depth, len(channels)))
        self.lateral = nn.ModuleList(nn.Conv2d(channels[i], width, 1) for i in self.levels)
        self.mix = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.query = nn.Conv2d(width, pixel_channels + 1, 1)

    def forward(self, pixels: Tensor, features: Sequence[Tensor]) -> Tensor:
        coarse = None
        for level, lateral in reversed(list(zip(self.levels, self.lateral))):
            x = lateral(features[level])
            coarse = x if coarse is None else x + F.interpolate(coarse, size=x.shape[2:], mode="nearest")
        query = F.interpolate(self.query(self.mix(coarse)), size=pixels.shape[2:], mode="bilinear",
                              align_corners=False)
        return (query[:, :-1] * pixels).sum(1, keepdim=True) + query[:, -1:]


def build_fusion(fusion: str, channels: Sequence[int], text_dim: int,
                 token_dim: int = 0) -> nn.Module:
    """`channels`: the encoder's out_channels, e.g. (1, 64, 64, 128, 256, 512) for resnet34;
    `token_dim`: width of the text's token states (fusions in `TOKEN_FUSIONS`)."""
    if fusion == "concat":
        return ConcatFusion(channels[-1], text_dim)
    if fusion == "film":
        return FiLMFusion(channels, text_dim, levels=[len(channels) - 1])
    if fusion == "film_multi":
        # every map the decoder reads: the skips at all scales and the bottleneck (not the input)
        return FiLMFusion(channels, text_dim, levels=range(1, len(channels)))
    if fusion == "cross_attn":
        if token_dim < 1:
            raise ValueError("the cross_attn fusion needs token_dim (the text model's hidden size)")
        # strides 8, 16 and 32: where a lung zone spans a few positions
        return CrossAttentionFusion(channels, token_dim, levels=range(len(channels) - 3, len(channels)))
    if fusion == "none":
        return NoFusion()
    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")

