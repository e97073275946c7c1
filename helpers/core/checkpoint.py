"""Checkpoint files: atomic saving, and loading that only accepts tensors and plain Python values.

A payload holds state dicts, tensors and plain values (numbers, strings, lists, dicts), so
`torch.load(..., weights_only=True)` can read it without running arbitrary pickled code.
"""
from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message names the file and what to do."""


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write `payload` to `path` atomically and return the path.

    The file is written to `<path>.tmp` in the same folder and then renamed over `path`, so an
    interrupted save never destroys the previous checkpoint. Missing parent folders are created.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # open() ourselves: torch.save on a path reports an unwritable folder as a RuntimeError
        with open(tmp, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):  # best effort: the folder may not even exist
            tmp.unlink()
        raise CheckpointError(
            f"Could not write the checkpoint {path}: the folder {path.parent} is not writable "
            f"({err.strerror or err}). Choose a writable output folder.") from err
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` with `torch.load(weights_only=True)`.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, holds something other than a
            dict, or holds arbitrary Python objects (refused: unpickling them could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Check the path, or train the "
                              "model first to create it.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Checkpoint {path} holds objects other than tensors and plain Python values, so it "
            "was refused: loading it could run untrusted code (or the file is corrupt). Use a "
            "checkpoint written by this project, or re-save the state dicts only.") from err
    except Exception as err:  # torch.load reports damaged files with many exception types
        raise CheckpointError(
            f"Checkpoint {path} is truncated or corrupt ({type(err).__name__}). Delete it "
            "and train again, or copy the file again.") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(payload).__name__}, not a dict "
                              "of weights and settings. Use a checkpoint written by this project.")
    return payload


def checked_version(version: object, newest: int, path: str | Path, kind: str, fix: str,
                    error: type[CheckpointError] = CheckpointError) -> int:
    """`version`, the `kind` of a file's format ("record version", "format"), when it is an int
    from 1 to `newest`; else `error` naming `path`: `fix` for an invalid one, an update of the
    project for a newer one."""
    if not isinstance(version, int) or version < 1:
        raise error(f"{path} has an invalid {kind} {version!r}: {fix}.")
    if version > newest:
        raise error(f"{path} was written by a newer version of this project ({kind} {version}; "
                    f"this one reads up to {newest}). Update the project (git pull) to load it.")
    return version
