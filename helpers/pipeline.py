"""The data step shared by the notebooks and the command line: fetch, catalog, split, one run folder.

One run folder serves the four notebooks (on Colab each runs on its own machine: the folder is on
Drive). Notebook 01 records in it what the user chose (`run.json`: data source, masks source, mode);
02-04 read it, so DATA_SOURCE is set once. Phase-1 / Phase-2 results the later notebooks need are
looked up here too: in smoke mode they are trained on the spot when missing (every notebook passes
alone), in the other modes a missing one is an error that names the notebook to run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import synthetic
from .catalog import Catalog, load_catalog
from .config import MODES, Preset, preset, resolve_mode, smoke_mode
from .layout import (DATA_ROOT, MASKS_HELP, REPO_ROOT, RUN_SETTINGS_FILE, DatasetError, RunPaths,
                     default_runs_root)
from .sources import fetch_dataset, fetch_masks
from .split import split_cases


class MissingInputError(FileNotFoundError):
    """A file an earlier notebook writes is not in the run folder; the message names the notebook."""


@dataclass
class RunSettings:
    """What a notebook runs on: given explicitly, else read from the run folder's `run.json`."""

    data_source: str
    masks_source: str | None
    mode: str
    run_dir: Path
    origin: str  # "given", "run.json" or "default"


@dataclass
class Prepared:
    preset: Preset
    paths: RunPaths
    catalog: Catalog
    cases: pd.DataFrame  # labeled cases with a `split` column (empty without masks)
    run: RunSettings | None = None
    masks_message: str = ""  # why Phase 2 cannot run ("" when it can)

    @property
    def has_masks(self) -> bool:
        return not self.masks_message

    def require_masks(self) -> None:
        """DatasetError naming MASKS_SOURCE when Phase 2 has no split of labeled cases."""
        if self.masks_message:
            raise DatasetError(f"Phase 2 needs hand-drawn masks: {self.masks_message}")


def read_run_settings(run_dir: str | Path) -> dict:
    path = Path(run_dir) / RUN_SETTINGS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_run_settings(run: RunSettings) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    record = {"data_source": run.data_source, "masks_source": run.masks_source, "mode": run.mode}
    (run.run_dir / RUN_SETTINGS_FILE).write_text(json.dumps(record, indent=1))


def _mode_from_env() -> bool:
    return smoke_mode() or os.environ.get("CXR_MODE") in MODES


def resolve_run(source: str | None = None, masks: str | None = None, mode: str | None = None,
                out_dir: str | Path | None = None) -> RunSettings:
    """The data source, masks source, mode and run folder of a notebook. What is None comes from
    `run.json` of the run folder (`out_dir`; else the default root's folder for the mode; else the
    one written last), then the defaults (the demo data)."""
    root = default_runs_root()
    if out_dir is not None:
        record = read_run_settings(out_dir)
    elif mode is not None or _mode_from_env():
        record = read_run_settings(root / resolve_mode(mode))
    else:
        written = sorted(root.glob(f"*/{RUN_SETTINGS_FILE}"), key=lambda p: p.stat().st_mtime)
        record = json.loads(written[-1].read_text()) if written else {}
    if source is not None:
        origin = "given"
        same = record.get("data_source") == str(source)
        masks = masks if masks is not None else (record.get("masks_source") if same else None)
    else:
        origin = "run.json" if record.get("data_source") else "default"
        source = record.get("data_source", "demo")
        masks = masks if masks is not None else record.get("masks_source")
    if mode is None and not _mode_from_env() and record.get("mode") in MODES \
            and record.get("data_source") == str(source):
        mode = record["mode"]
    mode = resolve_mode(mode, str(source))
    run_dir = Path(out_dir) if out_dir is not None else root / mode
    return RunSettings(str(source), str(masks) if masks else None, mode, run_dir, origin)


def prepare(source: str | None = None, mode: str | None = None, *, masks: str | None = None,
            data_dir: str | Path | None = None, out_dir: str | Path | None = None) -> Prepared:
    """Fetch the dataset (and the masks kept apart from it), catalog it and split its labeled cases
    by patient (saved, then reused). Without masks the cases are empty and `masks_message` says
    why: exploration and Phase 1 work, Phase 2 stops at `require_masks()`.

    source / masks / mode: None reads them from the run folder's `run.json` (see `resolve_run`);
    a given source is recorded there for the next notebooks.
    """
    run = resolve_run(source, masks, mode, out_dir)
    settings = preset(run.mode, run.data_source)
    data_dir = Path(data_dir) if data_dir else DATA_ROOT / settings.mode
    paths = RunPaths(run.run_dir)
    if run.origin == "given" or not paths.settings.exists():
        write_run_settings(run)
    demo_kwargs = dataclasses.asdict(settings.demo)
    root = fetch_dataset(run.data_source, data_dir, demo_kwargs=demo_kwargs)
    extra = fetch_masks(run.masks_source, data_dir / "masks") if run.masks_source else None
    catalog = load_catalog(root, extra_masks=extra)
    paths.root.mkdir(parents=True, exist_ok=True)
    cases, message = catalog.cases.assign(split=pd.Series(dtype=str)), ""
    if catalog.cases.empty:
        message = f"no mask in the dataset ({catalog.root.name}/masked/ is missing or empty); {MASKS_HELP}"
    else:
        try:
            cases = split_cases(catalog.cases, paths.splits, val_fraction=settings.split.val_fraction,
                                test_fraction=settings.split.test_fraction, seed=settings.split.seed,
                                fixed=catalog.patient_splits)
        except DatasetError as err:
            message = f"{err}; {MASKS_HELP}"
    if message:
        print(f"Exploration and Phase 1 can run; Phase 2 cannot: {message}", file=sys.stderr)
    return Prepared(settings, paths, catalog, cases, run, message)


