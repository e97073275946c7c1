"""The data step of the notebooks (helpers/pipeline.py): masks kept apart from the images, no masks at all,
run.json, and the inputs one notebook takes from another."""
from __future__ import annotations

import dataclasses
import shutil
import zipfile

import pytest

from helpers.__main__ import main
from helpers.core.layout import MASKS_CSV, MASKS_DIR, DatasetError
from helpers.pipeline import MissingInputError, ensure_phase1, ensure_phase2, prepare, read_run_settings


@pytest.fixture
def kaggle_root(demo_root, tmp_path):
    """The demo dataset as the plain Kaggle download: no masked/ folder."""
    root = tmp_path / "kaggle"
    shutil.copytree(demo_root, root, ignore=shutil.ignore_patterns(MASKS_DIR, MASKS_CSV))
    return root


@pytest.fixture
def masks_zip(demo_root, tmp_path):
    path = tmp_path / "hand_drawn_masks.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for mask in sorted((demo_root / MASKS_DIR).iterdir()):
            zf.write(mask, f"Masks/{MASKS_DIR}/{mask.name}")
    return path


def _openi_name(kaggle_name: str) -> str:
    """`1_IM-0001-4001.dcm_mask.png` -> OpenI's `CXR1_1_IM-0001-4001.png` (uid, series, IM numbers)."""
    uid, rest = kaggle_name.split("_", 1)
    return f"CXR{uid}_1_{rest.split('.')[0]}.png"


@pytest.fixture
def no_kaggle_credentials(monkeypatch, tmp_path):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.setenv(name, "")  # recorded, so that what the test sets is undone after it
        monkeypatch.delenv(name)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
    monkeypatch.setitem(__import__("sys").modules, "google.colab", None)  # not on Colab


def _fake_kagglehub(monkeypatch, folder, calls):
    import sys
    import types

    def dataset_download(handle, path=None, **kwargs):
        calls.append(handle)
        return str(folder)

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=dataset_download))


@pytest.fixture
def dataset_zip(demo_root, tmp_path):
    """The demo dataset as a zip on "Drive" (masks included), under one extra top folder."""
    path = tmp_path / "drive" / "Dataset.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(demo_root.rglob("*")):
            if file.is_file():
                zf.write(file, f"Dataset/{file.relative_to(demo_root)}")
    return path


def test_prepare_without_masks_explores_and_names_masks_source(kaggle_root, tmp_path, capsys):
    prep = prepare(str(kaggle_root), "smoke", data_dir=tmp_path / "data", out_dir=tmp_path / "run")
    assert prep.cases.empty and not prep.has_masks and "split" in prep.cases
    assert prep.catalog.summary()["images"] > 0 and prep.catalog.image_paths()
    assert "MASKS_SOURCE" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="MASKS_SOURCE.*--masks"):
        prep.require_masks()
    assert not (tmp_path / "run" / "splits.csv").exists()
    assert main(["finetune", "--data", str(kaggle_root), "--mode", "smoke", "--out", str(tmp_path / "run")]) == 1
    assert "--masks" in capsys.readouterr().err


def test_phase1_trains_without_masks(kaggle_root, tmp_path, pretrain_cfg):
    from helpers.training.pretrain import pretrain

    prep = prepare(str(kaggle_root), "smoke", data_dir=tmp_path / "data", out_dir=tmp_path / "run")
    cfg = dataclasses.replace(pretrain_cfg, epochs=1, max_images=8)
    result = pretrain(cfg, prep.catalog.image_paths(), tmp_path / "run" / "p1", progress=False)
    assert result.best_path.exists()


def test_masks_from_a_separate_zip_are_merged_and_recorded(kaggle_root, masks_zip, catalog, tmp_path):
    run = tmp_path / "run"
    prep = prepare(str(kaggle_root), "smoke", masks=str(masks_zip), data_dir=tmp_path / "data", out_dir=run)
    assert prep.has_masks and len(prep.cases) == len(catalog.cases)
    assert set(prep.cases["split"]) == {"train", "val", "test"}
    assert read_run_settings(run) == {"data_source": str(kaggle_root), "masks_source": str(masks_zip),
                                      "mode": "smoke"}
    later = prepare(None, None, data_dir=tmp_path / "data", out_dir=run)  # notebooks 02-04
    assert later.run.origin == "run.json" and later.run.masks_source == str(masks_zip)
    assert later.cases["case_id"].tolist() == prep.cases["case_id"].tolist()


def test_missing_inputs_name_the_notebook_and_the_way_out(demo_root, tmp_path):
    prep = prepare(str(demo_root), "real", data_dir=tmp_path / "data", out_dir=tmp_path / "run")
    with pytest.raises(MissingInputError, match=r"run notebook 02.*PHASE1_OBJECTIVE = None"):
        ensure_phase1(prep, "masked")
    with pytest.raises(MissingInputError, match=r"run notebook 03.*" + str(tmp_path / "run")):
        ensure_phase2(prep)


