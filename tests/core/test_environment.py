"""Where the code runs (helpers/core/environment.py): the run folders on Colab's Drive."""
from __future__ import annotations

from helpers.core import environment
from helpers.core.layout import RUNS_ROOT


def test_default_run_folder_on_colab_is_on_drive(tmp_path, capsys):
    assert environment.default_runs_root(colab=False) == RUNS_ROOT
    assert environment.default_runs_root(colab=True, drive_mount=tmp_path) == RUNS_ROOT  # not mounted
    assert "Drive is not mounted" in capsys.readouterr().err
    (tmp_path / "MyDrive").mkdir()
    assert environment.default_runs_root(colab=True, drive_mount=tmp_path) == \
        tmp_path / "MyDrive" / "cxr-text-localization" / "runs"
