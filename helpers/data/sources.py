"""Getting a dataset root: the built-in demo, a folder, a zip, a Google Drive link or file id, or a
Kaggle dataset (`kaggle:<owner>/<dataset>`).

`fetch_dataset` turns a source into a local folder that has the layout of `helpers.layout`; a zip
is extracted once (members with absolute paths or `..` are refused before anything is written); a
Kaggle dataset is downloaded by `kagglehub` (into its cache on this machine).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path, PureWindowsPath

from tqdm.auto import tqdm

from .demo import generate as synthetic
from ..core.settings import demo_variant
from ..core.layout import IMAGE_SUFFIXES, MASKS_DIR, MASKS_HELP, DatasetError, find_root, missing_parts

EXTRACTED_MARKER = ".extracted.json"
KAGGLE_PREFIX = "kaggle:"
KAGGLE_IU = "kaggle:raddar/chest-xrays-indiana-university"  # the IU collection's Kaggle copy
_KAGGLE_HANDLE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(/versions/\d+)?$")
KAGGLE_HELP = ("Kaggle asks for your API credentials: create a token at kaggle.com > Settings > API > "
               "Create New Token and, on Colab, add it as the secret KAGGLE_API_TOKEN (one secret; the "
               "key panel on the left) and allow this notebook to read it, or add the older pair "
               "KAGGLE_USERNAME and KAGGLE_KEY (the values in kaggle.json); elsewhere set the "
               "environment variable KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY), or put "
               "kaggle.json in ~/.kaggle/")
_DRIVE_ID = re.compile(r"^[A-Za-z0-9_-]{25,}$")
_DRIVE_URL = re.compile(r"drive\.google\.com/.*?(?:/d/|[?&]id=)([A-Za-z0-9_-]{25,})")


def fetch_dataset(source: str | Path, dest: str | Path = "data", *, demo_kwargs: dict | None = None
                  ) -> Path:
    """Returns a local dataset root (the folder holding `indiana_reports.csv`) for `source`.

    Args:
        source: "demo" (generated into `dest/demo`, reused while `demo_kwargs` stay the same;
            "demo:forced" / "demo:realistic" choose its distractor setting, "demo:union" its union
            masks, combined as "demo:forced,union": see `demo_options` and `demo.generate`), a
            dataset folder (used in place; the root may be one level down), a `.zip` (copied into
            `dest` when it lives elsewhere, e.g. on a mounted Google Drive, then extracted once into
            `dest/<zip stem>/`), a Google Drive link or file id (downloaded to `dest/<id>.zip`), or
            `kaggle:<owner>/<dataset>` (downloaded by `kagglehub` into its cache on this machine).
        dest: the local folder where datasets land.
        demo_kwargs: keyword arguments of `synthetic.make_demo_dataset` for the demo.
    """
    dest = Path(dest)
    variant = demo_variant(source)
    if variant is not None:
        kwargs = {**(demo_kwargs or {}), **demo_options(variant)}
        setting = kwargs.get("distractors", synthetic.DISTRACTORS[0])
        parts = ([] if setting == synthetic.DISTRACTORS[0] else [setting]) + ["union"] * bool(kwargs.get("union"))
        return _fetch_demo(dest / "-".join(["demo", *parts]), kwargs)
    handle = kaggle_handle(source)
    if handle is not None:
        return find_root(download_kaggle(handle), origin=source)
    path = Path(source).expanduser()
    if path.is_dir():
        return find_root(path)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"{path}: not a zip file; pass a dataset folder, a .zip of it, a Google "
                               f"Drive link or 'demo'")
        return _fetch_zip(path, dest)
    file_id = drive_id(str(source))
    if file_id is not None:
        return _fetch_zip(_download_drive(file_id, dest), dest)
    raise DatasetError(f"{source}: not found; pass an existing dataset folder, a .zip of it, a Google "
                       f"Drive link or file id, kaggle:<owner>/<dataset> (e.g. {KAGGLE_IU}), or "
                       "'demo'")


DEMO_UNION = "union"


def demo_options(variant: str) -> dict:
    """The generator's keyword arguments that a demo source names after "demo:", comma-separated:
    a distractor setting ("realistic" / "forced") and "union" (`make_demo_dataset(union=True)`):
    "forced,union" -> {"distractors": "forced", "union": True}; "" -> {}."""
    options: dict = {}
    for word in (w.strip().lower() for w in variant.split(",") if w.strip()):
        if word in synthetic.DISTRACTORS and "distractors" not in options:
            options["distractors"] = word
        elif word == DEMO_UNION and "union" not in options:
            options["union"] = True
        else:
            raise DatasetError(f"demo:{variant}: unknown or repeated setting {word!r}; write demo:<settings> with "
                               f"at most one of {', '.join(synthetic.DISTRACTORS)} and {DEMO_UNION!r}, "
                               "comma-separated (e.g. demo:forced,union)")
    return options


def fetch_masks(source: str | Path, dest: str | Path = "data/masks") -> Path:
    """A local folder of hand-drawn mask files for `source`: a folder, a `.zip` (copied and
    extracted once into `dest`), a Drive path or a Drive link / file id. Inside it the masks may
    lie at the top, in a `masked/` sub-folder or in the one sub-folder that holds images."""
    dest = Path(dest)
    handle = kaggle_handle(source)
    if handle is not None:
        return find_mask_folder(download_kaggle(handle), origin=source)
    path = Path(source).expanduser()
    if path.is_dir():
        return find_mask_folder(path)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"MASKS_SOURCE {path}: not a zip file; {MASKS_HELP}")
        return _fetch_zip(path, dest, find=find_mask_folder)
    file_id = drive_id(str(source))
    if file_id is not None:
        return _fetch_zip(_download_drive(file_id, dest), dest, find=find_mask_folder)
    raise DatasetError(f"MASKS_SOURCE {source}: not found; {MASKS_HELP}")


def kaggle_handle(source: str | Path) -> str | None:
    """`owner/dataset` (optionally `/versions/N`) of a `kaggle:` source, else None; DatasetError
    for a `kaggle:` source that is not a handle."""
    text = str(source).strip()
    if not text.lower().startswith(KAGGLE_PREFIX):
        return None
    handle = text[len(KAGGLE_PREFIX):].strip().strip("/")
    handle = re.sub(r"^(https?://)?(www\.)?kaggle\.com/datasets/", "", handle)
    if not _KAGGLE_HANDLE.match(handle):
        raise DatasetError(f"{source}: not a Kaggle dataset; write kaggle:<owner>/<dataset>, e.g. "
                           f"{KAGGLE_IU} (the part of the dataset page's address after /datasets/)")
    return handle


def kaggle_credentials(colab_secrets: bool = True) -> str | None:
    """Where the Kaggle API credentials come from (environment, ~/.kaggle, Colab's secrets, which
    are copied into the environment for kagglehub), or None when there are none. Colab asks the
    user before a notebook reads a secret: `colab_secrets=False` does not look there."""
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME")
                                              and os.environ.get("KAGGLE_KEY")):
        return "environment variables"
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle").expanduser()
    for name in ("kaggle.json", "access_token"):
        if (folder / name).is_file():
            return str(folder / name)
    try:
        from google.colab import userdata  # only on Colab
    except ImportError:
        userdata = None
    if colab_secrets and userdata is not None:
        found = {}
        for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
            try:
                found[name] = (userdata.get(name) or "").strip()
            except Exception:  # not defined, or this notebook may not read it
                found[name] = ""
        if found["KAGGLE_API_TOKEN"] or (found["KAGGLE_USERNAME"] and found["KAGGLE_KEY"]):
            os.environ.update({k: v for k, v in found.items() if v})
            return "Colab secrets"
    return None


def _refused(err: Exception) -> bool:
    """Whether kagglehub's error says that Kaggle wants credentials (401/403, or no credentials)."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return (type(err).__name__ in ("UnauthenticatedError", "CredentialError") or status in (401, 403)
            or bool(re.search(r"\b(401|403)\b|unauthori[sz]ed|forbidden|credential", str(err), re.I)))


