"""Inference: `best_model.pth` -> probability map for (image, text). No training code needed."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import CheckpointError, load_checkpoint
from .config import pick_device
from .data import gray_image, load_gray
from .datasets import normalize

ImageLike = str | Path | Image.Image | np.ndarray


@torch.no_grad()
def predict_arrays(model: torch.nn.Module, images: np.ndarray, text_emb: torch.Tensor,
                   device: torch.device, batch_size: int = 16) -> torch.Tensor:
    """Probabilities of `model` for uint8 images [N, S, S] and text embeddings [N, D].

    Returns float32 [N, 1, S, S] on the CPU. The model is left in eval mode.
    """
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(np.array(images[start:start + batch_size]))[:, None])
        t = text_emb[start:start + batch_size].to(device)
        out.append(torch.sigmoid(model(x.to(device), t).float()).cpu())
    return torch.cat(out) if out else torch.zeros(0, 1, *images.shape[1:])


def to_gray(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array (8- or 16-bit, float, grayscale, RGB or RGBA) -> uint8 [H, W],
    converted exactly as the training images were (`helpers.data.gray_image`)."""
    if isinstance(image, (str, Path)):
        return load_gray(image)
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"expected an image [H, W] or [H, W, 3|4], got shape {image.shape}")
        image = Image.fromarray(image.astype(np.float32) if image.dtype == np.float64 else image)
    return gray_image(image)


class Segmenter:
    """A trained Phase-2 model and its text encoder.

    >>> seg = Segmenter.from_checkpoint("runs/demo/phase2/best_model.pth")
    >>> prob = seg.predict("image.png", "Nodule in the right upper lobe.")  # float32 [H, W]
    """

    def __init__(self, model: torch.nn.Module, text_encoder, image_size: int, threshold: float,
                 device: torch.device, info: dict | None = None):
        self.model = model.eval().to(device)
        self.text_encoder = text_encoder
        self.image_size = image_size
        self.threshold = threshold
        self.device = device
        self.info = info or {}
        self._embeddings: dict[str, torch.Tensor] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        text_model: str | None = None, text_cache_dir: str | Path | None = None
                        ) -> "Segmenter":
        """Load `best_model.pth` and the text encoder it names (or `text_model` instead)."""
        from .model import from_config
        from .text import load_text_encoder

        state = load_checkpoint(path)
        if "model" not in state or "config" not in state or "model" not in state["config"]:
            raise CheckpointError(f"{path} is not a Phase-2 checkpoint (best_model.pth from "
                                  "`python -m helpers finetune`).")
        cfg = state["config"]
        device = pick_device("auto" if device is None else str(device))
        model = from_config(cfg["model"])
        model.load_state_dict(state["model"])
        encoder = load_text_encoder(text_model or cfg["text_model"], device=device,
                                    cache_dir=text_cache_dir)
        if encoder.dim != cfg["text_dim"]:
            raise CheckpointError(f"{path} was trained with {cfg['text_dim']}-d text embeddings "
                                  f"({cfg['text_model']}), but {encoder.name} gives {encoder.dim}.")
        info = {"text_model": encoder.name, "text_model_is_tiny": encoder.is_tiny,
                "epoch": state.get("epoch"), "metrics": state.get("metrics", {}), **cfg}
        return cls(model, encoder, cfg["image_size"], float(cfg["threshold"]), device, info)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings [N, D], each unique text encoded once per Segmenter."""
        new = [t for t in dict.fromkeys(texts) if t not in self._embeddings]
        if new:
            self._embeddings.update(zip(new, self.text_encoder.encode(new)))
        return torch.stack([self._embeddings[t] for t in texts])

    def predict_batch(self, images: Sequence[ImageLike], texts: Sequence[str]) -> list[np.ndarray]:
        """Probability maps, float32 [H, W] at each input image's own resolution."""
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts")
        grays = [to_gray(im) for im in images]
        small = np.stack([gray_image(Image.fromarray(g), self.image_size) for g in grays])
        probs = predict_arrays(self.model, small, self.embed(list(texts)), self.device)
        return [F.interpolate(p[None], size=g.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
                for p, g in zip(probs, grays)]

    def predict(self, image: ImageLike, text: str) -> np.ndarray:
        """Probability map float32 [H, W] at the image's own resolution."""
        return self.predict_batch([image], [text])[0]

    def mask(self, image: ImageLike, text: str, threshold: float | None = None) -> np.ndarray:
        """Binary mask uint8 [H, W] in {0, 1}; the checkpoint's threshold unless one is given."""
        t = self.threshold if threshold is None else threshold
        return (self.predict(image, text) >= t).astype(np.uint8)

    def describe(self) -> str:
        tiny = " (tiny offline CLIP with random weights, not the real model)" \
            if self.info.get("text_model_is_tiny") else ""
        return (f"fusion={self.info.get('model', {}).get('fusion')}, image size {self.image_size}, "
                f"threshold {self.threshold:.2f}, text encoder {self.info.get('text_model')}{tiny}")
