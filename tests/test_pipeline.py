"""The data step of the notebooks: masks kept apart from the images, no masks at all, run.json, and
the inputs one notebook takes from another."""
from __future__ import annotations

import dataclasses
import shutil
import zipfile

import pytest

from helpers.__main__ import main
from helpers.layout import MASKS_CSV, MASKS_DIR, DatasetError
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
    from helpers.train import pretrain

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
