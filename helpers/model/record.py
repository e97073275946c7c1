"""The checkpoint records: one class per file a training writes, its one writer and reader.

- `ModelRecord`: Phase 2's `best_model.pth`, written by training, read by inference;
- `EncoderRecord`: Phase 1's `my_pretrained_encoder.pth`, read by Phase 2 (`model.encoders.
  load_pretrained_encoder`), with the patients it saw (`check_encoder_patients`);
- `TrainingState`: `last.pth`, where a training stands, written and resumed by `training.loop`.

On disk each is a plain dict of tensors and Python values (`torch.load(..., weights_only=True)`
reads it, see `core.checkpoint`); `best_model.pth`:

    {"version": 2, "model": state dict, "epoch": int, "metrics": {"val_dice": ...},
     "config": {"model": MultimodalUnet.config(), "image_size", "text_model",
                "text_model_requested", "text_model_is_tiny", "text_dim", "text_mode",
                "text_report", "threshold", "finetune", "vocabulary",
                "patients": {split: [case key, ...]} (`data.split.split_keys`)}}

Version 2 adds "vocabulary" (`text.vocabulary.MaskVocabulary.to_dict`: which findings the masks
draw); a version-1 file has none and loads with {} (the fallback rule). Files written before the
records have no "version": they are version 1. A file of a newer version is refused with a message
that says to update the project.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..core.checkpoint import CheckpointError, checked_version, load_checkpoint, save_checkpoint
from ..core.layout import DatasetError

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
        version = _version(payload, path, _NOT_PHASE2)
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


def _version(payload: dict, path: str | Path, what: str) -> int:
    """The record version of a loaded file (1 when it has none: written before the records)."""
    return checked_version(payload.get("version", 1), VERSION, path, "record version", f"it {what}")


@dataclass
class EncoderRecord:
    """A Phase-1 encoder (`my_pretrained_encoder.pth`): its weights, how to rebuild it, the
    training settings and the IU patients it saw. On disk: `{"version", "encoder": state dict,
    "encoder_name", "in_channels", "config": {"phase": 1, PretrainConfig values, "n_images",
    "patients"}, "epoch", "val_loss"}`."""

    state_dict: dict[str, torch.Tensor]  # the encoder's weights (`encoder` on disk)
    encoder_name: str  # the smp encoder name, e.g. "resnet34"
    in_channels: int = 1
    config: dict = field(default_factory=dict)  # the Phase-1 settings and the patients seen
    epoch: int | None = None  # the kept epoch, from 1
    val_loss: float | None = None  # its validation loss
    version: int = VERSION

    @property
    def patients(self) -> list[int] | None:
        """The IU patients (`uid`) whose images Phase 1 saw; None when the file does not say."""
        return self.config.get("patients")

    def info(self) -> dict:
        """What the file says besides the weights, entries without a value left out (for logs)."""
        return {k: v for k, v in self.to_payload().items()
                if k not in ("encoder", "version") and v is not None and v != {}}

    def to_payload(self) -> dict:
        return {"version": self.version, "encoder": self.state_dict, "encoder_name": self.encoder_name,
                "in_channels": self.in_channels, "config": self.config, "epoch": self.epoch,
                "val_loss": self.val_loss}

    def save(self, path: str | Path) -> Path:
        """Write the record to `path` atomically (`checkpoint.save_checkpoint`)."""
        return save_checkpoint(self.to_payload(), path)

    @classmethod
    def from_payload(cls, payload: dict, path: str | Path = "the encoder checkpoint") -> "EncoderRecord":
        """The record in a loaded dict; `CheckpointError` naming `path` when it holds no encoder or
        is of a newer version."""
        if "encoder" not in payload:
            raise CheckpointError(f"{path} holds no 'encoder' weights: give the Phase-1 checkpoint "
                                  "(my_pretrained_encoder.pth).")
        return cls(payload["encoder"], payload.get("encoder_name"), payload.get("in_channels", 1),
                   dict(payload.get("config") or {}), payload.get("epoch"), payload.get("val_loss"),
                   _version(payload, path, "is not a Phase-1 encoder checkpoint"))

    @classmethod
    def load(cls, path: str | Path) -> "EncoderRecord":
        """Read `my_pretrained_encoder.pth` safely (`checkpoint.load_checkpoint`)."""
        return cls.from_payload(load_checkpoint(path), path)


def check_encoder_patients(path: str | Path | None, cases: pd.DataFrame, allow_seen: bool = False) -> None:
    """Refuse (DatasetError) the Phase-1 encoder at `path` when its record says that it saw
    validation or test patients of `cases` (`uid`, `split`), unless `allow_seen`; warn when it
    records nothing. No Phase-1 file (None, "imagenet", ImageNet-style weights, a missing file,
    which loading reports) has nothing to check."""
    if not path or not Path(path).is_file() or Path(path).suffix == ".safetensors":
        return
    payload = load_checkpoint(path)
    if "encoder" not in payload:
        return  # ImageNet-style weights (a plain state dict): no patient of this collection
    seen = EncoderRecord.from_payload(payload, path).patients
    held = set(cases.loc[cases["split"].isin(["val", "test"]), "uid"].astype(int))
    if seen is None:
        print(f"{path} does not record which patients Phase 1 saw: cannot check that it never saw "
              "a validation or test patient (pretrain again to record them)")
        return
    overlap = sorted(held & set(seen))
    if not overlap:
        return
    what = (f"Phase 1 ({path}) saw {len(overlap)} of the {len(held)} validation/test patients of "
            f"Phase 2 (uid {', '.join(map(str, overlap[:5]))}{', ...' if len(overlap) > 5 else ''})")
    if allow_seen:
        print(f"{what}: used anyway (allow_seen_patients=True); the test is then on patients the "
              "encoder learned from, and the checkpoint records it")
        return
    raise DatasetError(f"{what}, so the test would be on images the encoder learned from (Phase 1 "
                       "ran before the split existed, e.g. before the masks were added). Pretrain "
                       "again now that the split is fixed (notebook 02 / `python -m helpers "
                       "pretrain` leave those patients out), or set ALLOW_SEEN_PATIENTS = True "
                       "(`--allow-seen-patients`) to use this encoder on purpose.")


@dataclass
class TrainingState:
    """`last.pth`: a training after its last written epoch. While it runs, the full state to
    resume exactly (optimizer, scheduler, grad scaler, random states); once finished (`complete`),
    a slim file of the final weights and the history, from which a resumed run returns at once."""

    model: dict[str, torch.Tensor]  # the weights after `epoch`
    epoch: int  # epochs done
    history: list[dict]  # one row per epoch
    best_value: float  # the best value of the monitored metric so far
    best_epoch: int
    config: dict  # the task's settings: resuming with others starts a new run
    optimizer: dict | None = None  # state dicts, None in a finished run's file
    scheduler: dict | None = None
    scaler: dict | None = None
    rng: dict | None = None  # random states to restore, e.g. {"torch": ..., "loader": ...}
    complete: bool = False

    def to_payload(self) -> dict:
        kept = {"model": self.model, "epoch": self.epoch, "history": self.history,
                "best_value": self.best_value, "best_epoch": self.best_epoch, "config": self.config}
        if self.complete:
            return {"complete": True, **kept}
        return {**kept, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler, "rng": self.rng}

    def save(self, path: str | Path) -> Path:
        """Write the state to `path` atomically (`checkpoint.save_checkpoint`)."""
        return save_checkpoint(self.to_payload(), path)

    @classmethod
    def load(cls, path: str | Path) -> "TrainingState":
        """Read `last.pth`; `CheckpointError` naming it when it is another kind of file."""
        payload = load_checkpoint(path)
        missing = [k for k in ("model", "epoch", "history", "config") if k not in payload]
        if missing or not (payload.get("complete") or "optimizer" in payload):
            raise CheckpointError(f"{path} is not a training state (last.pth): it lacks "
                                  f"{', '.join(missing) or 'the optimizer state'}. Delete it to "
                                  "train from the start.")
        return cls(**{k: payload.get(k) for k in ("model", "epoch", "history", "best_value",
                                                  "best_epoch", "config", "optimizer", "scheduler",
                                                  "scaler", "rng")},
                   complete=bool(payload.get("complete")))
