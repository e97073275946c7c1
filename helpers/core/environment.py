"""Where the code runs: Colab or not, the Drive folder that holds the run folders there, and the
repository a fresh Colab machine fetches the project from."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .layout import RUNS_ROOT

# This project's repository. The notebooks' setup cells and "Open in Colab" badges and the README's
# badge name it too (tests/test_colab.py checks that they agree); `python tools/set_repo.py
# OWNER/NAME` changes all of them.
REPO_URL = "https://github.com/YOUR-ACCOUNT/cxr-text-localization.git"
REPO_PLACEHOLDER = "YOUR-ACCOUNT"
# On Colab each notebook runs on its own machine: the run folder of the series lives on Drive.
DRIVE_MOUNT = "/content/drive"
DRIVE_RUNS_ROOT = DRIVE_MOUNT + "/MyDrive/cxr-text-localization/runs"


def on_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def default_runs_root(colab: bool | None = None, drive_mount: str | Path = DRIVE_MOUNT) -> Path:
    """Where run folders live: on Colab the Drive folder shared by the four notebooks (when Drive is
    mounted), elsewhere `runs/` in the repository."""
    colab = on_colab() if colab is None else colab
    if colab:
        if (Path(drive_mount) / "MyDrive").is_dir():
            return Path(drive_mount) / Path(DRIVE_RUNS_ROOT).relative_to(DRIVE_MOUNT)
        print("Google Drive is not mounted: the run folder stays on this machine and is lost with it; "
              "the next notebook (another machine) will not find it. Run the setup cell again and "
              "allow Drive access.", file=sys.stderr)
    return RUNS_ROOT
