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

import inspect
import json
import os
import tempfile
import time
from pathlib import Path
from queue import Empty
from typing import Any, Awaitable, Callable, Sequence

from .core.settings import MODE_ENV, SMOKE_ENV, resolve_mode
from .core.layout import NOTEBOOKS_STATE_FILE, REPO_ROOT, RUNS_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# Minutes each notebook took in `make demo` on a 2-core CPU (README "Two commands": 34 min 32 s in all);
# 2-core CPUs differ up to ~3x, so the up-front estimate gives both ends.
DEMO_MINUTES = {"01": 0.2, "02": 2.7, "03": 31.4, "04": 0.2}


class NotebookRunError(RuntimeError):
    """A notebook failed or timed out; the message says which cell and how to resume."""


def sliced_get_msg(get_msg: Callable[..., Any], step: float = 1.0) -> Callable[..., Awaitable[dict]]:
    """`get_msg(timeout)` of a kernel channel, asked in slices of `step` seconds until `timeout`.

    Why: with the ipywidgets explorer, nbclient sometimes waits for a reply the kernel has already
    sent (kernel idle, runner waiting: nbclient issue #312; `make demo` hung so at notebook 04).
    A wait of one long poll misses such a message for good; asking again every second finds it.
    """
    async def wrapped(timeout: float | None = None, **kwargs) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = step if deadline is None else min(step, max(0.0, deadline - time.monotonic()))
            try:
                msg = get_msg(timeout=left, **kwargs)
                return await msg if inspect.isawaitable(msg) else msg
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
    return wrapped


def _notebook_client(nb, **kwargs):
    """An nbclient `NotebookClient` whose kernel channels are polled in slices (`sliced_get_msg`)."""
    from nbclient import NotebookClient

    class SlicedPollingClient(NotebookClient):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            for channel in (kc.shell_channel, kc.iopub_channel):
                channel.get_msg = sliced_get_msg(channel.get_msg)
            return kc

    return SlicedPollingClient(nb, **kwargs)


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
    from traitlets.config import Config
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    mode = resolve_mode(mode)
    out = Path(out_dir) if out_dir else RUNS_ROOT / mode
    out.mkdir(parents=True, exist_ok=True)
    state_file = Path(state_file or RUNS_ROOT / mode / NOTEBOOKS_STATE_FILE)  # in the run folder
    state_file.parent.mkdir(parents=True, exist_ok=True)
    os.environ[MODE_ENV] = mode
    os.environ[SMOKE_ENV] = "1" if mode == "smoke" else "0"
    finished = [] if restart else _finished(state_file, mode)
    todo = [p for p in sorted(Path(notebook_dir).glob("0*.ipynb"))
            if (not names or any(p.name.startswith(n) for n in names))]
    if mode == "demo":
        minutes = sum(DEMO_MINUTES.get(p.name[:2], 0.0) for p in todo
                      if names or p.name not in finished)
        print(f"demo: about {minutes:.0f} min on a 2-core CPU (up to {3 * minutes:.0f} min on a "
              "slower one); a GPU is much faster", flush=True)
    written = []
    for path in todo:
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
            client = _notebook_client(nb, timeout=timeout, startup_timeout=startup_timeout,
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
