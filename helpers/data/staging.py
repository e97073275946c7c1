"""Reading the data once per series of notebooks, not once per Colab machine.

On Colab each notebook runs on a new machine; only the run folder on Drive stays. Notebook 01 (or
`prepare --data`) fetches the source on its machine and leaves in the run folder what the later
notebooks need: the catalog (`dataset/`: CSVs of the images, reports, cases and problems, and a
copy of the paired masks, a few MB) and the image cache of the whole collection at the preset's
sizes (`cache/`, ~65 KB per image at 256 px). Notebooks 02-04 read those and fetch the source again
only when they need pixels that no cache holds (another image size): a Kaggle or Drive source is
then fetched on that machine; a source that was on notebook 01's machine only cannot be, and the
error says to copy it to Drive.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from .catalog import Catalog
from ..core.environment import DRIVE_MOUNT, on_colab
from ..core.layout import IMAGES_DIR
from .sources import drive_id, kaggle_handle
from .split import read_patient_splits

SNAPSHOT_VERSION = 1
SNAPSHOT_FILE = "snapshot.json"
LOCAL_ONLY = "_this_machine_only"  # run.json key suffix of a source the next machine cannot reach


def persistent_source(source: str | None, colab: bool | None = None) -> bool:
    """Whether `source` will exist on the next machine: the demo, a Kaggle dataset and a Drive
    link can be fetched anywhere; on Colab a path must be on the mounted Drive (a file uploaded in
    Colab's file panel, under /content, goes with the machine)."""
    if source is None or str(source) == "demo" or kaggle_handle(source) is not None:
        return True
    if not Path(str(source)).expanduser().exists() and drive_id(str(source)) is not None:
        return True
    colab = on_colab() if colab is None else colab
    return not colab or str(Path(str(source)).expanduser()).startswith(DRIVE_MOUNT + "/")


def local_only_warning(key: str, source: str) -> str:
    what = "DATA_SOURCE" if key == "data_source" else "MASKS_SOURCE"
    return (f"{what} {source} is on this Colab machine only (it goes when the machine does): "
            f"notebooks 02-04 run on other machines. They use the catalog and image cache this "
            f"notebook leaves in the run folder, which is enough at the preset's image sizes; "
            f"for anything else copy {source} to Drive (e.g. /content/drive/MyDrive/) and set "
            f"{what} to that path.")


def save_snapshot(catalog: Catalog, folder: Path, data_source: str, masks_source: str | None) -> None:
    """Write the catalog into `folder` (the paired masks copied into `folder/masked`).

    Written into a temporary sibling and renamed into place, so that a process that reads the
    snapshot, or writes the same one at the same time, never sees half of it."""
    final, folder = folder, folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "masked").mkdir(parents=True)
    root = catalog.root.resolve()
    images = catalog.images.assign(path=[str(Path(p).resolve().relative_to(root))
                                         if Path(p).resolve().is_relative_to(root) else p
                                         for p in catalog.images["path"]])
    masks = []
    for path in catalog.cases["mask_path"]:
        shutil.copy2(path, folder / "masked" / Path(path).name)
        masks.append(Path(path).name)
    cases = catalog.cases.drop(columns=["image_path"]).assign(mask_path=masks)
    images.to_csv(folder / "images.csv", index=False)
    catalog.reports.to_csv(folder / "reports.csv", index=False)
    cases.to_csv(folder / "cases.csv", index=False)
    catalog.problems.to_csv(folder / "problems.csv", index=False)
    if catalog.patient_splits is not None:
        catalog.patient_splits.rename_axis("uid").reset_index().to_csv(
            folder / "patient_splits.csv", index=False)
    (folder / SNAPSHOT_FILE).write_text(json.dumps({  # last: marks the snapshot complete
        "version": SNAPSHOT_VERSION, "data_source": data_source, "masks_source": masks_source,
        "root": str(root), "n_mask_files": catalog.n_mask_files}, indent=1))
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    try:
        folder.rename(final)
    except OSError:  # another process put the same snapshot there first
        shutil.rmtree(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_snapshot(folder: Path, data_source: str, masks_source: str | None) -> Catalog | None:
    """The catalog saved in `folder` for these sources, with image paths under the root it was
    read from (the files need not be on this machine); None when there is none for them."""
    try:
        info = json.loads((folder / SNAPSHOT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if (info.get("version"), info.get("data_source"), info.get("masks_source")) != \
            (SNAPSHOT_VERSION, data_source, masks_source):
        return None
    root = Path(info["root"])
    read = dict(keep_default_na=False, dtype={"uid": "int64"})
    images = pd.read_csv(folder / "images.csv", **read, converters={"filename": str, "path": str})
    images["path"] = [str(root / p) for p in images["path"]]
    for column in ("width", "height"):
        images[column] = pd.to_numeric(images[column].replace("", None)).astype("Int64")
    reports = pd.read_csv(folder / "reports.csv", **read)
    for column in ("text", "findings", "impression", "MeSH", "Problems"):
        reports[column] = reports[column].astype(str)
    cases = pd.read_csv(folder / "cases.csv", **read, converters={"case_id": str, "text": str})
    by_name = images.set_index("filename")["path"]
    cases.insert(2, "image_path", cases["filename"].map(by_name))
    cases["mask_path"] = [str((folder / "masked" / m).resolve()) for m in cases["mask_path"]]
    splits = folder / "patient_splits.csv"
    return Catalog(root=root, images=images, reports=reports,
                   cases=cases[["case_id", "mask_path", "image_path", "filename", "uid",
                                "projection", "text", "text_source"]],
                   problems=pd.read_csv(folder / "problems.csv", dtype=str, keep_default_na=False),
                   n_mask_files=int(info["n_mask_files"]),
                   patient_splits=read_patient_splits(splits) if splits.is_file() else None)


def images_on_machine(catalog: Catalog) -> bool:
    """Whether the catalog's image files are here (its first and last are checked)."""
    paths = catalog.images["path"]
    return len(paths) == 0 or (Path(paths.iloc[0]).is_file() and Path(paths.iloc[-1]).is_file())


def rebased(catalog: Catalog, root: Path) -> tuple[Catalog, dict[str, str]]:
    """The catalog with its images under `root` (a new fetch may land elsewhere, e.g. a newer
    Kaggle version), and the old path -> new path of every image."""
    new = {old: str(root / IMAGES_DIR / name)
           for old, name in zip(catalog.images["path"], catalog.images["filename"])}
    images = catalog.images.assign(path=catalog.images["path"].map(new))
    cases = catalog.cases.assign(image_path=catalog.cases["image_path"].map(new))
    return Catalog(root, images, catalog.reports, cases, catalog.problems, catalog.n_mask_files,
                   catalog.patient_splits), new
