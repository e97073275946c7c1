"""Execute the numbered notebooks headless (what `make demo` runs), keeping the executed copies."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from .config import SMOKE_ENV, resolve_mode
from .layout import REPO_ROOT, RUNS_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def run_notebooks(out_dir: str | Path | None = None, mode: str | None = None,
                  names: Sequence[str] | None = None, timeout: int = 1800) -> list[Path]:
    """Run `notebooks/0*.ipynb` in order in `mode` and write the executed notebooks to `out_dir`.

    The notebooks read the mode from their parameters cell, which defaults to the environment:
    `CXR_SMOKE=1` for smoke; `CXR_MODE` otherwise.
    """
    import nbformat
    from nbclient import NotebookClient

    mode = resolve_mode(mode)
    out = Path(out_dir) if out_dir else RUNS_ROOT / mode
    out.mkdir(parents=True, exist_ok=True)
    os.environ["CXR_MODE"] = mode
    os.environ[SMOKE_ENV] = "1" if mode == "smoke" else "0"
    written = []
    for path in sorted(NOTEBOOK_DIR.glob("0*.ipynb")):
        if names and not any(path.name.startswith(n) for n in names):
            continue
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
        target = out / path.name
        nbformat.write(nb, target)
        written.append(target)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s -> {target}", flush=True)
    return written
