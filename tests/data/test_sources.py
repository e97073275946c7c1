"""Fetching a dataset (helpers/data/sources.py): folders, zips, Drive, the demo generated once."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from helpers.core import layout
from helpers.core.layout import DatasetError
from helpers.data import sources
from helpers.data.catalog import load_catalog
from helpers.data.demo import generate as synthetic
from tests.data import make_root


def zip_folder(folder: Path, zip_path: Path, top: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}{path.relative_to(folder).as_posix()}")
    return zip_path


FILE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz_-012"


def test_missing_source_is_not_found(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        sources.fetch_dataset(tmp_path / "nope.zip", tmp_path / "data")


def test_folder_is_used_in_place_also_one_level_down(tmp_path):
    root = make_root(tmp_path / "outer" / "Dataset")
    assert sources.fetch_dataset(root, tmp_path / "data") == root
    assert sources.fetch_dataset(tmp_path / "outer", tmp_path / "data") == root


def test_folder_without_layout_lists_what_is_missing(tmp_path):
    (tmp_path / "ds" / layout.IMAGES_DIR).mkdir(parents=True)
    with pytest.raises(DatasetError) as err:
        sources.fetch_dataset(tmp_path / "ds", tmp_path / "data")
    message = str(err.value)
    assert "indiana_reports.csv" in message and "indiana_projections.csv" in message
    assert "images/images_normalized" not in message.split("missing")[1].split(" in ")[0]


def test_zip_under_a_top_folder_is_copied_extracted_once(tmp_path, monkeypatch):
    source = zip_folder(make_root(tmp_path / "src"), tmp_path / "elsewhere.zip", top="Dataset/")
    dest = tmp_path / "data"
    root = sources.fetch_dataset(source, dest)
    assert root == dest / "elsewhere" / "Dataset"
    assert (dest / "elsewhere.zip").is_file()  # the local copy
    assert len(load_catalog(root).images) == 8

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(zipfile.ZipFile, "extract", no_extraction)
    assert sources.fetch_dataset(source, dest) == root


def test_changed_zip_is_extracted_again(tmp_path):
    source = zip_folder(make_root(tmp_path / "src", n=2), tmp_path / "ds.zip")
    dest = tmp_path / "data"
    sources.fetch_dataset(source, dest)
    zip_folder(make_root(tmp_path / "src3", n=3), source)
    os.utime(source, (1_000_000_000, 1_000_000_000))
    assert len(load_catalog(sources.fetch_dataset(source, dest)).images) == 6


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt", "C:\\evil.txt",
                                    "\\\\srv\\evil.txt"])
def test_zip_with_unsafe_member_is_rejected_before_extracting(tmp_path, member):
    source = tmp_path / "bad.zip"
    with zipfile.ZipFile(source, "w") as zf:
        zf.writestr("indiana_reports.csv", "uid,findings,impression\n")
        zf.writestr(member, "boom")
    dest = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        sources.fetch_dataset(source, dest)
    assert "bad.zip" in str(err.value) and member in str(err.value)
    assert not (dest / "bad").exists() and not (tmp_path / "evil.txt").exists()


def test_zip_without_layout_and_non_zip_file(tmp_path):
    source = tmp_path / "other.zip"
    with zipfile.ZipFile(source, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(DatasetError, match="other.zip.*indiana_reports.csv"):
        sources.fetch_dataset(source, tmp_path / "data")
    text = tmp_path / "notes.zip"
    text.write_text("not a zip")
    with pytest.raises(DatasetError, match="not a zip"):
        sources.fetch_dataset(text, tmp_path / "data")


@pytest.mark.parametrize("source", [f"https://drive.google.com/file/d/{FILE_ID}/view?usp=sharing",
                                    f"https://drive.google.com/open?id={FILE_ID}",
                                    f"https://drive.google.com/uc?id={FILE_ID}&export=download", FILE_ID])
def test_drive_download_failure_explains_manual_upload(tmp_path, monkeypatch, source):
    import gdown

    calls = []

    def failing_download(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("no network")

    monkeypatch.setattr(gdown, "download", failing_download)
    with pytest.raises(DatasetError) as err:
        sources.fetch_dataset(source, tmp_path / "data")
    assert calls[0]["id"] == FILE_ID and "fuzzy" not in calls[0]
    assert FILE_ID in str(err.value) and "manually" in str(err.value) and "upload" in str(err.value)


def test_drive_download_is_extracted(tmp_path, monkeypatch):
    import gdown

    dataset_zip = zip_folder(make_root(tmp_path / "src"), tmp_path / "remote.zip")

    def fake_download(id, output, **kwargs):
        Path(output).write_bytes(dataset_zip.read_bytes())
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    root = sources.fetch_dataset(f"https://drive.google.com/file/d/{FILE_ID}/view", tmp_path / "data")
    assert root == tmp_path / "data" / FILE_ID and (tmp_path / "data" / f"{FILE_ID}.zip").is_file()


def test_demo_is_generated_once_and_again_when_kwargs_change(tmp_path, monkeypatch):
    kwargs = dict(n_reports=4, n_masks=3, image_size=(32, 40))
    root = sources.fetch_dataset("demo", tmp_path, demo_kwargs=kwargs)
    assert root == tmp_path / "demo" and load_catalog(root).summary()["labeled_cases"] == 3
    make = synthetic.make_demo_dataset

    def no_generation(*args, **kwargs):
        raise AssertionError("generated twice")

    monkeypatch.setattr(synthetic, "make_demo_dataset", no_generation)
    assert sources.fetch_dataset("demo", tmp_path, demo_kwargs=dict(kwargs, seed=0)) == root
    monkeypatch.setattr(synthetic, "make_demo_dataset", make)
    sources.fetch_dataset("demo", tmp_path, demo_kwargs=dict(kwargs, n_reports=5))
    assert load_catalog(root).summary()["reports"] == 5
