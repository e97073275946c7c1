"""Setting up a notebook's machine: `setup`, the one call of the notebooks' setup cell, and the small
testable steps it takes on Colab.

Standard library only at import time (torch and the pipeline are imported inside the functions),
so the setup cell can import this module right after cloning, before the requirements are
installed. Each notebook runs on its own Colab machine; what they share is the run folder on
Google Drive.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .core.environment import DRIVE_MOUNT, DRIVE_RUNS_ROOT, REPO_PLACEHOLDER, REPO_URL, on_colab
from .core.layout import REPO_ROOT

GPU_HELP = ("Runtime > Change runtime type > GPU, then run the notebook again; or set DEVICE = \"cpu\" "
            "in the parameters cell to train on the CPU on purpose (hours instead of minutes)")


class SetupError(RuntimeError):
    """The machine is not ready; the message says what to set or click."""


def check_repo_url(url: str, *, online: bool = True, timeout: float = 30.0) -> None:
    """SetupError unless `url` names a reachable git repository (checked with `git ls-remote`,
    never prompting for a password)."""
    where = ("REPO_URL in helpers/core/environment.py, the README and every notebook's setup cell with "
             "`python tools/set_repo.py OWNER/NAME`")
    if not url or REPO_PLACEHOLDER in url:
        raise SetupError(f"REPO_URL is still the placeholder {url!r}: set {where} to the address of "
                         f"your copy of this project, e.g. https://github.com/<you>/cxr-text-localization.git")
    if not url.startswith(("https://", "http://", "git@", "ssh://", "file://", "/")):
        raise SetupError(f"REPO_URL {url!r} is not a git address: set {where} to e.g. "
                         f"https://github.com/<you>/cxr-text-localization.git")
    if not online:
        return
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        probe = subprocess.run(["git", "ls-remote", "--heads", url], capture_output=True, text=True,
                               timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        probe = None
    if probe is None or probe.returncode != 0:
        detail = "no answer" if probe is None else (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise SetupError(f"REPO_URL {url!r} cannot be reached ({detail}): set {where} to a public "
                         f"copy of this project (or a URL with an access token for a private one)")


def update_clone(folder: str | Path = REPO_ROOT) -> str:
    """`git pull --ff-only` in the clone; returns git's one-line answer (local changes are kept:
    a pull that cannot fast-forward is reported, not forced)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    pull = subprocess.run(["git", "-C", str(folder), "pull", "--ff-only", "-q"], capture_output=True,
                          text=True, env=env)
    if pull.returncode != 0:
        return f"not updated ({(pull.stderr.strip().splitlines() or ['?'])[-1]})"
    return "up to date"


def install_requirements(folder: str | Path = REPO_ROOT) -> None:
    """The runtime requirements only (ranges that keep Colab's torch); test tools stay out."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r",
                    str(Path(folder) / "requirements.txt")], check=True)


def mount_drive(out_dir: str | Path | None, *sources) -> None:
    """Mount Drive on Colab when the run folder is the default one (on Drive) or a path is on it."""
    if not on_colab():
        return
    wanted = out_dir is None or any(str(p).startswith(DRIVE_MOUNT) for p in (out_dir, *sources) if p)
    if wanted and not Path(DRIVE_MOUNT, "MyDrive").is_dir():
        print(f"Mounting Google Drive: the run folder ({DRIVE_RUNS_ROOT}/<mode>) is shared by the "
              "four notebooks, each on its own machine. Allow access in the pop-up.")
        from google.colab import drive  # only on Colab

        drive.mount(DRIVE_MOUNT)


def flush_drive() -> str:
    """Notebook 01's last step: on Colab, write what Drive still buffers (the image cache, ~0.5 GB)
    and unmount it (`drive.flush_and_unmount()`), so that the next notebook's machine finds every
    file whole; a no-op elsewhere. Returns what it did."""
    if not on_colab():
        return "Drive: nothing to flush (not on Colab)"
    from google.colab import drive  # only on Colab

    drive.flush_and_unmount()
    return "Drive flushed and unmounted: the run folder is saved for notebooks 02-04"


def colab_link(notebook: str, repo_url: str = REPO_URL, branch: str = "main") -> str:
    """The "Open in Colab" address of `notebooks/<notebook>` in the GitHub repository `repo_url`."""
    slug = repo_url.split("github.com", 1)[-1].lstrip("/:").removesuffix(".git")
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{notebook}"


def colab_badge(notebook: str, repo_url: str = REPO_URL) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_link(notebook, repo_url)})")


def check_device(mode: str, device: str | None = None, needs_gpu: bool = True) -> str:
    """The device the run will use, as text; SetupError in the real preset on a CPU-only machine
    unless `device="cpu"` was chosen on purpose or the notebook trains nothing (`needs_gpu`
    False: notebooks 01 and 04)."""
    import torch

    if device not in (None, "auto"):
        return f"device: {device} (set by DEVICE)"
    if torch.cuda.is_available():
        return f"device: cuda ({torch.cuda.get_device_name(0)})"
    if not needs_gpu:
        return "device: cpu" + (" (enough for notebooks 01 and 04, which train nothing; 02 and 03 "
                                f"stop without a GPU: {GPU_HELP})" if mode == "real" else "")
    if mode == "real":
        raise SetupError(f"No GPU on this machine and the real preset needs one: {GPU_HELP}.")
    return "device: cpu"


def setup(data_source: str | None = None, masks_source: str | None = None, mode: str | None = None,
          out_dir: str | Path | None = None, device: str | None = None, needs_gpu: bool = False):
    """The setup cell of every notebook: on Colab update the clone (`git pull --ff-only`), install
    the runtime requirements and mount Drive; then print the run folder, the mode and the device
    (the notebooks that train, 02 and 03, stop a CPU-only real run with `check_device` before
    training; `needs_gpu=True` stops it here).
    Returns the notebook's `RunSettings` (what is None comes from the run folder's `run.json`)."""
    if on_colab():
        os.chdir(REPO_ROOT)
        print("project:", update_clone(REPO_ROOT))
        install_requirements(REPO_ROOT)
        mount_drive(out_dir, data_source, masks_source)
    from .pipeline import relative, resolve_run  # after the install

    run = resolve_run(data_source, masks_source, mode, out_dir)
    print(f"run folder: {relative(run.run_dir)}; mode {run.mode}")
    print(check_device(run.mode, device, needs_gpu))
    return run
