"""The Phase-2 checkpoint record: what `best_model.pth` holds, written by training, read by inference.

`ModelRecord` is the one owner of the file's format. On disk it is a plain dict of tensors and
Python values (`torch.load(..., weights_only=True)` reads it, see `helpers.checkpoint`):

    {"version": 2, "model": state dict, "epoch": int, "metrics": {"val_dice": ...},
     "config": {"model": MultimodalUnet.config(), "image_size", "text_model",
                "text_model_requested", "text_model_is_tiny", "text_dim", "text_mode",
                "text_report", "threshold", "finetune", "vocabulary",
                "patients": {split: [case key, ...]} (`data.split.split_keys`)}}

Version 2 adds "vocabulary" (`text.vocabulary.MaskVocabulary.to_dict`: which findings the masks
draw); a version-1 file has none and loads with {} (the fallback rule). Files written before the
record have no "version": they are version 1. A file of a newer version is refused with a message
that says to update the project.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

VERSION = 2  # the record layout this code writes and the newest it reads
# config entries a record cannot do without (the others have defaults)
REQUIRED = ("model", "image_size", "text_model", "text_dim", "threshold")
# the fields of the record kept in the file's "config" entry, beside "model"
CONFIG_FIELDS = ("image_size", "text_model", "text_model_requested", "text_model_is_tiny", "text_dim",
                 "text_mode", "text_report", "threshold", "finetune",
                 "patients", "vocabulary")
_NOT_PHASE2 = "is not a Phase-2 checkpoint (best_model.pth from `python -m helpers finetune`)"


@dataclass
class ModelRecord:
    """A trained Phase-2 model and how to use it: its weights, how to rebuild it, which text
    encoder and text mode it was trained with, the threshold chosen on validation, and the
    validation metrics of the kept epoch."""

    state_dict: dict[str, torch.Tensor]  # the model's weights (`model` on disk)
    model_config: dict  # plain values that rebuild the model: `model.from_config(model_config)`
    image_size: int  # side of the square input images, px
    text_model: str  # the text encoder used: a name or path, or the tiny CLIP when it fell back
    text_dim: int  # size of its sentence embeddings
    threshold: float = 0.5  # probability threshold of the mask (chosen on validation)
    text_model_requested: str | None = None  # the one the settings asked for
    text_model_is_tiny: bool = False  # the tiny offline CLIP with random weights
    text_mode: str = "raw"  # how a report becomes the model's text (`reader.ReportReader`)
    text_report: dict = field(default_factory=dict)  # `ReportReader.text_report`: truncation etc.
    finetune: dict = field(default_factory=dict)  # the training settings (FinetuneConfig values)
    vocabulary: dict = field(default_factory=dict)  # what the masks draw ({}: the fallback rule)
    epoch: int | None = None  # the kept epoch, from 1
    metrics: dict[str, float] = field(default_factory=dict)  # validation metrics of that epoch
    # the cases of each split (`split.split_keys`): which ones the model was trained on, chosen on and
    # tested on, so that scoring it later leaves its training patients out; empty when not recorded
    patients: dict[str, list[str]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # config entries this version does not know, kept
    version: int = VERSION

    def config(self) -> dict:
        """The file's "config" entry: plain values only."""
        return {"model": self.model_config, "image_size": self.image_size,
                "text_model": self.text_model, "text_model_requested": self.text_model_requested,
                "text_model_is_tiny": self.text_model_is_tiny, "text_dim": self.text_dim,
                "text_mode": self.text_mode, "text_report": self.text_report,
                "threshold": self.threshold, "finetune": self.finetune,
                "patients": self.patients, "vocabulary": self.vocabulary, **self.extra}

    def to_payload(self) -> dict:
        """The dict written to disk (see the module docstring)."""
        return {"version": self.version, "model": self.state_dict, "epoch": self.epoch,
                "metrics": self.metrics, "config": self.config()}

    def save(self, path: str | Path) -> Path:
        """Write the record to `path` atomically (`checkpoint.save_checkpoint`)."""
        return save_checkpoint(self.to_payload(), path)

    @classmethod
    def from_payload(cls, payload: dict, path: str | Path = "the checkpoint") -> "ModelRecord":
        """The record in a loaded checkpoint dict; `CheckpointError` naming `path` when it is
        another kind of checkpoint, lacks an entry, or is of a newer version."""
        if "encoder" in payload:
            raise CheckpointError(f"{path} is a Phase-1 encoder (my_pretrained_encoder.pth): it "
                                  f"{_NOT_PHASE2}.")
        if "optimizer" in payload or "complete" in payload:
            raise CheckpointError(f"{path} is a training state (last.pth): it {_NOT_PHASE2}; use "
                                  "best_model.pth in the same folder.")
        cfg = payload.get("config")
        if "model" not in payload or not isinstance(cfg, dict) or "model" not in cfg:
            raise CheckpointError(f"{path} {_NOT_PHASE2}.")
        version = payload.get("version", 1)  # files written before the record: version 1
        if not isinstance(version, int) or version < 1:
            raise CheckpointError(f"{path} has an invalid record version {version!r}: it "
                                  f"{_NOT_PHASE2}.")
        if version > VERSION:
            raise CheckpointError(f"{path} was written by a newer version of this project (record "
                                  f"version {version}; this one reads up to {VERSION}). Update the "
                                  "project (git pull) to load it.")
        missing = [key for key in REQUIRED if key not in cfg]
        if missing:
            raise CheckpointError(f"{path} lacks {', '.join(missing)} in its config: it {_NOT_PHASE2}.")
        return cls(state_dict=payload["model"], model_config=cfg["model"],
                   **{k: cfg[k] for k in CONFIG_FIELDS if k in cfg},
                   epoch=payload.get("epoch"), metrics=dict(payload.get("metrics") or {}),
                   extra={k: v for k, v in cfg.items() if k not in CONFIG_FIELDS and k != "model"},
                   version=version)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "ModelRecord":
        """Read `best_model.pth` safely (`checkpoint.load_checkpoint`). Raises `CheckpointError`
        for a missing, corrupt or unsafe file, a file that is not a Phase-2 checkpoint, or one
        written by a newer version."""
        return cls.from_payload(load_checkpoint(path, map_location), path)
