"""Cataloguing a dataset root: images, reports, the hand-made masks paired with their images.

`load_catalog` reads a root into DataFrames and lists every problem it finds (orphan masks, corrupt
images, reports without text, ...) instead of failing on it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .io import load_mask, open_image
from ..core.layout import (IMAGES_DIR, MASKS_CSV, MASKS_DIR, PATIENT_SPLITS_CSV, PROJECTIONS_CSV,
                     REPORTS_CSV, DatasetError, find_root)
from .masks import list_masks, mask_geometry, masks_csv_beside, pair_masks  # noqa: F401 (re-export)
from .split import read_patient_splits

REPORT_COLUMNS = ("uid", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")
MASK_CSV_COLUMNS = ("mask",)
# de-identification tokens: XXXX, XXXX-XXXX, and the "XXXX-" of "XXXX-year-old"
_XXXX = re.compile(r"(?<!\w)X{2,}(?:[-/]X{2,})*(?:-|(?!\w))")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:])")


def clean_text(text: object) -> str:
    """Removes de-identification tokens (`XXXX`, `XX`, `XXXX-XXXX`) and normalizes white space;
    NaN / None -> ""."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text is pd.NA:
        return ""
    text = " ".join(_XXXX.sub(" ", str(text)).split())
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)


def case_text(findings: object, impression: object) -> tuple[str, str]:
    """(clean text, source): the findings, or the impression when the findings are empty;
    ("", "none") when both are."""
    for raw, source in ((findings, "findings"), (impression, "impression")):
        text = clean_text(raw)
        if text:
            return text, source
    return "", "none"



@dataclass
class Catalog:
    """Everything known about a dataset root; `problems` lists what was skipped or suspicious."""

    root: Path
    images: pd.DataFrame  # filename, uid, projection, path, width, height
    reports: pd.DataFrame  # uid, text, findings, impression, MeSH, Problems, n_words
    cases: pd.DataFrame  # case_id, mask_path, image_path, filename, uid, projection, text, text_source
    problems: pd.DataFrame  # kind, file, detail
    n_mask_files: int = 0
    patient_splits: pd.Series | None = None  # uid -> split from patient_splits.csv, if present

    def summary(self) -> dict[str, int]:
        """Counts for a quick look (images, masks, cases, problems)."""
        kinds = self.problems["kind"]
        return {"images": len(self.images),
                "frontal": int((self.images["projection"] == "Frontal").sum()),
                "lateral": int((self.images["projection"] == "Lateral").sum()),
                "reports": len(self.reports),
                "reports_without_text": int((self.reports["text"] == "").sum()),
                "masks": self.n_mask_files,
                "labeled_cases": len(self.cases),
                "orphan_masks": int((kinds == "orphan_mask").sum()),
                "problems": len(self.problems)}

    def image_paths(self, frontal_only: bool = False) -> list[str]:
        """Absolute paths of every readable image, labeled or not (Phase 1), optionally the frontal
        ones only."""
        images = self.images
        if frontal_only:
            images = images[images["projection"] == "Frontal"]
        return images["path"].tolist()


class _Problems:
    """Collects one row per problem: kind, file (relative to the root), detail."""

    def __init__(self, root: Path) -> None:
        self.root, self.rows = root, []

    def add(self, kind: str, path: Path | str, detail: str) -> None:
        path = Path(path)
        file = path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
        self.rows.append({"kind": kind, "file": file, "detail": detail})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["kind", "file", "detail"])