def download_kaggle(handle: str) -> Path:
    """Download (or reuse from kagglehub's cache on this machine) the Kaggle dataset `handle` and
    return its folder. A public dataset needs no credentials, so the download is first tried with
    what is there, none at all included; only when Kaggle refuses are the credentials looked for
    (Colab's secrets too) and the download tried again. DatasetError with the reason and the fix
    when it fails."""
    try:
        import kagglehub
    except ImportError as err:
        raise DatasetError("kaggle: sources need the kagglehub package (pip install kagglehub; "
                           "it is in requirements.txt)") from err
    where = kaggle_credentials(colab_secrets=False)
    print(f"Kaggle dataset {handle}: downloading with kagglehub ("
          + (f"credentials: {where}" if where else "no credentials: a public dataset needs none")
          + "); reused from its cache when already on this machine")
    try:
        folder = Path(kagglehub.dataset_download(handle))
    except Exception as err:  # kagglehub raises HTTP, auth and many other errors
        if where or not _refused(err):
            raise _download_error(handle, err, where) from err
        where = kaggle_credentials()
        if where is None:
            raise DatasetError(f"Kaggle dataset {handle}: Kaggle refused the download without "
                               f"credentials ({type(err).__name__}: {err}). {KAGGLE_HELP}.") from err
        print(f"Kaggle refused the download without credentials: trying again with {where}")
        try:
            folder = Path(kagglehub.dataset_download(handle))
        except Exception as again:
            raise _download_error(handle, again, where) from again
    if not folder.is_dir():
        raise DatasetError(f"Kaggle dataset {handle}: kagglehub returned {folder}, not a folder")
    return folder


