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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .core import distributed as dist
from .data.demo import generate as synthetic
from .data.catalog import Catalog, load_catalog
from .core.settings import MODES, Preset, mode_from_env, preset, resolve_mode
from .data.cache import build_image_cache, find_covering
from .data.io import load_gray
from .core.drive import WRITTEN_KEY, written_text
from .core.environment import default_runs_root
from .core.layout import (DATA_ROOT, MASKS_CSV, MASKS_HELP, REPO_ROOT, RUN_SETTINGS_FILE, DatasetError,
                          RunPaths)
from .data.masks import PAIRING_RULE
from .data.sources import fetch_dataset, fetch_masks
from .data.split import split_cases
from .text.vocabulary import MaskVocabulary, vocabulary_of_cases
from .data.staging import (LOCAL_ONLY, images_on_machine, load_snapshot, local_only_warning,
                      persistent_source, rebased, save_snapshot)


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
    data_dir: Path | None = None  # where the source is fetched to when pixels are needed
    from_run_folder: bool = False  # the catalog was read from the run folder, not the source
    vocabulary: MaskVocabulary | None = None  # what the training masks draw (None without cases)

    @property
    def has_masks(self) -> bool:
        return not self.masks_message

    def stage_images(self, size: int, paths: Sequence[str] | None = None) -> list[str]:
        """Make the run folder's image cache hold `paths` (default: every image) at `size`: done
        when a cache holds them already (no source needed, e.g. on a later Colab machine); else
        the source is fetched on this machine when its images are not here, and the images are
        decoded into the cache. Returns `paths` as they are on this machine (a new fetch may
        land under another root). The cache file is opened (on Colab: copied to this machine)
        once per process, here or by the first call that needs it (`cache.open_cache`); later
        calls reuse that opening, so a notebook reads the cache from the run folder once."""
        paths = self.catalog.image_paths() if paths is None else [str(p) for p in paths]
        if find_covering(paths, size, self.paths.cache) is not None:
            return paths
        if not images_on_machine(self.catalog):
            paths = self._fetch_images(paths, size)
        cache = build_image_cache(paths, size, self.paths.cache)
        print(f"image cache: {len(cache.paths)} image(s) at {size} px in {relative(self.paths.cache)}")
        return paths

    def _fetch_images(self, paths: list[str], size: int) -> list[str]:
        source = self.run.data_source
        if not persistent_source(source) and not Path(source).exists():
            raise DatasetError(
                f"The images are not on this machine and the run folder's cache holds none at "
                f"{size} px, and the data source {source} was on notebook 01's machine only. Copy it "
                "to Drive, set DATA_SOURCE in notebook 01 to that path and run 01 again (or keep "
                "the image size that notebook 01 staged).")
        print(f"The run folder's cache holds no images at {size} px: fetching {source} on this "
              "machine")
        root = fetch_dataset(source, self.data_dir or DATA_ROOT / self.preset.mode,
                             demo_kwargs=demo_settings(self.preset))
        catalog, moved = rebased(self.catalog, root)
        self.catalog = catalog
        self.cases = self.cases.assign(image_path=self.cases["image_path"].map(
            lambda p: moved.get(p, p)))
        return [moved.get(p, p) for p in paths]

    def image_reader(self, size: int) -> Callable[[str], np.ndarray]:
        """path -> uint8 [size, size] read from the run folder's cache (staged first): for viewers
        on a machine that does not hold the image files."""
        paths = self.stage_images(size)
        cache = build_image_cache(paths, size, self.paths.cache, progress=False)
        row = cache.index_of()
        return lambda path: np.asarray(cache.array[row[str(path)]]) if str(path) in row \
            else load_gray(path, size)

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


