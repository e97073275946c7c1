from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import synthetic
from helpers.catalog import load_catalog
from helpers.io import load_gray, load_mask

SMALL = dict(n_reports=12, n_masks=8, image_size=(64, 96))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return synthetic.make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", **SMALL)


@pytest.fixture(scope="module")
def catalog(demo):
    return load_catalog(demo)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, demo):
    again = synthetic.make_demo_dataset(tmp_path / "again", **SMALL)
    assert _tree_bytes(again) == _tree_bytes(demo)
    other = synthetic.make_demo_dataset(tmp_path / "other", **{**SMALL, "seed": 1})
    name = "images/images_normalized/1_IM-0001-1001.dcm.png"
    assert (other / name).read_bytes() != (demo / name).read_bytes()


def test_catalog_of_demo_has_expected_counts(catalog):
    summary = catalog.summary()
    assert summary["images"] == 24 and summary["frontal"] == 12 and summary["lateral"] == 12
    assert summary["reports"] == 12 and summary["reports_without_text"] == 0
    assert summary["labeled_cases"] == 8 and summary["masks"] == 9 and summary["orphan_masks"] == 1
    assert set(catalog.problems["kind"]) == {"orphan_mask", "size_mismatch"}
    assert (catalog.cases["projection"] == "Frontal").all()
    assert sorted(catalog.cases["uid"]) == list(range(1, 9))
    assert catalog.cases["text_source"].value_counts().to_dict() == {"findings": 7, "impression": 1}
    assert not catalog.reports["text"].str.contains("XXXX").any()


def test_images_are_8bit_and_sizes_vary_within_bounds(catalog):
    sizes = catalog.images[["width", "height"]].to_numpy(dtype=int)
    assert sizes.min() >= 64 and sizes.max() <= 96
    assert (sizes[:, 0] != sizes[:, 1]).any()  # width and height drawn independently
    with Image.open(catalog.images["path"].iloc[0]) as img:
        assert img.mode == "L"


def test_mask_forms_vary_and_all_load_as_binary(catalog):
    names = [Path(p).name for p in catalog.cases["mask_path"]]
    assert any(n.endswith("_mask.PNG") for n in names) and any(n.endswith(".dcm.PNG") for n in names)
    assert any(n.endswith("-mask.png") for n in names) and any(n.endswith(".dcm_mask.png") for n in names)
    for path in catalog.cases["mask_path"]:
        mask = load_mask(path)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}


def test_mask_lies_on_the_image_side_the_text_names(catalog):
    for row in catalog.cases.itertuples():
        words = set(row.text.lower().replace(",", " ").replace(".", " ").split())
        assert len(words & {"right", "left"}) == 1, row.text
        image = load_gray(row.image_path)
        mask = load_mask(row.mask_path, size=image.shape[::-1])
        centroid_x = np.nonzero(mask)[1].mean()
        if "right" in words:  # the patient's right is on the image's left
            assert centroid_x < image.shape[1] / 2, row.text
        else:
            assert centroid_x > image.shape[1] / 2, row.text


def test_every_labeled_image_has_a_visible_distractor_outside_the_mask(catalog, demo):
    lesions = pd.read_csv(demo / synthetic.LESIONS_CSV)
    for row in catalog.cases.itertuples():
        image = load_gray(row.image_path).astype(float)
        mask = load_mask(row.mask_path, size=image.shape[::-1])
        h, w = image.shape
        lung_band = image[int(0.25 * h): int(0.6 * h)]
        lungs = np.concatenate([lung_band[:, int(0.12 * w): int(0.35 * w)].ravel(),
                                lung_band[:, int(0.65 * w): int(0.88 * w)].ravel()])
        background = np.percentile(lungs, 30)  # ribs and lesions are brighter
        own = lesions[lesions["uid"] == row.uid]
        distractors = own[own["role"] == "distractor"]
        assert 1 <= len(distractors) <= 2
        assert set(distractors["zone"]).isdisjoint(own.loc[own["role"] == "target", "zone"])
        for d in distractors.itertuples():
            assert mask[d.y, d.x] == 0
            assert image[max(d.y - 1, 0): d.y + 2, max(d.x - 1, 0): d.x + 2].mean() > background + 40
        target = own[own["role"] == "target"].iloc[0]
        assert mask[target.y, target.x] == 1
        assert target.kind in row.text.lower() or target.kind == "nodule" and "nodul" in row.text.lower()


def test_effusions_only_in_lower_zones(demo):
    lesions = pd.read_csv(demo / synthetic.LESIONS_CSV)
    assert lesions["zone"].isin(synthetic.ZONES).all()
    assert lesions.loc[lesions["kind"] == "effusion", "zone"].str.endswith("lower").all()


def test_zip_holds_the_layout(demo):
    with zipfile.ZipFile(demo / synthetic.ZIP_NAME) as zf:
        names = set(zf.namelist())
    assert {"indiana_reports.csv", "indiana_projections.csv"} <= names
    assert sum(n.startswith("images/images_normalized/") for n in names) == 24
    assert sum(n.startswith("masked/") for n in names) == 9


def test_without_quirks_masks_are_plain_and_nothing_is_orphaned(tmp_path):
    root = synthetic.make_demo_dataset(tmp_path / "plain", n_reports=6, n_masks=4, image_size=(48, 64),
                                       make_zip=False, quirks=False)
    catalog = load_catalog(root)
    assert not (root / synthetic.ZIP_NAME).exists()
    assert catalog.problems.empty and len(catalog.cases) == 4
    assert (catalog.cases["text_source"] == "findings").all()
    assert not catalog.reports["findings"].str.contains("XX").any()


def test_smoke_size_works(tmp_path):
    root = synthetic.make_demo_dataset(tmp_path / "smoke", n_reports=20, n_masks=16, image_size=(96, 128),
                                       make_zip=False)
    assert load_catalog(root).summary()["labeled_cases"] == 16


def test_regenerates_over_an_old_demo_but_refuses_a_foreign_folder(tmp_path):
    root = synthetic.make_demo_dataset(tmp_path / "d", n_reports=6, n_masks=2, image_size=(32, 40))
    synthetic.make_demo_dataset(root, n_reports=3, n_masks=2, image_size=(32, 40))
    assert len(list((root / "images/images_normalized").iterdir())) == 6
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        synthetic.make_demo_dataset(foreign, n_reports=3, n_masks=2)
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("kwargs", [dict(n_reports=3, n_masks=4), dict(n_reports=0, n_masks=0),
                                    dict(image_size=(96, 64)), dict(image_size=(8, 8))])
def test_bad_arguments_raise(tmp_path, kwargs):
    with pytest.raises(ValueError):
        synthetic.make_demo_dataset(tmp_path / "x", **kwargs)