def _download_error(handle: str, err: Exception, where: str | None) -> DatasetError:
    return DatasetError(
        f"Kaggle dataset {handle}: the download failed ({type(err).__name__}: {err}). Check the "
        f"handle (kaggle.com/datasets/{handle} must exist), that your account accepted the "
        f"dataset's rules on that page, and the credentials ({where or 'none'}). {KAGGLE_HELP}.")


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def find_mask_folder(folder: str | Path, origin: str | Path | None = None) -> Path:
    """The folder of mask images in `folder`: itself, its `masked/` (at most two levels down), or
    its only sub-folder holding images. DatasetError otherwise."""
    folder = Path(folder)
    if _has_images(folder):
        return folder
    for candidate in [folder / MASKS_DIR, *sorted(folder.glob(f"*/{MASKS_DIR}"))]:
        if candidate.is_dir() and _has_images(candidate):
            return candidate
    holding = [p for p in sorted(folder.rglob("*")) if p.is_dir() and not p.name.startswith((".", "__"))
               and _has_images(p)]
    if len(holding) == 1:
        return holding[0]
    raise DatasetError(f"MASKS_SOURCE {origin or folder}: no folder of mask images found inside "
                       f"({len(holding)} candidates); {MASKS_HELP}")


def _fetch_demo(folder: Path, demo_kwargs: dict) -> Path:
    params = synthetic.demo_params(**demo_kwargs)
    marker = folder / synthetic.MARKER
    if marker.is_file():
        stored = json.loads(marker.read_text())
        if stored.get("complete") and stored.get("params") == params and not missing_parts(folder):
            return folder
    return synthetic.make_demo_dataset(folder, **demo_kwargs)


def drive_id(source: str) -> str | None:
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


def _fetch_zip(zip_path: Path, dest: Path, find=find_root) -> Path:
    """Extracts `zip_path` once into `dest/<stem>/` and returns the dataset root inside it (or
    what `find` picks)."""
    target = dest / zip_path.stem
    stat = zip_path.stat()
    stamp = {"zip": zip_path.name, "size": stat.st_size, "mtime": int(stat.st_mtime)}
    marker = target / EXTRACTED_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return find(target, origin=zip_path)
    local = dest / zip_path.name
    if local.resolve() != zip_path.resolve():  # reading a mounted Drive member by member is slow
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(zip_path, local)
    _extract(local, target, origin=zip_path)
    marker.write_text(json.dumps(stamp))
    return find(target, origin=zip_path)


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

