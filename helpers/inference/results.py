"""The measured figures of a checkpoint: `evaluation.json` beside it, written each time the model is
scored (`evaluation.scores.save_evaluation`), read by the model card (`inference.card`).

    {"version": 1, "checkpoint": "best_model.pth", "sha256": <hex digest of that file>,
     "results": {"test": summary, "test/shuffled": summary, ...}}

An exported model carries the same figures (`evaluation.json` in its folder, without the digest:
its weights are the ones scored), so that exporting it again keeps them.

A summary is kept under the split it was scored on (`summary["split"]`), and for the controls the
texts it was given ("test/shuffled"); scoring again replaces it. The digest ties the figures to the
weights: after the model is trained again they are stale, and `load_results` ignores them and says
so. Values are plain JSON (NaN written as null).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..core.layout import EVALUATION_FILE

VERSION = 1


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plain(value):
    """`value` with numpy scalars and arrays as Python values and NaN / inf as None (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_key(summary: dict) -> str:
    """Where a summary is kept: its split ("test"), with the texts of a control ("test/shuffled")."""
    split = summary.get("split") or "unnamed"
    texts = summary.get("texts", "report")
    return split if texts == "report" else f"{split}/{texts}"


def evaluation_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_name(EVALUATION_FILE)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        warnings.warn(f"{path} cannot be read ({err}): its figures are ignored; score the model again "
                      "(`python -m helpers evaluate`) to write it anew.", stacklevel=3)
        return {}
    return data if isinstance(data, dict) else {}


def save_results(checkpoint: str | Path, summary: dict) -> Path:
    """Keep `summary` (plain values, nested dicts allowed) in the `evaluation.json` beside
    `checkpoint`, under `results_key(summary)`; the figures of another model in that file are
    dropped. Written to a temporary file and renamed. Returns the file's path."""
    checkpoint = Path(checkpoint)
    path, digest = evaluation_path(checkpoint), file_digest(checkpoint)
    data = _read(path) if path.is_file() else {}
    results = data.get("results", {}) if data.get("sha256") == digest else {}
    results[results_key(summary)] = plain(summary)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"version": VERSION, "checkpoint": checkpoint.name, "sha256": digest,
                               "results": results}, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_results(checkpoint: str | Path) -> dict[str, dict]:
    """The summaries kept for `checkpoint` by key ("test", ...); empty when it was never scored,
    and (with a warning) when the file is of another version or of other weights."""
    path = evaluation_path(checkpoint)
    if not path.is_file():
        return {}
    data = _read(path)
    if data.get("version") != VERSION or not isinstance(data.get("results"), dict):
        warnings.warn(f"{path} is not an evaluation file of this version: its figures are ignored; "
                      "score the model again (`python -m helpers evaluate`).", stacklevel=2)
        return {}
    if data.get("sha256") != file_digest(checkpoint):
        warnings.warn(f"{path} holds the figures of other weights than {Path(checkpoint).name} (the model "
                      "was trained again since): they are ignored; score it again (`python -m helpers "
                      "evaluate`).", stacklevel=2)
        return {}
    return data["results"]


def write_exported(folder: str | Path, results: dict[str, dict]) -> None:
    """The figures of an exported model, in its folder (`evaluation.json`; none: no file)."""
    path = Path(folder) / EVALUATION_FILE
    path.unlink(missing_ok=True)
    if results:
        path.write_text(json.dumps({"version": VERSION, "results": plain(results)}, indent=1) + "\n")


def read_exported(folder: str | Path) -> dict[str, dict]:
    """The figures an exported model carries by key; empty when it carries none."""
    path = Path(folder) / EVALUATION_FILE
    data = _read(path) if path.is_file() else {}
    return data["results"] if data.get("version") == VERSION and isinstance(data.get("results"), dict) else {}
