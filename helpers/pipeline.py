"""The data step shared by the notebooks and the command line: fetch, catalog, split, one run folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import synthetic
from .catalog import Catalog, load_catalog
from .config import Preset, preset
from .layout import DATA_ROOT, REPO_ROOT, RUNS_ROOT, RunPaths
from .sources import fetch_dataset
from .split import split_cases


@dataclass
class Prepared:
    preset: Preset
    paths: RunPaths
    catalog: Catalog
    cases: pd.DataFrame  # labeled cases with a `split` column


def prepare(source: str = "demo", mode: str | None = None, *, data_dir: str | Path | None = None,
            out_dir: str | Path | None = None) -> Prepared:
    """Fetch the dataset, catalog it and split its labeled cases by patient (saved, then reused).

    mode: "real" | "demo" | "smoke", or None to choose from `CXR_SMOKE` and the source.
    """
    settings = preset(mode, source)
    data_dir = Path(data_dir) if data_dir else DATA_ROOT / settings.mode
    paths = RunPaths(Path(out_dir) if out_dir else RUNS_ROOT / settings.mode)
    demo_kwargs = {"n_reports": settings.demo.n_reports, "n_masks": settings.demo.n_masks,
                   "image_size": settings.demo.image_size, "seed": settings.demo.seed}
    root = fetch_dataset(source, data_dir, demo_kwargs=demo_kwargs)
    catalog = load_catalog(root)
    paths.root.mkdir(parents=True, exist_ok=True)
    cases = split_cases(catalog.cases, paths.splits, val_fraction=settings.split.val_fraction,
                        test_fraction=settings.split.test_fraction, seed=settings.split.seed,
                        fixed=catalog.patient_splits)
    return Prepared(settings, paths, catalog, cases)


def demo_probe(prep: Prepared, split: str = "test") -> pd.DataFrame | None:
    """The two-lesion probe items of a demo dataset's `split` (None for other datasets, which
    have no second lesion's mask)."""
    if not (prep.catalog.root / synthetic.LESIONS_CSV).is_file():
        return None
    return synthetic.probe_items(prep.catalog.root, prep.cases[prep.cases["split"] == split])


def relative(path: str | Path) -> str:
    """A path relative to the repository root when inside it (stable notebook outputs)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
