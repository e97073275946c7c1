"""Test-wide settings.

Tests run in smoke mode (tiny data, tiny text model, one epoch); notebook kernels inherit the
environment. nbval compares stored notebook outputs except for what legitimately varies between
runs: stderr (warnings, progress) and widget outputs (tqdm bars, the explorer).
"""
import os

os.environ.setdefault("CXR_SMOKE", "1")
os.environ.setdefault("CXR_LAST_SAVE_S", "0")  # last.pth every epoch: the resume tests interrupt early
os.environ.pop("CXR_MODE", None)

try:
    from nbval.plugin import IPyNbCell
except ImportError:  # nbval not installed: unit tests still run
    IPyNbCell = None


def _compared(outputs):
    kept = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            continue
        if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
            continue
        kept.append(out)
    return kept


if IPyNbCell is not None:
    _compare = IPyNbCell.compare_outputs

    def compare_outputs(self, test, ref, skip_compare=None):
        return _compare(self, _compared(test), _compared(ref), skip_compare)

    IPyNbCell.compare_outputs = compare_outputs


_fresh = {"done": False}


def pytest_runtest_setup(item):
    """The notebooks are compared with outputs stored from a fresh smoke run: before the first
    notebook cell runs (never at collection, nor for the unit tests), start from one."""
    if IPyNbCell is None or not isinstance(item, IPyNbCell) or _fresh["done"]:
        return
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parent
    for folder in (root / "runs" / "smoke", root / "data" / "smoke"):
        shutil.rmtree(folder, ignore_errors=True)
    _fresh["done"] = True
