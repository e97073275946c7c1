"""File-name rules: the dataset layout, the files of a run, and where the tiny text model lives.

The dataset layout is the Indiana University / OpenI collection as published on Kaggle:
`images/images_normalized/*.png`, `indiana_reports.csv`, `indiana_projections.csv`, optionally
`masked/*` (masks named after their images), `masks.csv` (`mask, image, text` overrides) and
`patient_splits.csv` (`uid, split`: a split fixed by the dataset, e.g. the demo's held-out phrasings).
Every module that names a file takes the name from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = REPO_ROOT / "data"
RUNS_ROOT = REPO_ROOT / "runs"
TEXT_MODELS_DIR = DATA_ROOT / "text-models"  # the tiny offline text model, shared by all runs


REPORTS_CSV = "indiana_reports.csv"
PROJECTIONS_CSV = "indiana_projections.csv"
IMAGES_DIR = "images/images_normalized"
MASKS_DIR = "masked"
MASKS_CSV = "masks.csv"
PATIENT_SPLITS_CSV = "patient_splits.csv"  # optional: `uid, split` fixes the split by patient
SPLITS = ("train", "val", "test")
LAYOUT_HELP = ("a dataset root holds images/images_normalized/*.png, indiana_reports.csv and "
               "indiana_projections.csv (optionally masked/); see data/README.md")
MASKS_HELP = ("the hand-drawn masks are not part of the Kaggle download: set MASKS_SOURCE in notebook "
              "01 (command line: --masks) to a folder, a .zip, a Drive path or a Drive link holding them")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


class DatasetError(ValueError):
    """Bad or missing data; the message names the file or folder and says what to do."""


def missing_parts(folder: Path) -> list[str]:
    """The parts of the layout that `folder` lacks (empty for a dataset root)."""
    parts = {REPORTS_CSV: (folder / REPORTS_CSV).is_file(),
             PROJECTIONS_CSV: (folder / PROJECTIONS_CSV).is_file(),
             IMAGES_DIR + "/": (folder / IMAGES_DIR).is_dir()}
    return [name for name, present in parts.items() if not present]


def find_root(folder: str | Path, origin: str | Path | None = None) -> Path:
    """The dataset root: `folder` itself or the first of its sub-folders (e.g. the extra top folder
    of a zip) that has the layout. Raises DatasetError listing what is missing otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{origin or folder}: not found; pass the dataset folder")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    candidates = [folder] + subfolders
    for candidate in candidates:
        if not missing_parts(candidate):
            return candidate
    closest = min(candidates, key=lambda c: len(missing_parts(c)))
    raise DatasetError(f"{origin or folder}: not a dataset; missing {', '.join(missing_parts(closest))} "
                       f"in {closest}. {LAYOUT_HELP}")


# Files of a run
ENCODER_FILE = "my_pretrained_encoder.pth"  # Phase 1: the encoder of the best epoch
BEST_FILE = "best_model.pth"  # Phase 2: the model of the best epoch, with its threshold
LAST_FILE = "last.pth"  # the state of the last finished epoch, for resuming
PREVIOUS_LAST_FILE = "last.prev.pth"  # a `last.pth` written with other settings, kept
SPLITS_FILE = "splits.csv"
RUN_SETTINGS_FILE = "run.json"  # data source, masks source and mode, written by notebook 01
NOTEBOOKS_STATE_FILE = "notebooks.json"  # the notebooks the headless runner finished
TEXT_EMBEDDINGS_FILE = "text_embeddings.pt"
EVALUATION_FILE = "evaluation.json"  # a checkpoint's measured figures, beside it (`evaluation.scores`)
EXPORT_DIR = "model"  # the run's exported model, the folder a user shares

# Files of an exported model (`Segmenter.save_pretrained`), named as the model hub's libraries name them
MODEL_CONFIG_FILE = "config.json"
MODEL_WEIGHTS_FILE = "model.safetensors"
MODEL_CARD_FILE = "README.md"
MODEL_TEXT_ENCODER_DIR = "text_encoder"  # a text encoder given as a local folder, copied


def history_file(best_name: str) -> str:
    """The per-epoch history CSV written next to a checkpoint, e.g. `history_best_model.csv`."""
    return f"history_{Path(best_name).stem}.csv"


@dataclass
class RunPaths:
    """The files of one run under `root` (default `runs/<mode>/`)."""

    root: Path

    @property
    def splits(self) -> Path:
        return self.root / SPLITS_FILE

    @property
    def settings(self) -> Path:
        """`run.json`: what notebook 01 (or `prepare --data`) was given, read by the others."""
        return self.root / RUN_SETTINGS_FILE

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def dataset(self) -> Path:
        """The catalog of the data (CSVs and the paired masks) that notebook 01 leaves for 02-04."""
        return self.root / "dataset"

    def phase1(self, objective: str, encoder_weights: str | None = None) -> Path:
        """`phase1/<objective>`; a Phase 1 that starts from ImageNet weights (`encoder_weights`
        set) lives beside it in `phase1/<objective>-imagenet`."""
        return self.root / "phase1" / (objective + ("-imagenet" if encoder_weights else ""))

    def phase1_encoder(self, objective: str, encoder_weights: str | None = None) -> Path:
        return self.phase1(objective, encoder_weights) / ENCODER_FILE

    def phase1_encoders(self) -> dict[str, str]:
        """The Phase-1 encoders trained so far, by objective (for the ablations): `masked`,
        `reconstruct`, and `masked-imagenet` etc. for those that started from ImageNet weights."""
        found = {o + tag: self.phase1_encoder(o, tag or None) for tag in ("", "-imagenet")
                 for o in ("masked", "reconstruct")}
        return {o: str(p) for o, p in found.items() if p.exists()}

    @property
    def phase2(self) -> Path:
        return self.root / "phase2"

    @property
    def best_model(self) -> Path:
        return self.phase2 / BEST_FILE

    @property
    def evaluation(self) -> Path:
        """The figures of `best_model.pth` on the splits it was scored on (`evaluation.json`)."""
        return self.phase2 / EVALUATION_FILE

    @property
    def model(self) -> Path:
        """The exported model (`python -m helpers export`): config, weights and model card."""
        return self.root / EXPORT_DIR

    @property
    def ablations(self) -> Path:
        return self.root / "ablations"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def text_models(self) -> Path:
        """Where the tiny offline text model is built (shared by all runs)."""
        return TEXT_MODELS_DIR