def describe(prep: Prepared) -> str:
    """Where a notebook's settings came from (varies with run order: print it in an ignored cell)."""
    run = prep.run
    return (f"mode {run.mode}; data {run.data_source}; masks {run.masks_source or 'from the dataset'} "
            f"({run.origin}); run folder {relative(run.run_dir)}")


def ensure_phase1(prep: Prepared, objective: str, device: str | None = None) -> Path:
    """The Phase-1 encoder for `objective`; in smoke mode a quick one is trained when missing, in
    the other modes a missing encoder is a MissingInputError."""
    path = prep.paths.phase1_encoder(objective)
    if path.exists():
        return path
    if prep.preset.mode != "smoke":
        raise MissingInputError(
            f"No Phase-1 encoder at {path}: run notebook 02 (objective {objective!r}) with the same "
            f"run folder ({prep.paths.root}), or set PHASE1_OBJECTIVE = None to train from scratch on "
            "purpose.")
    from .train import pretrain

    cfg = dataclasses.replace(prep.preset.pretrain, objective=objective, device=device or "auto")
    print(f"smoke mode: training a quick Phase-1 encoder ({objective}) first", file=sys.stderr)
    return pretrain(cfg, prep.catalog.image_paths(frontal_only=cfg.frontal_only),
                    prep.paths.phase1(objective), cache_dir=prep.paths.cache, resume=True,
                    progress=False).best_path


def ensure_phase2(prep: Prepared, checkpoint: str | Path | None = None) -> Path:
    """The Phase-2 checkpoint; in smoke mode notebook 03's default model is trained when missing."""
    path = Path(checkpoint) if checkpoint else prep.paths.best_model
    if path.exists():
        return path
    if prep.preset.mode != "smoke" or checkpoint:
        raise MissingInputError(
            f"No Phase-2 model at {path}: run notebook 03 first with the same run folder "
            f"({prep.paths.root}); on Colab every notebook runs on its own machine, so the run folder "
            f"must be the Drive folder of the series (OUT_DIR = None uses it).")
    from .train import finetune

    prep.require_masks()
    encoder = ensure_phase1(prep, "masked")
    cfg = dataclasses.replace(prep.preset.finetune, pretrained_encoder=str(encoder))
    print("smoke mode: training notebook 03's model first", file=sys.stderr)
    return finetune(cfg, prep.cases, prep.paths.phase2, cache_dir=prep.paths.cache,
                    text_cache_dir=prep.paths.text_models, resume=True, progress=False).best_path


def folder_size(folder: str | Path) -> str:
    """The size of a run folder, e.g. '12.3 MB in runs/smoke'."""
    folder = Path(folder)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0
    return f"{total / 1e6:.1f} MB in {relative(folder)}"


def demo_probe(prep: Prepared, split: str = "test") -> pd.DataFrame | None:
    """The two-lesion probe items of a demo dataset's `split` (None for other datasets, which
    have no second lesion's mask)."""
    if not (prep.catalog.root / synthetic.LESIONS_CSV).is_file():
        return None
    return synthetic.probe_items(prep.catalog.root, prep.cases[prep.cases["split"] == split])


def demo_reports(prep: Prepared, split: str = "test", seed: int = 0,
                 required: bool = False) -> pd.DataFrame | None:
    """The per-sentence test of a demo dataset's `split`: reports that describe two or three
    lesions of one image (`synthetic.report_items`). Other datasets have none: None, or with
    `required` a ValueError."""
    if not (prep.catalog.root / synthetic.LESIONS_CSV).is_file():
        if required:
            raise ValueError("the per-sentence test needs reports that describe several masked "
                             f"lesions of one image: the demo data has them ({synthetic.LESIONS_CSV}), "
                             f"{prep.catalog.root} has not")
        return None
    return synthetic.report_items(prep.catalog.root, prep.cases[prep.cases["split"] == split], seed)


def relative(path: str | Path) -> str:
    """A path relative to the repository root when inside it (stable notebook outputs)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
