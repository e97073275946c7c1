"""Inference: a trained model (`best_model.pth`, or an exported folder or hub id) -> probability
map for (image, text), and a whole report read sentence by sentence. No training code needed."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.checkpoint import CheckpointError
from ..core.layout import MODEL_TEXT_ENCODER_DIR
from ..core.settings import pick_device
from ..data.io import normalize
from ..data.io import gray_image, load_gray
from ..model.unet import from_config, predict_arrays
from ..text.reader import ReportReader
from ..model.record import ModelRecord
from ..text.sentences import POSITIVE, SentenceSelection
from ..text.encoders import EmbeddingCache, load_text_encoder
from . import pretrained
from .card import render_card
from .results import load_results, read_exported
from ..text.regions import near_peak, sentence_place
from ..text.vocabulary import MaskVocabulary

ImageLike = str | Path | Image.Image | np.ndarray
EMPTY_AREA = 0.005  # a prediction covering less of the image than this counts as empty
DECODE_BATCH = 16  # texts decoded together for one image


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


@dataclass
class SentenceMask:
    """Where the model puts one positive sentence of a report, the sentence read alone.

    `prob` is float32 [H, W] at the image's resolution; `mask` bool [H, W] the pixels at or above
    the threshold, or, for a sentence of a drawn finding (`drawn`: the masks' vocabulary) that
    leaves none, the pixels near the peak when the peak lies where the sentence's place words
    point (`regions.near_peak`; `low_confidence` then True); `area` the mask's share of the image;
    `confidence` the peak probability; `mean_in_mask` the mean probability inside the mask (NaN
    when it is empty); `located` False when the mask covers less than `EMPTY_AREA` of the image and
    is not a low-confidence one (the model does not find what the sentence describes)."""
    text: str
    prob: np.ndarray
    area: float
    confidence: float
    mean_in_mask: float
    located: bool
    drawn: bool = True  # the sentence describes a finding this dataset's masks draw
    low_confidence: bool = False
    mask: np.ndarray | None = None

    @classmethod
    def from_prob(cls, text: str, prob: np.ndarray, threshold: float, drawn: bool = True) -> "SentenceMask":
        inside, low = prob >= threshold, False
        if drawn and not inside.any() and (near := near_peak(prob, [sentence_place(text)])) is not None:
            inside, low = near, True
        area = float(inside.mean())
        return cls(text, prob, area, float(prob.max()),
                   float(prob[inside].mean()) if inside.any() else float("nan"), area >= EMPTY_AREA or low,
                   drawn, low, inside)


@dataclass
class ReportGrounding:
    """A whole report read sentence by sentence (`Segmenter.ground_report`).

    `labels`: every sentence of the report in order with its label ("positive", "negated",
    "normal"); `sentences`: one `SentenceMask` per positive sentence, in the same order; `dropped`:
    the other sentences with their label."""
    report: str
    threshold: float
    labels: list[tuple[str, str]]
    sentences: list[SentenceMask] = field(default_factory=list)

    @property
    def dropped(self) -> list[tuple[str, str]]:
        return [(text, label) for text, label in self.labels if label != POSITIVE]

    def at_threshold(self, threshold: float) -> "ReportGrounding":
        """The same masks cut at another threshold (area, located and mean_in_mask follow)."""
        return ReportGrounding(self.report, threshold, self.labels,
                               [SentenceMask.from_prob(m.text, m.prob, threshold, m.drawn) for m in self.sentences])

    @property
    def describes_finding(self) -> bool:
        """Whether the report has a positive sentence (something present to locate)."""
        return bool(self.sentences)

    def table(self) -> list[dict]:
        """One row per sentence in report order: index (1, 2, ... over the positive sentences;
        None for a dropped one), text, label, and for the positive ones located, area, confidence,
        mean_in_mask, drawn (by this dataset's masks) and low_confidence (plain values, JSON-ready)."""
        rows, masks = [], iter(self.sentences)
        for text, label in self.labels:
            row: dict = {"index": None, "text": text, "label": label}
            if label == POSITIVE:
                m = next(masks)
                row.update(index=len([r for r in rows if r["index"]]) + 1, located=m.located,
                           area=round(m.area, 6), confidence=round(m.confidence, 4),
                           mean_in_mask=None if np.isnan(m.mean_in_mask) else round(m.mean_in_mask, 4),
                           drawn=bool(m.drawn), low_confidence=bool(m.low_confidence))
            rows.append(row)
        return rows


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
        self.checkpoint: Path | None = None  # the best_model.pth it was loaded from, if any
        self.results: dict[str, dict] | None = None  # the figures an exported model carries
        self.text_mode = self.info.get("text_mode", "raw")  # what the training texts went through
        self.reader = ReportReader(self.text_mode)  # reads a report as training did
        self.vocabulary = MaskVocabulary.from_dict(self.info.get("vocabulary"))  # what masks draw
        self.embeddings = EmbeddingCache(text_encoder, with_tokens=model.needs_tokens,
                                         places=model.place_prior is not None,
                                         drawn=self.vocabulary.describes_drawn)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        text_model: str | None = None, text_cache_dir: str | Path | None = None
                        ) -> "Segmenter":
        """Load `best_model.pth` and the text encoder it names (or `text_model` instead)."""
        seg = cls.from_record(ModelRecord.load(path), device, text_model=text_model,
                              text_cache_dir=text_cache_dir, origin=path)
        seg.checkpoint = Path(path)
        return seg

    @classmethod
    def from_pretrained(cls, folder_or_id: str | Path, revision: str | None = None,
                        device: str | torch.device | None = None,
                        text_cache_dir: str | Path | None = None) -> "Segmenter":
        """Load an exported model (`save_pretrained`): a local folder, or a model hub id
        ("owner/name", at `revision`: a branch, tag or commit) fetched by `huggingface_hub`.
        Reads JSON and safetensors only; `CheckpointError` (`pretrained.PretrainedError`) for a folder
        that is not such a model or was written by a newer version of the project.

        >>> seg = Segmenter.from_pretrained("owner/name")
        """
        folder = pretrained.resolve(folder_or_id, revision)
        record, config = pretrained.read_folder(folder)
        text_model, text_revision = pretrained.text_model_of(folder, config)
        seg = cls.from_record(record, device, text_model=text_model, text_revision=text_revision,
                              text_cache_dir=text_cache_dir, origin=folder)
        copied = f"{MODEL_TEXT_ENCODER_DIR}/ (copied with the model)"
        seg.info.update(text_model=copied if config["text_encoder"].get("copied") else text_model,
                        license=config.get("license"))
        seg.results = read_exported(folder)
        return seg

    @classmethod
    def from_record(cls, record: ModelRecord, device: str | torch.device | None = None, *,
                    text_model: str | None = None, text_revision: str | None = None,
                    text_cache_dir: str | Path | None = None, origin: str | Path = "the model"
                    ) -> "Segmenter":
        """The model of `record` and the text encoder it names (or `text_model` instead)."""
        device = pick_device("auto" if device is None else str(device))
        model = from_config(record.model_config)
        model.load_state_dict(record.state_dict)
        encoder = load_text_encoder(text_model or record.text_model, device=device,
                                    cache_dir=text_cache_dir, revision=text_revision)
        if encoder.dim != record.text_dim:
            raise CheckpointError(f"{origin} was trained with {record.text_dim}-d text embeddings "
                                  f"({record.text_model}), but {encoder.name} gives {encoder.dim}.")
        info = {"text_model": encoder.name, "text_model_is_tiny": encoder.is_tiny,
                "epoch": record.epoch, "metrics": record.metrics, **record.config()}
        return cls(model, encoder, record.image_size, float(record.threshold), device, info, record)

    def save_pretrained(self, folder: str | Path, *, license: str = pretrained.DEFAULT_LICENSE,
                        results: dict[str, dict] | None = None, data: dict | None = None,
                        repo_id: str | None = None) -> Path:
        """Write the model as the model hub's libraries share one: `config.json`,
        `model.safetensors` (weights only) and the `README.md` model card, plus the text encoder
        when it is a local folder (copied; a hub name stays a name). See `inference.pretrained`.

        license: the model's licence (a hub licence id); results: the measured figures by split
        (default: the `evaluation.json` beside the checkpoint this was loaded from, or the figures
        the exported model carries); data: the run's `data_source` and `masks_source` (for the
        card); repo_id: the hub id it goes to (named in the card's loading lines)."""
        if self.record is None:
            raise CheckpointError("This Segmenter was built without its record: load it with "
                                  "`from_checkpoint` or `from_pretrained` to save it.")
        if results is None:
            results = load_results(self.checkpoint) if self.checkpoint is not None else self.results or {}
        record = dataclasses.replace(self.record, threshold=self.threshold)
        text = pretrained.text_encoder_source(self.text_encoder.name, self.text_encoder.commit)
        config = pretrained.model_config(record, text, license=license, is_tiny=self.text_encoder.is_tiny,
                                         dim=self.text_encoder.dim, max_length=self.text_encoder.max_length)
        return pretrained.write_folder(folder, config, self.model.state_dict(), text,
                                       render_card(config, results, data, repo_id), results)

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
        """Probability map float32 [H, W] at the image's own resolution (`locate` makes it a mask)."""
        return self.predict_batch([image], [text])[0]

    def locate(self, prob: np.ndarray, text: str, threshold: float | None = None) -> tuple[np.ndarray, bool]:
        """The mask of `text` from its probability map `prob` [H, W] (`predict`), and whether it is
        a low-confidence one: bool [H, W] at or above the threshold (the checkpoint's unless one
        is given); when that is empty and a positive sentence of `text` describes a finding the
        masks draw (`vocabulary`), the pixels near the peak if the peak lies where such a
        sentence's place words point, or one names no place (`regions.near_peak`). A swapped side
        or a normal report keeps its empty mask."""
        prob = np.asarray(prob)
        mask = prob >= (self.threshold if threshold is None else threshold)
        if mask.any():
            return mask, False
        drawn = [s for s, label in self.reader.labeled_sentences(text)
                 if label == POSITIVE and self.vocabulary.describes_drawn(s)]
        near = near_peak(prob, [sentence_place(s) for s in drawn])
        return (mask, False) if near is None else (near, True)

    def mask(self, image: ImageLike, text: str, threshold: float | None = None) -> np.ndarray:
        """Binary mask uint8 [H, W] in {0, 1} (`locate`); the checkpoint's threshold unless one is
        given."""
        return self.locate(self.predict(image, text), text, threshold)[0].astype(np.uint8)

    def predict_sentences(self, image: np.ndarray, texts: Sequence[str]) -> torch.Tensor:
        """One image, many texts: the image is encoded once and decoded with each text.

        image: uint8 [S, S] at the model's size -> probabilities float32 [N, 1, S, S] on the CPU,
        one per text (each text read alone, as `model_text` gives it)."""
        image = np.asarray(image)
        if image.shape != (self.image_size, self.image_size) or image.dtype != np.uint8:
            raise ValueError(f"expected one uint8 image [{self.image_size}, {self.image_size}], got "
                             f"{image.dtype} {list(image.shape)}")
        if not texts:
            return torch.zeros(0, 1, self.image_size, self.image_size)
        prepared = [self.model_text(t) for t in texts]
        emb = self.embeddings.get(prepared)
        tokens = self.embeddings.tokens(prepared) if self.model.needs_tokens else None
        self.model.eval()
        out = []
        with torch.no_grad():
            features = self.model.encode_image(normalize(torch.from_numpy(image)[None, None]).to(self.device))
            for start in range(0, len(prepared), DECODE_BATCH):
                part = slice(start, start + DECODE_BATCH)
                extra = [t[part].to(self.device) for t in tokens] if tokens is not None else []
                logits = self.model.decode(features, emb[part].to(self.device), *extra)
                out.append(torch.sigmoid(logits.float()).cpu())
        return torch.cat(out)

    def ground_report(self, image: ImageLike, report: str, threshold: float | None = None
                      ) -> ReportGrounding:
        """Read a whole report sentence by sentence: every positive sentence (the sentence filter,
        `helpers.sentences`) gets its own mask, the image encoded once; the negated and normal
        sentences are listed as dropped. Masks are at the image's own resolution. A sentence of a
        finding the masks draw (`vocabulary`) that leaves nothing above the threshold keeps the
        pixels near its peak, flagged `low_confidence` (see `SentenceMask`); one of a finding they
        do not draw is marked `drawn=False`.

        >>> g = seg.ground_report("image.png", "Mild cardiomegaly. No effusion. Left basal opacity.")
        >>> [(m.text, m.located, m.area) for m in g.sentences]
        """
        if not isinstance(report, str):
            raise ValueError(f"the report must be a text, got {type(report).__name__}")
        labels = self.reader.labeled_sentences(report)
        if not labels:
            raise ValueError("the report has no sentence: give its findings text")
        t = self.threshold if threshold is None else threshold
        positives = [text for text, label in labels if label == POSITIVE]
        drawn = [self.vocabulary.describes_drawn(text) for text in positives]
        gray = to_gray(image)
        small = gray_image(Image.fromarray(gray), self.image_size)
        probs = self.predict_sentences(small, positives)
        if len(positives):
            probs = F.interpolate(probs, size=gray.shape, mode="bilinear", align_corners=False)
        return ReportGrounding(report, t, labels, [SentenceMask.from_prob(text, p[0].numpy(), t, d)
                                                    for text, p, d in zip(positives, probs, drawn)])

    def describe(self) -> str:
        tiny = " (tiny offline CLIP with random weights, not the real model)" \
            if self.info.get("text_model_is_tiny") else ""
        model = self.info.get("model", {})
        prior = ", place prior" if model.get("place_prior") else ""
        prior += ", shared decoder" if model.get("shared_decoder") else ""
        return (f"fusion={model.get('fusion')}{prior}, text_mode={self.text_mode}, "
                f"image size {self.image_size}, threshold {self.threshold:.2f}, "
                f"text encoder {self.info.get('text_model')}{tiny}; {self.vocabulary.summary()}")
