"""Getting the dataset, cataloguing it, splitting it.

`fetch_dataset` turns a source (the built-in demo, a folder, a zip, a Google Drive link or file id)
into a local dataset root; `load_catalog` reads that root into DataFrames, pairing the hand-made masks
with their images and listing every problem it finds instead of failing on it; `split_cases` splits
the labeled cases by patient.

Layout of a root (the Indiana University / OpenI collection as published on Kaggle):
`images/images_normalized/*.png`, `indiana_reports.csv`, `indiana_projections.csv`, optionally
`masked/*` (masks named after their images) and `masks.csv` (`mask, image, text` overrides).
"""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import GroupShuffleSplit
from tqdm.auto import tqdm

from . import synthetic

REPORTS_CSV = "indiana_reports.csv"
PROJECTIONS_CSV = "indiana_projections.csv"
IMAGES_DIR = "images/images_normalized"
MASKS_DIR = "masked"
MASKS_CSV = "masks.csv"
EXTRACTED_MARKER = ".extracted.json"
LAYOUT_HELP = ("a dataset root holds images/images_normalized/*.png, indiana_reports.csv and "
               "indiana_projections.csv (optionally masked/); see data/README.md")

REPORT_COLUMNS = ("uid", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")
MASK_CSV_COLUMNS = ("mask",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
# de-identification tokens: XXXX, XXXX-XXXX, and the "XXXX-" of "XXXX-year-old"
_XXXX = re.compile(r"(?<!\w)X{2,}(?:[-/]X{2,})*(?:-|(?!\w))")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:])")
_DRIVE_ID = re.compile(r"^[A-Za-z0-9_-]{25,}$")
_DRIVE_URL = re.compile(r"drive\.google\.com/.*?(?:/d/|[?&]id=)([A-Za-z0-9_-]{25,})")


class DatasetError(ValueError):
    """Bad or missing data; the message names the file or folder and says what to do."""


# ---------------------------------------------------------------------------------------------
# Getting a dataset root
# ---------------------------------------------------------------------------------------------

def fetch_dataset(source: str | Path, dest: str | Path = "data", *, demo_kwargs: dict | None = None
                  ) -> Path:
    """Returns a local dataset root (the folder holding `indiana_reports.csv`) for `source`.

    Args:
        source: "demo" (generated into `dest/demo`, reused while `demo_kwargs` stay the same), a
            dataset folder (used in place; the root may be one level down), a `.zip` (copied into
            `dest` when it lives elsewhere, e.g. on a mounted Google Drive, then extracted once into
            `dest/<zip stem>/`), or a Google Drive link or file id (downloaded to `dest/<id>.zip`).
        dest: the local folder where datasets land.
        demo_kwargs: keyword arguments of `synthetic.make_demo_dataset` for the demo.
    """
    dest = Path(dest)
    if str(source) == "demo":
        return _fetch_demo(dest / "demo", demo_kwargs or {})
    path = Path(source).expanduser()
    if path.is_dir():
        return find_root(path)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"{path}: not a zip file; pass a dataset folder, a .zip of it, a Google "
                               f"Drive link or 'demo'")
        return _fetch_zip(path, dest)
    drive_id = _drive_id(str(source))
    if drive_id is not None:
        return _fetch_zip(_download_drive(drive_id, dest), dest)
    raise DatasetError(f"{source}: not found; pass an existing dataset folder, a .zip of it, a Google "
                       f"Drive link or file id, or 'demo'")


def _fetch_demo(folder: Path, demo_kwargs: dict) -> Path:
    params = synthetic.demo_params(**demo_kwargs)
    marker = folder / synthetic.MARKER
    if marker.is_file():
        stored = json.loads(marker.read_text())
        if stored.get("complete") and stored.get("params") == params and not _missing_parts(folder):
            return folder
    return synthetic.make_demo_dataset(folder, **demo_kwargs)


