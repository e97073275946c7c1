"""Execute the numbered notebooks headless (what `make demo` runs), keeping the executed copies.

Each notebook gets its own kernel, talking over IPC sockets in a private folder instead of TCP ports
(`make demo` once hung at the start of notebook 04, kernel idle, runner waiting: with TCP, the port
jupyter_client picks is free when chosen but may be taken by another kernel started at the same
moment on the machine, and replies then go elsewhere). Its start is waited for with a timeout and it
is shut down in a `finally`. Every cell
has a timeout; a cell that runs past it stops the run with a message naming the notebook, the cell
and the command that resumes. Finished notebooks are recorded in `runs/<mode>/notebooks.json`, so a second
`make demo` continues with the first unfinished one (`--restart` starts over).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .config import SMOKE_ENV, resolve_mode
from .layout import NOTEBOOKS_STATE_FILE, REPO_ROOT, RUNS_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


class NotebookRunError(RuntimeError):
    """A notebook failed or timed out; the message says which cell and how to resume."""


def _finished(state_file: Path, mode: str) -> list[str]:
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return []
    return state.get("finished", []) if state.get("mode") == mode else []


def run_notebooks(out_dir: str | Path | None = None, mode: str | None = None,
                  names: Sequence[str] | None = None, timeout: int = 3600, *,
                  startup_timeout: int = 120, restart: bool = False,
                  notebook_dir: str | Path = NOTEBOOK_DIR, state_file: str | Path | None = None
                  ) -> list[Path]:
    """Run `notebooks/0*.ipynb` in order in `mode` and write the executed notebooks to `out_dir`.

    timeout: seconds per cell. Without `names`, notebooks recorded as finished in
    `runs/<mode>/notebooks.json` are skipped unless `restart`. The notebooks read the mode from their
    parameters cell, which defaults to the environment: `CXR_SMOKE=1` for smoke; `CXR_MODE` otherwise.
    """
    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    mode = resolve_mode(mode)
    out = Path(out_dir) if out_dir else RUNS_ROOT / mode
    out.mkdir(parents=True, exist_ok=True)
    state_file = Path(state_file or RUNS_ROOT / mode / NOTEBOOKS_STATE_FILE)  # in the run folder
    state_file.parent.mkdir(parents=True, exist_ok=True)
    os.environ["CXR_MODE"] = mode
    os.environ[SMOKE_ENV] = "1" if mode == "smoke" else "0"
    finished = [] if restart else _finished(state_file, mode)
    written = []
    for path in sorted(Path(notebook_dir).glob("0*.ipynb")):
        if names and not any(path.name.startswith(n) for n in names):
            continue
        if not names and path.name in finished:
            print(f"{path.name}: finished before, skipped (--restart runs it again)", flush=True)
            continue
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        current = {"index": -1}
        with tempfile.TemporaryDirectory(prefix="cxr-kernel-") as sockets:
            # IPC sockets, not TCP ports: jupyter_client picks a free TCP port, releases it and lets
            # the kernel bind it, so a kernel started at the same moment elsewhere on the machine
            # (other test runs) can take it and the runner waits for replies that never come.
            config = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "k")}})
            client = NotebookClient(nb, timeout=timeout, startup_timeout=startup_timeout,
                                    interrupt_on_timeout=False, kernel_name="python3", config=config,
                                    resources={"metadata": {"path": str(path.parent)}},
                                    on_cell_start=lambda cell, cell_index: current.update(index=cell_index))
            try:
                client.execute()  # starts its kernel and shuts it down in a `finally`
            except (CellTimeoutError, TimeoutError, RuntimeError, CellExecutionError) as err:
                cell = nb.cells[current["index"]] if current["index"] >= 0 else None
                where = (f"cell {current['index']} ({cell.source.splitlines()[-1][:60]!r})"
                         if cell is not None else "kernel start")
                timed_out = isinstance(err, (CellTimeoutError, TimeoutError))
                what = (f"ran past {timeout} s" if timed_out
                        else f"failed: {str(err).strip().splitlines()[-1][:300]}")
                failed = out / path.name
                nbformat.write(nb, failed)
                prefix = path.name.split("_")[0]
                raise NotebookRunError(
                    f"{path.name}: {where} {what}. The partly executed notebook is {failed}. Resume "
                    f"with: python -m helpers notebooks --mode {mode} --only {prefix} (or `make demo`, "
                    f"which continues with the first unfinished notebook)") from err
            finally:
                if client.km is not None and client.km.has_kernel:  # belt and braces
                    client._cleanup_kernel()
        target = out / path.name
        nbformat.write(nb, target)
        written.append(target)
        finished = [n for n in finished if n != path.name] + [path.name]
        state_file.write_text(json.dumps({"mode": mode, "finished": sorted(finished)}, indent=1))
        print(f"{path.name}: {time.perf_counter() - start:.0f} s -> {target}", flush=True)
    return written