def test_openi_mask_names_and_a_masks_csv_inside_masks_source(demo_root, kaggle_root, catalog, tmp_path):
    """Masks shared under OpenI names pair with their Kaggle images; a masks.csv beside them is
    read (its text wins), not listed as a stray file."""
    import pandas as pd

    source = tmp_path / "openi_masks"
    (source / MASKS_DIR).mkdir(parents=True)
    kaggle_names = sorted(p.name for p in (demo_root / MASKS_DIR).iterdir())
    for name in kaggle_names:
        shutil.copy(demo_root / MASKS_DIR / name, source / MASKS_DIR / _openi_name(name))
    first = _openi_name(kaggle_names[0])
    pd.DataFrame({"mask": [first], "image": [""], "text": ["Opacity in the left apex."]}).to_csv(
        source / MASKS_CSV, index=False)
    prep = prepare(str(kaggle_root), "smoke", masks=str(source), data_dir=tmp_path / "data",
                   out_dir=tmp_path / "run")
    assert prep.has_masks and sorted(prep.cases["filename"]) == sorted(catalog.cases["filename"])
    assert all(c.startswith("CXR") and f.startswith(c.removeprefix("CXR").split("_")[0] + "_IM")
               for c, f in zip(prep.cases["case_id"], prep.cases["filename"]))
    row = prep.cases.set_index("case_id").loc[first.removesuffix(".png")]
    assert row["text"] == "Opacity in the left apex." and row["text_source"] == "masks.csv"
    assert "not_a_mask" not in set(prep.catalog.problems["kind"])


def test_masks_that_pair_with_nothing_are_shown_beside_the_images(kaggle_root, tmp_path):
    source = tmp_path / "odd_masks"
    source.mkdir()
    for i in range(4):
        shutil.copy(next((kaggle_root / "images" / "images_normalized").iterdir()),
                    source / f"patient{i}_lesion.png")
    prep = prepare(str(kaggle_root), "smoke", masks=str(source), data_dir=tmp_path / "data",
                   out_dir=tmp_path / "run")
    message = prep.masks_message
    assert not prep.has_masks and f"MASKS_SOURCE {source}" in message
    assert "set MASKS_SOURCE" not in message and "CXR1_1_IM-0001-4001" in message  # the rule
    lines = [line for line in message.splitlines() if "patient" in line]
    assert len(lines) == 3 and all(".dcm.png" in line for line in lines)  # mask | image, side by side
    with pytest.raises(DatasetError, match="none of the 4 mask file"):
        prep.require_masks()


def test_kaggle_source_downloads_with_kagglehub_and_is_recorded(kaggle_root, tmp_path, monkeypatch,
                                                                no_kaggle_credentials, capsys):
    """`kaggle:<owner>/<dataset>` goes through kagglehub (the download holds the layout one folder
    down, as Kaggle's does); a public dataset downloads without credentials."""
    download = tmp_path / "kagglehub-cache" / "versions" / "2"
    shutil.copytree(kaggle_root, download / "Dataset")
    calls: list[str] = []
    _fake_kagglehub(monkeypatch, download, calls)
    source = "kaggle:raddar/chest-xrays-indiana-university"
    prep = prepare(source, "smoke", data_dir=tmp_path / "data", out_dir=tmp_path / "run")
    assert calls == ["raddar/chest-xrays-indiana-university"]
    assert prep.catalog.root == download / "Dataset" and prep.catalog.summary()["images"] > 0
    assert read_run_settings(tmp_path / "run")["data_source"] == source
    assert "no credentials: a public dataset needs none" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="not a Kaggle dataset; write kaggle:<owner>/<dataset>"):
        prepare("kaggle:just-a-name", "smoke", data_dir=tmp_path / "data", out_dir=tmp_path / "r2")


def test_kaggle_asks_for_credentials_only_when_kaggle_refuses(tmp_path, monkeypatch,
                                                             no_kaggle_credentials):
    """A dataset that Kaggle refuses to anonymous users: without credentials the message names the
    one token (KAGGLE_API_TOKEN) and the older pair; with the token as a Colab secret (read only
    after the refusal) the second try downloads."""
    import os
    import sys
    import types

    from helpers.data.sources import download_kaggle

    class UnauthenticatedError(Exception):  # kagglehub.exceptions' name
        pass

    folder, calls = tmp_path / "dataset", []
    folder.mkdir()

    def dataset_download(handle, **kwargs):
        calls.append(os.environ.get("KAGGLE_API_TOKEN"))
        if not os.environ.get("KAGGLE_API_TOKEN"):
            raise UnauthenticatedError("You are not authenticated")
        return str(folder)

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=dataset_download))
    with pytest.raises(DatasetError, match=r"owner/rules-first: Kaggle refused the download without "
                                           r"credentials.*KAGGLE_API_TOKEN.*KAGGLE_USERNAME and KAGGLE_KEY"):
        download_kaggle("owner/rules-first")
    assert calls == [None]
    read = []

    def get(name):
        read.append(name)
        if name != "KAGGLE_API_TOKEN":
            raise KeyError(name)
        return "token-123"

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert download_kaggle("owner/rules-first") == folder
    assert calls == [None, None, "token-123"] and read[0] == "KAGGLE_API_TOKEN"