def _drive_id(source: str) -> str | None:
    """The Google Drive file id in a link (`/file/d/<id>`, `?id=<id>`) or a bare id, else None."""
    match = _DRIVE_URL.search(source)
    if match:
        return match.group(1)
    return source if _DRIVE_ID.match(source) else None


def _download_drive(file_id: str, dest: Path) -> Path:
    """Downloads a Drive file to `dest/<id>.zip` (reused when already there)."""
    import gdown  # only needed for Drive links

    target = dest / f"{file_id}.zip"
    if zipfile.is_zipfile(target):
        return target
    dest.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    manual = (f"Download it manually instead: open https://drive.google.com/file/d/{file_id}/view in "
              f"a browser, download the zip, upload it to your Google Drive (or to Colab's file "
              f"panel), and pass its path (e.g. /content/drive/MyDrive/Dataset.zip) as the source.")
    try:
        result = gdown.download(id=file_id, output=str(partial), quiet=False)
    except Exception as err:  # gdown raises many types: network, permission, quota
        partial.unlink(missing_ok=True)
        raise DatasetError(f"Google Drive file {file_id}: download failed ({err}). {manual}") from err
    if result is None or not zipfile.is_zipfile(partial):
        partial.unlink(missing_ok=True)
        raise DatasetError(f"Google Drive file {file_id}: the download is not a zip (is the file shared "
                           f"with 'anyone with the link'?). {manual}")
    partial.replace(target)
    return target


def _fetch_zip(zip_path: Path, dest: Path) -> Path:
    """Extracts `zip_path` once into `dest/<stem>/` and returns the dataset root inside it."""
    target = dest / zip_path.stem
    stat = zip_path.stat()
    stamp = {"zip": zip_path.name, "size": stat.st_size, "mtime": int(stat.st_mtime)}
    marker = target / EXTRACTED_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return find_root(target, origin=zip_path)
    local = dest / zip_path.name
    if local.resolve() != zip_path.resolve():  # reading a mounted Drive member by member is slow
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(zip_path, local)
    _extract(local, target, origin=zip_path)
    marker.write_text(json.dumps(stamp))
    return find_root(target, origin=zip_path)


def _unsafe_member(name: str) -> bool:
    """True for absolute paths (also Windows drives and UNC) and paths with `..` components."""
    return (name.startswith(("/", "\\")) or bool(PureWindowsPath(name).drive)
            or ".." in name.replace("\\", "/").split("/"))


def _extract(zip_path: Path, target: Path, origin: Path) -> None:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            unsafe = [m.filename for m in members if _unsafe_member(m.filename)]
            if unsafe:
                raise DatasetError(f"{origin}: unsafe member '{unsafe[0]}' (absolute path or '..'); "
                                   f"nothing was extracted. Re-create the zip from the dataset folder.")
            if target.exists():  # an interrupted or outdated extraction
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for member in tqdm(members, desc=f"Extracting {zip_path.name}", unit="file"):
                zf.extract(member, target)
    except (zipfile.BadZipFile, EOFError) as err:
        raise DatasetError(f"{origin}: corrupt zip ({err}); download it again") from err


def _missing_parts(folder: Path) -> list[str]:
    parts = {REPORTS_CSV: (folder / REPORTS_CSV).is_file(),
             PROJECTIONS_CSV: (folder / PROJECTIONS_CSV).is_file(),
             IMAGES_DIR + "/": (folder / IMAGES_DIR).is_dir()}
    return [name for name, present in parts.items() if not present]


