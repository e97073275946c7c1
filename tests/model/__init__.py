"""What the tests of helpers/model/ share: a small U-Net and its inputs."""
from __future__ import annotations

import torch

from helpers.model.unet import MultimodalUnet

D = 16
T = 12  # token width
ENCODER = "resnet18"


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
