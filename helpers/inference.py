"""Inference: `best_model.pth` -> probability map for (image, text), and the Phase-1 autoencoder's
reconstructions. No training code needed."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import CheckpointError, load_checkpoint
from .config import PretrainConfig, pick_device
from .datasets import normalize
from .io import gray_image, load_gray
from .layout import LAST_FILE
from .losses import hide_patches, scaled_patch
from .model import build_autoencoder, from_config, predict_arrays
from .reader import ReportReader
from .record import ModelRecord
from .sentences import SentenceSelection
from .text import EmbeddingCache, load_text_encoder

ImageLike = str | Path | Image.Image | np.ndarray


def to_gray(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array (8- or 16-bit, float, grayscale, RGB or RGBA) -> uint8 [H, W],
    converted exactly as the training images were (`helpers.io.gray_image`)."""
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
                 device: torch.device, info: dict | None = None, record: ModelRecord | None = None):
        self.model = model.eval().to(device)
        self.text_encoder = text_encoder
        self.image_size = image_size
        self.threshold = threshold
        self.device = device
        self.info = info or {}  # the checkpoint's config, epoch and metrics (`ModelRecord`)
        self.record = record
        self.text_mode = self.info.get("text_mode", "raw")  # what the training texts went through
        self.reader = ReportReader(self.text_mode)  # reads a report as training did
        self.embeddings = EmbeddingCache(text_encoder, with_tokens=model.needs_tokens)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        text_model: str | None = None, text_cache_dir: str | Path | None = None
                        ) -> "Segmenter":
        """Load `best_model.pth` and the text encoder it names (or `text_model` instead)."""
        record = ModelRecord.load(path)
        device = pick_device("auto" if device is None else str(device))
        model = from_config(record.model_config)
        model.load_state_dict(record.state_dict)
        encoder = load_text_encoder(text_model or record.text_model, device=device,
                                    cache_dir=text_cache_dir)
        if encoder.dim != record.text_dim:
            raise CheckpointError(f"{path} was trained with {record.text_dim}-d text embeddings "
                                  f"({record.text_model}), but {encoder.name} gives {encoder.dim}.")
        info = {"text_model": encoder.name, "text_model_is_tiny": encoder.is_tiny,
                "epoch": record.epoch, "metrics": record.metrics, **record.config()}
        return cls(model, encoder, record.image_size, float(record.threshold), device, info, record)

    def model_text(self, text: str) -> str:
        """The text as the model reads it (`text_mode` "positive": the positive sentences only)."""
        return self.reader.model_text(text)

    def sentences(self, text: str) -> SentenceSelection:
        """Which sentences of `text` the model is given (kept) and which it is not (dropped)."""
        return self.reader.sentences(text)

    def predict_arrays(self, images: np.ndarray, texts: Sequence[str]) -> torch.Tensor:
        """Probabilities float32 [N, 1, S, S] for uint8 images [N, S, S] at the model's size."""
        prepared = [self.model_text(t) for t in texts]
        tokens = self.embeddings.tokens(prepared) if self.model.needs_tokens else None
        return predict_arrays(self.model, images, self.embeddings.get(prepared), self.device,
                              tokens=tokens)

    def predict_batch(self, images: Sequence[ImageLike], texts: Sequence[str]) -> list[np.ndarray]:
        """Probability maps, float32 [H, W] at each input image's own resolution."""
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts")
        grays = [to_gray(im) for im in images]
        small = np.stack([gray_image(Image.fromarray(g), self.image_size) for g in grays])
        probs = self.predict_arrays(small, texts)
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
        return (f"fusion={self.info.get('model', {}).get('fusion')}, text_mode={self.text_mode}, "
                f"image size {self.image_size}, threshold {self.threshold:.2f}, "
                f"text encoder {self.info.get('text_model')}{tiny}")


def reconstruct_examples(encoder_path: str | Path, images: np.ndarray,
                         cfg: PretrainConfig) -> dict[str, np.ndarray | None]:
    """Inputs, masked inputs (None for the plain objective) and reconstructions of the final
    autoencoder, saved in `last.pth` next to `encoder_path` (for the Phase-1 figure).
    images: uint8 [N, S, S] -> float arrays [N, S, S] in the model's [-1, 1] scale."""
    state = load_checkpoint(Path(encoder_path).with_name(LAST_FILE))
    model = build_autoencoder(cfg.encoder)
    model.load_state_dict(state["model"])
    model.eval()
    x = normalize(torch.from_numpy(np.array(images))[:, None])
    masked = None
    with torch.no_grad():
        if cfg.objective == "masked":
            gen = torch.Generator().manual_seed(cfg.seed)
            patch = scaled_patch(cfg.patch_size, cfg.image_size)
            x_in, _ = hide_patches(x, patch, cfg.mask_ratio, generator=gen)
            masked = x_in[:, 0].numpy()
        else:
            x_in = x
        out = model(x_in)[:, 0].numpy()
    return {"inputs": x[:, 0].numpy(), "masked": masked, "outputs": out}