def find_root(folder: str | Path, origin: str | Path | None = None) -> Path:
    """The dataset root: `folder` itself or the first of its sub-folders (e.g. the extra top folder
    of a zip) that has the layout. Raises DatasetError listing what is missing otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{origin or folder}: not found; pass the dataset folder")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    candidates = [folder] + subfolders
    for candidate in candidates:
        if not _missing_parts(candidate):
            return candidate
    closest = min(candidates, key=lambda c: len(_missing_parts(c)))
    raise DatasetError(f"{origin or folder}: not a dataset; missing {', '.join(_missing_parts(closest))} "
                       f"in {closest}. {LAYOUT_HELP}")


# ---------------------------------------------------------------------------------------------
# Texts and pixels
# ---------------------------------------------------------------------------------------------

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


def _size_tuple(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    return (size, size) if isinstance(size, int) else size


def _open(path: Path) -> Image.Image:
    """Opens and fully decodes an image; DatasetError naming the file when it cannot."""
    try:
        with Image.open(path) as img:  # leaving closes the file only; the decoded pixels stay
            img.load()
        return img
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: not found") from err
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DatasetError(f"{path}: cannot decode the image ({err}); re-download or remove it") from err


def gray_image(img: Image.Image, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """A PIL image as uint8 [H, W] grayscale.

    8-bit images are kept; 16/32-bit and float images are stretched from their own min..max to
    0..255; RGB(A) and palette images are converted to luminance. `size` (w, h), or an int for a
    square, resizes bilinearly (antialiased when shrinking).
    """
    if img.mode in ("I;16", "I;16L", "I;16B", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        img = Image.fromarray(scaled.round().astype(np.uint8))
    elif img.mode != "L":
        img = img.convert("L")
    size = _size_tuple(size)
    if size is not None and img.size != size:
        img = img.resize(size, Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).copy()


def load_gray(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Reads an image as uint8 [H, W] grayscale (see `gray_image`); a file that cannot be decoded
    raises DatasetError naming it."""
    return gray_image(_open(Path(path)), size)


