"""File-name rules (helpers/core/layout.py): the files of a run."""
from __future__ import annotations


def test_run_paths_find_trained_phase1_encoders(tmp_path):
    from helpers.pipeline import RunPaths

    paths = RunPaths(tmp_path)
    assert paths.phase1_encoders() == {}
    paths.phase1("masked").mkdir(parents=True)
    (paths.phase1("masked") / "my_pretrained_encoder.pth").write_bytes(b"")
    assert paths.phase1_encoders() == {"masked": str(paths.phase1("masked") / "my_pretrained_encoder.pth")}