def test_kaggle_credentials_from_colab_secrets_and_download_errors(monkeypatch, tmp_path,
                                                                   no_kaggle_credentials):
    import sys
    import types

    from helpers.data.sources import download_kaggle, kaggle_credentials

    secrets = {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": "abc"}

    def get(name):
        if name not in secrets:
            raise KeyError(name)  # Colab's SecretNotFoundError
        return secrets[name]

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert kaggle_credentials() == "Colab secrets"
    assert __import__("os").environ["KAGGLE_USERNAME"] == "someone"  # where kagglehub reads them

    def failing(handle, **kwargs):
        raise RuntimeError("403 Client Error: Forbidden")

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=failing))
    with pytest.raises(DatasetError, match=r"owner/data: the download failed \(RuntimeError: 403.*"
                                           r"accepted the dataset's rules"):
        download_kaggle("owner/data")


def test_later_machines_read_the_run_folder_not_the_source(dataset_zip, tmp_path):
    """Notebook 01 extracts the zip on its machine and stages catalog + image cache in the run
    folder; a later machine (nothing extracted) reads both and extracts nothing, until it asks for
    pixels no cache holds: then it fetches the source (still on Drive) on its own machine."""
    import numpy as np

    from helpers.data.unlabeled import iu_pretrain_paths
    from helpers.training.datasets import labeled_arrays

    run, first_machine = tmp_path / "run", tmp_path / "machine1"
    first = prepare(str(dataset_zip), "smoke", data_dir=first_machine, out_dir=run)
    first.stage_images(32)
    expected = labeled_arrays(first.cases, 32, run / "cache")
    shutil.rmtree(first_machine)  # the machine is gone; the run folder (Drive) stays
    later_machine = tmp_path / "machine2"
    later = prepare(None, None, data_dir=later_machine, out_dir=run)
    assert later.from_run_folder and not later_machine.exists()
    pd_cols = ["case_id", "filename", "uid", "projection", "text", "text_source", "split"]
    assert later.cases[pd_cols].equals(first.cases[pd_cols])
    assert later.catalog.images.drop(columns="path").equals(first.catalog.images.drop(columns="path"))
    assert later.catalog.reports.equals(first.catalog.reports)
    assert later.catalog.summary() == first.catalog.summary()
    assert later.stage_images(32) == later.catalog.image_paths() and not later_machine.exists()
    arrays = labeled_arrays(later.cases, 32, run / "cache")  # Phase 2's arrays, from the cache
    np.testing.assert_array_equal(arrays.images, expected.images)
    np.testing.assert_array_equal(arrays.masks, expected.masks)  # masks copied into the run folder
    assert len(iu_pretrain_paths(later.catalog.images, later.cases)) > 0
    read = later.image_reader(32)
    np.testing.assert_array_equal(read(later.cases["image_path"].iloc[0]), expected.images[0])
    paths = later.stage_images(48)  # another size: the source is fetched on this machine
    assert later_machine.exists() and all(__import__("os").path.isfile(p) for p in paths)
    assert later.cases["image_path"].isin(paths).all()


def test_a_source_on_this_colab_machine_only_is_not_recorded_as_the_source(dataset_zip, tmp_path,
                                                                           monkeypatch, capsys):
    from helpers import pipeline
    from helpers.data import staging

    monkeypatch.setattr(staging, "on_colab", lambda: True)  # the zip is not under /content/drive
    assert staging.persistent_source("kaggle:o/d") and staging.persistent_source("demo")
    assert not staging.persistent_source(str(dataset_zip))
    assert staging.persistent_source("/content/drive/MyDrive/Dataset.zip")
    run = tmp_path / "run"
    first = prepare(str(dataset_zip), "smoke", data_dir=tmp_path / "m1", out_dir=run)
    first.stage_images(32)
    assert "on this Colab machine only" in capsys.readouterr().err
    record = read_run_settings(run)
    assert record["data_source"] is None and record["data_source_this_machine_only"] == str(dataset_zip)
    shutil.rmtree(tmp_path / "m1")
    dataset_zip.unlink()  # gone with the machine
    later = prepare(None, None, data_dir=tmp_path / "m2", out_dir=run)
    assert later.from_run_folder and later.stage_images(32)  # enough at the staged size
    with pytest.raises(DatasetError, match="notebook 01's machine only. Copy it to Drive"):
        later.stage_images(48)
    assert pipeline.resolve_run(None, None, None, run).data_source == str(dataset_zip)


def test_a_snapshot_is_renamed_into_place_whole(catalog, tmp_path):
    from helpers.data.staging import load_snapshot, save_snapshot

    folder = tmp_path / "catalog"
    save_snapshot(catalog, folder, "demo", None)
    (folder / "masked" / "stale.png").write_bytes(b"x")  # what the previous snapshot held goes
    save_snapshot(catalog, folder, "demo", None)
    assert [p.name for p in tmp_path.iterdir()] == ["catalog"]  # no temporary folder left
    assert not (folder / "masked" / "stale.png").exists()
    again = load_snapshot(folder, "demo", None)
    assert again.cases["case_id"].tolist() == catalog.cases["case_id"].tolist()