def load_mask(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Reads a mask as uint8 [H, W] in {0, 1}: a pixel is 1 where any colour channel is > 0 (so 0/1,
    0/255 and coloured masks all work; when all colours are black, the opaque pixels of a partly
    transparent mask). `size` (w, h) or int resizes with nearest neighbour."""
    img = _open(Path(path))
    if img.mode in ("1", "L", "I;16", "I;16L", "I;16B", "I", "F"):
        fg = np.asarray(img) > 0
    else:
        rgba = np.asarray(img.convert("RGBA"))
        fg = rgba[..., :3].max(axis=-1) > 0
        alpha = rgba[..., 3]
        if not fg.any() and (alpha == 0).any():  # black strokes on a transparent background
            fg = alpha > 0
    mask = fg.astype(np.uint8)
    size = _size_tuple(size)
    if size is not None and mask.shape[::-1] != size:
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    return mask


# ---------------------------------------------------------------------------------------------
# The catalog
# ---------------------------------------------------------------------------------------------

@dataclass
class Catalog:
    """Everything known about a dataset root; `problems` lists what was skipped or suspicious."""

    root: Path
    images: pd.DataFrame  # filename, uid, projection, path, width, height
    reports: pd.DataFrame  # uid, text, findings, impression, MeSH, Problems, n_words
    cases: pd.DataFrame  # case_id, mask_path, image_path, filename, uid, projection, text, text_source
    problems: pd.DataFrame  # kind, file, detail
    n_mask_files: int = 0

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

    def unlabeled_paths(self, frontal_only: bool = False) -> list[str]:
        """Absolute paths of all usable images (Phase 1), optionally frontal ones only."""
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


def load_catalog(root: str | Path, *, check_images: bool = True) -> Catalog:
    """Reads a dataset root (or the folder just above it) into a Catalog.

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
    mask_files = _list_masks(root / MASKS_DIR, problems)
    pairs = _pair_masks(mask_files, images, masks_csv, problems)
    if check_images:
        targets = {name for _, name, _ in pairs}
        images = _check_images(images, targets, problems)
    cases = _build_cases(pairs, images, reports, check_images, problems)
    return Catalog(root=root, images=images, reports=reports, cases=cases, problems=problems.frame(),
                   n_mask_files=len(mask_files))


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
                size = _open(Path(path)).size
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


def _list_masks(folder: Path, problems: _Problems) -> list[Path]:
    if not folder.is_dir():
        return []
    masks = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            masks.append(path)
        else:
            problems.add("not_a_mask", path, "not an image file; ignored")
    return masks


def _name_key(name: str) -> str:
    """Pairing key shared by an image and its masks: lower case, without image extension, `.dcm`
    and `_mask` / `-mask` suffixes (e.g. `1_IM-0001-4001.dcm_mask.PNG` -> `1_im-0001-4001`)."""
    key = name.lower().strip()
    suffixes = IMAGE_SUFFIXES + (".dcm", "_mask", "-mask", " mask")
    while True:
        stripped = next((key[: -len(s)] for s in suffixes if key.endswith(s)), key)
        if stripped == key:
            return key
        key = stripped


def _pair_masks(mask_files: list[Path], images: pd.DataFrame, masks_csv: pd.DataFrame | None,
                problems: _Problems) -> list[tuple[Path, str, str]]:
    """(mask path, image filename, text override or "") for every mask whose image exists."""
    by_key: dict[str, str] = {}
    for name in images["filename"]:
        by_key.setdefault(_name_key(name), name)
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
        image = image or by_key.get(_name_key(path.name), "")
        if not image:
            problems.add("orphan_mask", path, f"no image in {IMAGES_DIR}/ carries its name; not a case "
                                              f"(rename it or pair it in {MASKS_CSV})")
            continue
        pairs.append((path, image, text))
    return pairs


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


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------

def split_cases(cases: pd.DataFrame, out_csv: str | Path | None = None, *, val_fraction: float = 0.15,
                test_fraction: float = 0.15, seed: int = 42) -> pd.DataFrame:
    """A copy of `cases` with a `split` column ("train" / "val" / "test"), grouped by patient (`uid`).

    The test set is drawn first, then validation from the rest; fractions count patients (one case
    each in the demo). Each split gets at least one patient. With `out_csv`, a saved split (columns
    case_id, uid, split) holding exactly the same case_ids is reused as saved; otherwise the split is
    rebuilt and written there.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < val_fraction, test_fraction and their sum < 1, got "
                         f"{val_fraction=}, {test_fraction=}")
    if cases["uid"].nunique() < 3:
        raise DatasetError(f"only {cases['uid'].nunique()} patient(s) with masks; a train/val/test "
                           f"split needs at least 3 - add masks to masked/")
    out_csv = Path(out_csv) if out_csv is not None else None
    saved = _saved_split(out_csv, cases)
    if saved is not None:
        return cases.assign(split=cases["case_id"].map(saved).to_numpy())
    split = _group_split(cases["uid"].to_numpy(), val_fraction, test_fraction, seed)
    result = cases.assign(split=split)
    if out_csv is not None:
        if out_csv.exists():
            print(f"{out_csv}: the cases changed; split rebuilt and overwritten")
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        result[["case_id", "uid", "split"]].to_csv(out_csv, index=False)
    return result


def _saved_split(out_csv: Path | None, cases: pd.DataFrame) -> pd.Series | None:
    """case_id -> split from `out_csv` when it holds exactly the cases' ids, else None."""
    if out_csv is None or not out_csv.is_file():
        return None
    try:
        saved = pd.read_csv(out_csv, dtype={"case_id": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    if not {"case_id", "split"} <= set(saved.columns) or saved["case_id"].duplicated().any():
        return None
    if set(saved["case_id"]) != set(cases["case_id"].astype(str)):
        return None
    return saved.set_index("case_id")["split"]


def _group_split(uids: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """str array [N] of split names; no uid in two splits."""
    index = np.arange(len(uids))
    test_split = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    rest, test = next(test_split.split(index, groups=uids))
    val_split = GroupShuffleSplit(n_splits=1, test_size=val_fraction / (1 - test_fraction),
                                  random_state=seed)
    _, val = next(val_split.split(rest, groups=uids[rest]))
    split = np.full(len(uids), "train", dtype=object)
    split[test] = "test"
    split[rest[val]] = "val"
    return split
