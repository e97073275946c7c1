"""Checkpoint files (helpers/core/checkpoint.py): atomic saving, weights-only loading, clear errors."""
from __future__ import annotations

import pytest
import torch

from helpers.core.checkpoint import CheckpointError, checked_version, load_checkpoint, save_checkpoint


class Untrusted:
    """An arbitrary class: weights_only loading must refuse it."""


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    payload = {"model": torch.nn.Linear(4, 2).state_dict(), "config": {"fusion": "concat"}, "epoch": 3,
               "metrics": {"val_dice": 0.5}, "history": [{"loss": 1.0}]}
    path = save_checkpoint(payload, tmp_path / "new" / "best_model.pth")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    loaded = load_checkpoint(path)
    assert loaded["config"] == payload["config"] and loaded["epoch"] == 3
    assert all(torch.equal(v, loaded["model"][k]) for k, v in payload["model"].items())
    save_checkpoint({"epoch": 4}, path)  # replaces the previous file
    assert load_checkpoint(path) == {"epoch": 4}


def test_untrusted_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"epoch": 1, "payload": Untrusted()}, path)
    with pytest.raises(CheckpointError, match="evil.pth.*untrusted"):
        load_checkpoint(path)


def test_damaged_or_missing_checkpoint_is_explained(tmp_path):
    path = save_checkpoint({"weights": torch.randn(1000)}, tmp_path / "last.pth")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="last.pth is truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    torch.save(torch.ones(2), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(tmp_path / "tensor.pth")


def test_unwritable_folder_is_explained(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(CheckpointError, match="runs.*not writable.*writable output folder"):
        save_checkpoint({"epoch": 1}, blocker / "best_model.pth")


def test_a_format_version_is_read_up_to_the_newest_and_else_named_with_its_fix():
    assert checked_version(2, 2, "m.pth", "record version", "train again") == 2
    for bad in (0, "2", None):
        with pytest.raises(CheckpointError, match=r"m.pth has an invalid record version .*: train again"):
            checked_version(bad, 2, "m.pth", "record version", "train again")

    class FolderError(CheckpointError):
        pass

    with pytest.raises(FolderError, match=r"newer version .*format 3; this one reads up to 2.*git pull"):
        checked_version(3, 2, "config.json", "format", "copy it again", FolderError)