def load_catalog(root: str | Path, *, check_images: bool = True,
                 extra_masks: str | Path | None = None) -> Catalog:
    """Reads a dataset root (or the folder just above it) into a Catalog.

    extra_masks: a folder of mask files kept apart from the dataset (the Kaggle download has no
    `masked/`), merged with the root's `masked/`; a mask in both places is taken from here.

    check_images: read every image's header for width/height (corrupt ones are dropped and listed),
    fully decode the images that masks point to, and read every mask (corrupt ones dropped, empty and
    differently sized ones listed). Without it no pixel file is opened: width/height are <NA> and the
    masks are paired by name only.
    """
    root = find_root(Path(root))
    problems = _Problems(root)
    reports = _read_reports(root / REPORTS_CSV, problems)
    projections = _read_csv(root / PROJECTIONS_CSV, PROJECTION_COLUMNS)
    images = _list_images(root, projections, problems)
    masks_csv = _read_masks_csv(root / MASKS_CSV) if (root / MASKS_CSV).is_file() else None
    mask_files = list_masks(root / MASKS_DIR, problems)
    if extra_masks is not None:
        extra_csv = masks_csv_beside(Path(extra_masks))
        if extra_csv is not None:  # the masks' own masks.csv wins over the dataset's
            extra_frame = _read_masks_csv(extra_csv)
            masks_csv = extra_frame if masks_csv is None else pd.concat(
                [masks_csv[~masks_csv.index.isin(extra_frame.index)], extra_frame])
        extra = list_masks(Path(extra_masks), problems)
        names = {p.name for p in extra}
        for path in mask_files:
            if path.name in names:
                problems.add("duplicate_mask", path, f"also in {extra_masks}; that one is used")
        mask_files = [p for p in mask_files if p.name not in names] + extra
    pairs = pair_masks(mask_files, images, masks_csv, problems)
    if check_images:
        targets = {name for _, name, _ in pairs}
        images = _check_images(images, targets, problems)
    cases = _build_cases(pairs, images, reports, check_images, problems)
    fixed = root / PATIENT_SPLITS_CSV
    return Catalog(root=root, images=images, reports=reports, cases=cases, problems=problems.frame(),
                   n_mask_files=len(mask_files),
                   patient_splits=read_patient_splits(fixed) if fixed.is_file() else None)


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Reads a CSV as strings; DatasetError naming the file when it is unreadable or lacks columns."""
    hint = "re-download it / check it is the dataset's CSV file"
    try:
        with path.open("rb") as file:
            binary = b"\x00" in file.read(65536)
        if binary:
            raise DatasetError(f"{path}: binary data, not a CSV; {hint}")
        frame = pd.read_csv(path, dtype=str, encoding_errors="strict")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"{path}: cannot read it as a CSV ({err}); {hint}") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (found: "
                           f"{', '.join(frame.columns[:10])}); {hint}")
    return frame


def _int_uids(frame: pd.DataFrame, path: Path) -> pd.Series:
    uids = pd.to_numeric(frame["uid"].str.strip(), errors="coerce")
    bad = frame.loc[uids.isna() | (uids % 1 != 0), "uid"]
    if len(bad):
        raise DatasetError(f"{path}: uid must be an integer, found {bad.head(3).tolist()}; fix those rows")
    return uids.astype("int64")


def _read_reports(path: Path, problems: _Problems) -> pd.DataFrame:
    frame = _read_csv(path, REPORT_COLUMNS)
    frame["uid"] = _int_uids(frame, path)
    duplicated = frame.loc[frame["uid"].duplicated(), "uid"].unique()
    if len(duplicated):
        raise DatasetError(f"{path}: duplicate uid(s) {duplicated[:5].tolist()}; each report needs its "
                           f"own uid - re-download the file or remove the duplicates")
    for column in ("findings", "impression", "MeSH", "Problems"):
        frame[column] = frame[column].fillna("") if column in frame else ""
    texts = [case_text(f, i)[0] for f, i in zip(frame["findings"], frame["impression"])]
    frame["text"] = texts
    frame["n_words"] = [len(t.split()) for t in texts]
    for uid in frame.loc[frame["text"] == "", "uid"]:
        problems.add("no_text", path, f"report uid {uid} has neither findings nor impression")
    columns = ["uid", "text", "findings", "impression", "MeSH", "Problems", "n_words"]
    return frame[columns].reset_index(drop=True)


def _uid_from_name(name: str) -> int | None:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def _list_images(root: Path, projections: pd.DataFrame, problems: _Problems) -> pd.DataFrame:
    """Every png under images_normalized, joined with its projection ("Unknown" when not listed)."""
    folder = root / IMAGES_DIR
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    listed = projections.drop_duplicates("filename").set_index("filename")
    listed_uids = pd.to_numeric(listed["uid"], errors="coerce")
    on_disk = {p.name for p in files}
    for name in listed.index.difference(sorted(on_disk)):
        problems.add("missing_image", folder / name, f"listed in {PROJECTIONS_CSV} but not on disk")
    rows = []
    for path in files:
        uid = _uid_from_name(path.name)
        if uid is None and path.name in listed.index and pd.notna(listed_uids[path.name]):
            uid = int(listed_uids[path.name])
        if uid is None:
            problems.add("bad_filename", path, "no uid before the first '_' and not in "
                                               f"{PROJECTIONS_CSV}; skipped")
            continue
        projection = str(listed["projection"].get(path.name, "")).strip().capitalize()
        rows.append({"filename": path.name, "uid": uid,
                     "projection": projection if projection in ("Frontal", "Lateral") else "Unknown",
                     "path": str(path.resolve()), "width": pd.NA, "height": pd.NA})
    images = pd.DataFrame(rows, columns=["filename", "uid", "projection", "path", "width", "height"])
    images["uid"] = images["uid"].astype("int64")
    images[["width", "height"]] = images[["width", "height"]].astype("Int64")
    return images.sort_values(["uid", "filename"], ignore_index=True)


def _check_images(images: pd.DataFrame, targets: set[str], problems: _Problems) -> pd.DataFrame:
    """Fills width/height from headers; fully decodes mask targets; drops corrupt images."""
    sizes, keep = [], []
    for name, path in tqdm(zip(images["filename"], images["path"]), total=len(images),
                           desc="Checking images", unit="img", leave=False):
        try:
            if name in targets:
                size = open_image(Path(path)).size
            else:
                with Image.open(path) as img:
                    size = img.size
        except (DatasetError, OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            problems.add("corrupt_image", Path(path), f"cannot read it ({err}); skipped")
            keep.append(False)
            continue
        sizes.append(size)
        keep.append(True)
    images = images[keep].reset_index(drop=True)
    images["width"] = pd.array([w for w, _ in sizes], dtype="Int64")
    images["height"] = pd.array([h for _, h in sizes], dtype="Int64")
    return images


def _read_masks_csv(path: Path) -> pd.DataFrame:
    frame = _read_csv(path, MASK_CSV_COLUMNS)
    for column in ("image", "text"):
        frame[column] = frame[column].fillna("").str.strip() if column in frame else ""
    frame["mask"] = frame["mask"].fillna("").str.strip()
    return frame.drop_duplicates("mask", keep="last").set_index("mask")


def _build_cases(pairs: list[tuple[Path, str, str]], images: pd.DataFrame, reports: pd.DataFrame,
                 check_masks: bool, problems: _Problems) -> pd.DataFrame:
    by_name = images.set_index("filename")
    texts = reports.set_index("uid")
    rows = []
    for mask_path, image_name, text_override in pairs:
        if image_name not in by_name.index:  # its image was dropped as corrupt
            problems.add("orphan_mask", mask_path, f"its image {image_name} is unreadable; not a case")
            continue
        image = by_name.loc[image_name]
        if check_masks:
            try:
                mask = load_mask(mask_path)
            except DatasetError as err:
                problems.add("corrupt_mask", mask_path, f"{err}; skipped")
                continue
            if not mask.any():
                problems.add("empty_mask", mask_path, "all zero (kept: no lesion visible)")
            if mask.shape != (image["height"], image["width"]):
                sizes = f"mask {mask.shape[1]}x{mask.shape[0]}, image {image['width']}x{image['height']}"
                problems.add("size_mismatch", mask_path, f"{sizes} (resized at load)")
        if text_override:
            text, source = clean_text(text_override), "masks.csv"
        elif image["uid"] in texts.index:
            report = texts.loc[image["uid"]]
            text, source = case_text(report["findings"], report["impression"])
        else:
            text, source = "", "none"
        if not text:
            problems.add("no_text", mask_path, f"no report text for uid {image['uid']} (kept with text '')")
        rows.append({"case_id": mask_path.stem, "mask_path": str(mask_path.resolve()),
                     "image_path": image["path"], "filename": image_name, "uid": int(image["uid"]),
                     "projection": image["projection"], "text": text, "text_source": source})
    columns = ["case_id", "mask_path", "image_path", "filename", "uid", "projection", "text", "text_source"]
    cases = pd.DataFrame(rows, columns=columns)
    cases["uid"] = cases["uid"].astype("int64")
    return cases.sort_values(["uid", "case_id"], ignore_index=True)