def write_run_settings(run: RunSettings, colab: bool | None = None) -> None:
    """Record the sources and mode for the next notebooks; a source that will not exist on the
    next machine (on Colab, a path outside Drive) is not recorded as the source: it is kept
    under `<key>_this_machine_only` (to recognise the catalog it was read into) with a warning."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    record: dict = {"mode": run.mode}
    written = read_run_settings(run.run_dir).get(WRITTEN_KEY)  # the series' count goes on
    for key, value in (("data_source", run.data_source), ("masks_source", run.masks_source)):
        record[key] = value
        if value and not persistent_source(value, colab):
            record[key], record[key + LOCAL_ONLY] = None, value
            print(local_only_warning(key, value), file=sys.stderr)
    if written:
        record[WRITTEN_KEY] = written
    (run.run_dir / RUN_SETTINGS_FILE).write_text(json.dumps(record, indent=1))


def _recorded(record: dict, key: str) -> str | None:
    return record.get(key) or record.get(key + LOCAL_ONLY)


def resolve_run(source: str | None = None, masks: str | None = None, mode: str | None = None,
                out_dir: str | Path | None = None) -> RunSettings:
    """The data source, masks source, mode and run folder of a notebook. What is None comes from
    `run.json` of the run folder (`out_dir`; else the default root's folder for the mode; else the
    one written last), then the defaults (the demo data)."""
    root = default_runs_root()
    if out_dir is not None:
        record = read_run_settings(out_dir)
    elif mode is not None or mode_from_env():
        record = read_run_settings(root / resolve_mode(mode))
    else:
        written = sorted(root.glob(f"*/{RUN_SETTINGS_FILE}"), key=lambda p: p.stat().st_mtime)
        record = json.loads(written[-1].read_text()) if written else {}
    if source is not None:
        origin = "given"
        same = _recorded(record, "data_source") == str(source)
        masks = masks if masks is not None else (_recorded(record, "masks_source") if same else None)
    else:
        origin = "run.json" if _recorded(record, "data_source") else "default"
        source = _recorded(record, "data_source") or "demo"
        masks = masks if masks is not None else _recorded(record, "masks_source")
    if mode is None and not mode_from_env() and record.get("mode") in MODES \
            and _recorded(record, "data_source") == str(source):
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
    # Notebooks 02-04 read the catalog that notebook 01 left in the run folder: the source is
    # not fetched again on their machines (see helpers.staging).
    catalog = (load_snapshot(paths.dataset, run.data_source, run.masks_source)
               if run.origin != "given" else None)
    from_run_folder = catalog is not None
    if catalog is None:
        root = fetch_dataset(run.data_source, data_dir, demo_kwargs=demo_settings(settings))
        extra = fetch_masks(run.masks_source, data_dir / "masks") if run.masks_source else None
        catalog = load_catalog(root, extra_masks=extra)
        if dist.is_main():  # under torchrun the other ranks prepare after rank 0 (main_first)
            save_snapshot(catalog, paths.dataset, run.data_source, run.masks_source)
    paths.root.mkdir(parents=True, exist_ok=True)
    cases, message = catalog.cases.assign(split=pd.Series(dtype=str)), ""
    if catalog.cases.empty:
        message = no_cases_message(catalog, run.masks_source)
    else:
        try:
            cases = split_cases(catalog.cases, paths.splits, val_fraction=settings.split.val_fraction,
                                test_fraction=settings.split.test_fraction, seed=settings.split.seed,
                                fixed=catalog.patient_splits)
        except DatasetError as err:
            message = f"{err}; {MASKS_HELP}"
    vocabulary = None if message else vocabulary_of_cases(cases)
    if vocabulary is not None and (problem := vocabulary.problem()):
        if vocabulary.n_empty == vocabulary.n_cases:  # nothing to learn: Phase 2 would mark nothing
            message = problem
        else:
            print(f"Check the masks: {problem}", file=sys.stderr)
    if message:
        print(f"Exploration and Phase 1 can run; Phase 2 cannot: {message}", file=sys.stderr)
    return Prepared(settings, paths, catalog, cases, run, message, data_dir, from_run_folder, vocabulary)


def demo_settings(settings: Preset) -> dict:
    """The keyword arguments of the demo generator for a preset."""
    return dataclasses.asdict(settings.demo)


def no_cases_message(catalog: Catalog, masks_source: str | None) -> str:
    """Why the catalog has no labeled case, and what to do: no mask anywhere (set MASKS_SOURCE),
    or masks that pair with no image (their names beside the images' names, and the rule)."""
    if catalog.n_mask_files:
        where = f"MASKS_SOURCE {masks_source}" if masks_source else f"{catalog.root.name}/masked/"
        orphans = catalog.problems.loc[catalog.problems["kind"] == "orphan_mask", "file"]
        masks, images = [Path(f).name for f in orphans.head(3)], catalog.images["filename"].head(3).tolist()
        width = max([len(m) for m in masks] + [len("masks")])
        rows = [f"  {'masks':<{width}}   images"] + [
            f"  {m:<{width}}   {i}" for m, i in zip(masks + [""] * 3, images + [""] * 3) if m or i]
        return (f"{where}: none of the {catalog.n_mask_files} mask file(s) pairs with one of the "
                f"{len(catalog.images)} images; {PAIRING_RULE}.\n" + "\n".join(rows) +
                f"\nRename the masks, or list the pairs in {MASKS_CSV} (columns mask, image) beside them.")
    if masks_source:
        return (f"MASKS_SOURCE {masks_source} holds no mask image (PNG/JPEG); point it at the "
                "folder or .zip of the hand-drawn masks")
    return f"no mask in the dataset ({catalog.root.name}/masked/ is missing or empty); {MASKS_HELP}"


def describe(prep: Prepared) -> str:
    """Where a notebook's settings came from (varies with run order: print it in an ignored cell)."""
    run = prep.run
    return (f"mode {run.mode}; data {run.data_source}; masks {run.masks_source or 'from the dataset'} "
            f"({run.origin}); run folder {relative(run.run_dir)}"
            + ("; catalog read from the run folder" if prep.from_run_folder else ""))


def ensure_phase1(prep: Prepared, objective: str, device: str | None = None,
                  encoder_weights: str | None = None) -> Path:
    """The Phase-1 encoder for `objective` (that started from `encoder_weights`, e.g. "imagenet");
    in smoke mode a quick one is trained when missing, in the other modes a missing encoder is a
    MissingInputError."""
    path = prep.paths.phase1_encoder(objective, encoder_weights)
    if path.exists():
        return path
    if prep.preset.mode != "smoke":
        raise MissingInputError(
            f"No Phase-1 encoder at {path}: run notebook 02 (objective {objective!r}"
            f"{f', ENCODER_WEIGHTS {encoder_weights!r}' if encoder_weights else ''}) with the same "
            f"run folder ({prep.paths.root}), or set PHASE1_OBJECTIVE = None to train from scratch on "
            "purpose.")
    from .training.pretrain import pretrain
    from .data.unlabeled import iu_patients, iu_pretrain_paths

    cfg = dataclasses.replace(prep.preset.pretrain, objective=objective, device=device or "auto",
                              encoder_weights=encoder_weights)
    print(f"smoke mode: training a quick Phase-1 encoder ({objective}) first", file=sys.stderr)
    paths = iu_pretrain_paths(prep.catalog.images, prep.cases, frontal_only=cfg.frontal_only)
    return pretrain(cfg, paths, prep.paths.phase1(objective, encoder_weights), cache_dir=prep.paths.cache,
                    resume=True, progress=False,
                    patients=iu_patients(prep.catalog.images, paths)).best_path


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
    from .training.finetune import finetune

    prep.require_masks()
    encoder = ensure_phase1(prep, "masked")
    cfg = dataclasses.replace(prep.preset.finetune, pretrained_encoder=str(encoder))
    print("smoke mode: training notebook 03's model first", file=sys.stderr)
    return finetune(cfg, prep.cases, prep.paths.phase2, cache_dir=prep.paths.cache,
                    text_cache_dir=prep.paths.text_models, resume=True, progress=False).best_path


def folder_size(folder: str | Path) -> str:
    """The size of a run folder and what was written to it (image cache, checkpoint copies): by
    this notebook, and by the series so far (run.json). On Drive a replaced file waits in the
    trash and counts against the quota until the trash is emptied."""
    folder = Path(folder)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0
    return (f"{total / 1e6:.1f} MB in {relative(folder)}; written to it by this notebook: "
            f"{written_text()}, by the series so far: {written_text(read_run_settings(folder))} "
            "(on Drive, replaced files wait in the trash and count against the quota)")


def _is_demo(prep: Prepared) -> bool:
    return (prep.catalog.root / synthetic.LESIONS_CSV).is_file()  # what each lesion of an image is


def demo_probe(prep: Prepared, split: str = "test") -> pd.DataFrame | None:
    """The two-lesion probe items of a demo dataset's `split` (None for other datasets, which
    have no second lesion's mask)."""
    return synthetic.probe_items(prep.catalog.root, prep.cases[prep.cases["split"] == split]) if _is_demo(prep) else None


def demo_crowded(prep: Prepared) -> set[str]:
    """The image paths of a demo dataset's labeled cases that show an undescribed lesion too
    (empty for other datasets, which do not say)."""
    return synthetic.crowded_images(prep.catalog.root, prep.cases) if _is_demo(prep) else set()


def demo_reports(prep: Prepared, split: str = "test", seed: int = 0,
                 required: bool = False) -> pd.DataFrame | None:
    """The per-sentence test of a demo dataset's `split`: reports that describe two or three
    lesions of one image (`synthetic.report_items`). Other datasets have none: None, or with
    `required` a ValueError."""
    if not _is_demo(prep):
        if required:
            raise ValueError("the per-sentence test needs reports that describe several masked lesions of "
                             f"one image: the demo data has them ({synthetic.LESIONS_CSV}), {prep.catalog.root} not")
        return None
    return synthetic.report_items(prep.catalog.root, prep.cases[prep.cases["split"] == split], seed)


def relative(path: str | Path) -> str:
    """A path relative to the repository root when inside it (stable notebook outputs)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
