"""Glue shared by the notebooks and the command line: where a run's files go, and the data step."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Preset, preset
from .data import Catalog, fetch_dataset, load_catalog, load_mask, split_cases

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunPaths:
    """The files of one run under `root` (default `runs/<mode>/`)."""

    root: Path

    @property
    def splits(self) -> Path:
        return self.root / "splits.csv"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def phase1(self, objective: str) -> Path:
        return self.root / "phase1" / objective

    def phase1_encoders(self) -> dict[str, str]:
        """The Phase-1 encoders trained so far, by objective (for the ablations)."""
        from .train import ENCODER_FILE

        found = {o: self.phase1(o) / ENCODER_FILE for o in ("masked", "reconstruct")}
        return {o: str(p) for o, p in found.items() if p.exists()}

    @property
    def phase2(self) -> Path:
        return self.root / "phase2"

    @property
    def ablations(self) -> Path:
        return self.root / "ablations"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def text_models(self) -> Path:
        """Where the tiny offline text model is built (shared by all runs)."""
        return REPO_ROOT / "data" / "text-models"


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
    data_dir = Path(data_dir) if data_dir else REPO_ROOT / "data" / settings.mode
    paths = RunPaths(Path(out_dir) if out_dir else REPO_ROOT / "runs" / settings.mode)
    demo_kwargs = {"n_reports": settings.demo.n_reports, "n_masks": settings.demo.n_masks,
                   "image_size": settings.demo.image_size, "seed": settings.demo.seed}
    root = fetch_dataset(source, data_dir, demo_kwargs=demo_kwargs)
    catalog = load_catalog(root)
    paths.root.mkdir(parents=True, exist_ok=True)
    cases = split_cases(catalog.cases, paths.splits, val_fraction=settings.split.val_fraction,
                        test_fraction=settings.split.test_fraction, seed=settings.split.seed)
    return Prepared(settings, paths, catalog, cases)


def relative(path: str | Path) -> str:
    """A path relative to the repository root when inside it (stable notebook outputs)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def mask_geometry(mask_paths: list[str], size: int = 128) -> pd.DataFrame:
    """Area (share of the image) and centroid (x, y in [0, 1], image coordinates) of each mask,
    measured at `size` x `size`. Empty masks get NaN centroids."""
    rows = []
    for path in mask_paths:
        mask = load_mask(path, size).astype(bool)
        ys, xs = np.nonzero(mask)
        rows.append({"area": mask.mean(),
                     "cx": (xs.mean() + 0.5) / size if len(xs) else np.nan,
                     "cy": (ys.mean() + 0.5) / size if len(ys) else np.nan})
    return pd.DataFrame(rows, columns=["area", "cx", "cy"])
