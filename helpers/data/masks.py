"""Pairing hand-drawn masks with their images: mask files, name keys, `masks.csv`, geometry.

A mask belongs to the image whose name it carries (`1_IM-0001-4001.dcm_mask.png`), also under
OpenI's names (`CXR1_1_IM-0001-4001.png`), or to the image a `masks.csv` names for it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .io import load_mask
from ..core.layout import IMAGE_SUFFIXES, IMAGES_DIR, MASKS_CSV, MASKS_DIR

def masks_csv_beside(folder: Path) -> Path | None:
    """The `masks.csv` that belongs to a folder of masks: inside it, or beside it when the folder
    is the `masked/` of a masks source (`MASKS_SOURCE/masks.csv` + `MASKS_SOURCE/masked/`)."""
    for candidate in (folder / MASKS_CSV, folder.parent / MASKS_CSV):
        if candidate.is_file() and (candidate.parent == folder or folder.name == MASKS_DIR):
            return candidate
    return None


def list_masks(folder: Path, problems) -> list[Path]:
    if not folder.is_dir():
        return []
    masks = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.name == MASKS_CSV:
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            masks.append(path)
        else:
            problems.add("not_a_mask", path, "not an image file; ignored")
    return masks


# OpenI names carry a `CXR` prefix and sometimes a series number: `CXR1_1_IM-0001-4001.png` and
# `CXR10_IM-0002-1001.png` are Kaggle's `1_IM-0001-4001.dcm.png` and `10_IM-0002-1001.dcm.png`.
_IU_NAME = re.compile(r"^(?:cxr)?0*(\d+)_(?:\d+_)?(im-\d+-\d+)$")
PAIRING_RULE = ("a mask pairs with the image whose name it carries: the same uid and IM numbers, "
                "with or without `.dcm`, a `_mask` suffix or OpenI's `CXR` prefix "
                "(`1_IM-0001-4001.dcm.png` <- `1_IM-0001-4001_mask.png` or `CXR1_1_IM-0001-4001.png`), "
                f"or through a {MASKS_CSV} (columns mask, image) beside the masks")


def name_key(name: str) -> str:
    """Pairing key shared by an image and its masks: lower case, without image extension, `.dcm`
    and `_mask` / `-mask` suffixes, and for IU names the uid and IM numbers alone (e.g.
    `1_IM-0001-4001.dcm_mask.PNG` and OpenI's `CXR1_1_IM-0001-4001.png` -> `1_im-0001-4001`)."""
    key = name.lower().strip()
    suffixes = IMAGE_SUFFIXES + (".dcm", "_mask", "-mask", " mask")
    while True:
        stripped = next((key[: -len(s)] for s in suffixes if key.endswith(s)), key)
        if stripped == key:
            break
        key = stripped
    match = _IU_NAME.match(key)
    return f"{match.group(1)}_{match.group(2)}" if match else key


def pair_masks(mask_files: list[Path], images: pd.DataFrame, masks_csv: pd.DataFrame | None,
                problems) -> list[tuple[Path, str, str]]:
    """(mask path, image filename, text override or "") for every mask whose image exists."""
    by_key: dict[str, str] = {}
    for name in images["filename"]:
        by_key.setdefault(name_key(name), name)
    names = set(images["filename"])
    overrides = masks_csv if masks_csv is not None else pd.DataFrame(columns=["image", "text"])
    for name in overrides.index.difference([p.name for p in mask_files]):
        problems.add("missing_mask", Path(MASKS_CSV), f"lists mask {name!r}, which is not in {MASKS_DIR}/")
    pairs = []
    for path in mask_files:
        image, text = "", ""
        if path.name in overrides.index:
            image, text = overrides.loc[path.name, "image"], overrides.loc[path.name, "text"]
        if image and image not in names:
            problems.add("orphan_mask", path, f"{MASKS_CSV} pairs it with {image!r}, which is not in "
                                              f"{IMAGES_DIR}/; not a case")
            continue
        image = image or by_key.get(name_key(path.name), "")
        if not image:
            problems.add("orphan_mask", path, f"no image in {IMAGES_DIR}/ carries its name; not a case "
                                              f"(rename it or pair it in {MASKS_CSV})")
            continue
        pairs.append((path, image, text))
    return pairs


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
