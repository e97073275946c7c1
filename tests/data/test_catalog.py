"""The catalog (helpers/data/catalog.py): the CSVs, images and masks of a dataset, and what is wrong with them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core import layout
from helpers.core.layout import DatasetError
from helpers.data import io
from helpers.data.catalog import case_text, clean_text, load_catalog
from tests.data import H, W, box, frontal, lateral, make_root


def write_mask(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_csv_missing_a_required_column(tmp_path):
    root = make_root(tmp_path / "ds")
    pd.read_csv(root / layout.REPORTS_CSV).drop(columns="findings").to_csv(root / layout.REPORTS_CSV)
    with pytest.raises(DatasetError, match=r"indiana_reports\.csv.*findings"):
        load_catalog(root)


@pytest.mark.parametrize("garbage", [np.random.default_rng(0).bytes(2000),  # with NUL bytes
                                     bytes(range(0x80, 0x100)) * 8])  # no NUL, not UTF-8
def test_unreadable_csv(tmp_path, garbage):
    root = make_root(tmp_path / "ds")
    (root / layout.PROJECTIONS_CSV).write_bytes(garbage)
    with pytest.raises(DatasetError, match=r"indiana_projections\.csv.*CSV"):
        load_catalog(root)


def test_duplicate_uids(tmp_path):
    root = make_root(tmp_path / "ds")
    reports = pd.read_csv(root / layout.REPORTS_CSV)
    pd.concat([reports, reports.iloc[[2]]]).to_csv(root / layout.REPORTS_CSV, index=False)
    with pytest.raises(DatasetError, match=r"indiana_reports\.csv.*duplicate.*\[3\]"):
        load_catalog(root)


def test_catalog_tables(tmp_path):
    root = make_root(tmp_path / "ds")
    (root / layout.IMAGES_DIR / "99_unlisted.png").write_bytes(
        (root / layout.IMAGES_DIR / frontal(1)).read_bytes())
    projections = pd.read_csv(root / layout.PROJECTIONS_CSV)
    extra = pd.DataFrame([{"uid": 5, "filename": "5_gone.dcm.png", "projection": "Frontal"}])
    pd.concat([projections, extra]).to_csv(root / layout.PROJECTIONS_CSV, index=False)
    catalog = load_catalog(root)
    images = catalog.images.set_index("filename")
    assert len(images) == 9 and images.loc["99_unlisted.png", "projection"] == "Unknown"
    assert images.loc[frontal(1), "uid"] == 1
    assert (images["width"] == W).all() and (images["height"] == H).all()
    assert Path(images.loc[frontal(1), "path"]).is_absolute()
    assert catalog.problems[["kind", "file"]].values.tolist() == [
        ["missing_image", "images/images_normalized/5_gone.dcm.png"]]
    reports = catalog.reports.set_index("uid")
    assert reports.loc[1, "text"] == "Nodule in the right upper lobe, case 1. The are intact."
    assert reports.loc[1, "findings"].endswith("The XXXX are intact.")  # raw text kept
    assert reports.loc[2, "text"] == "Right upper lobe nodule."
    assert reports.loc[2, "n_words"] == 4
    assert len(catalog.image_paths()) == 9 and len(catalog.image_paths(frontal_only=True)) == 4
    summary = catalog.summary()
    assert summary["frontal"] == 4 and summary["lateral"] == 4 and summary["masks"] == 0
    assert catalog.cases.empty and summary["labeled_cases"] == 0


def test_corrupt_and_truncated_images_are_skipped_and_listed(tmp_path):
    root = make_root(tmp_path / "ds")
    (root / layout.IMAGES_DIR / lateral(1)).write_bytes(b"\x89PNG garbage")
    target = root / layout.IMAGES_DIR / frontal(2)
    target.write_bytes(target.read_bytes()[:120])  # a mask points to it: fully decoded
    write_mask(root / "masked" / f"{frontal(2)[:-4]}_mask.png", box())
    write_mask(root / "masked" / f"{frontal(3)[:-4]}_mask.png", box())
    catalog = load_catalog(root)
    corrupt = catalog.problems[catalog.problems["kind"] == "corrupt_image"]["file"].tolist()
    assert sorted(corrupt) == sorted([f"images/images_normalized/{lateral(1)}",
                                      f"images/images_normalized/{frontal(2)}"])
    assert len(catalog.images) == 6 and catalog.cases["uid"].tolist() == [3]
    assert "orphan_mask" in set(catalog.problems["kind"])


def test_masks_pair_by_name_variants_and_load_as_binary(tmp_path):
    root = make_root(tmp_path / "ds", n=4)
    masked = root / "masked"
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 2] = box(1)  # a faint blue mask: any channel > 0 counts
    write_mask(masked / f"{frontal(1)[:-4]}_mask.png", box(255))  # 1_IM-0001-1001.dcm_mask.png
    write_mask(masked / f"{frontal(2)[:-8]}_mask.PNG", rgb)  # 2_IM-0002-1001_mask.PNG, RGB
    write_mask(masked / frontal(3).replace(".png", ".PNG"), box(1))  # the image's name, 0/1 values
    write_mask(masked / f"{frontal(4)[:-4]}-mask.png", box(255, (2 * H, 2 * W)))  # other resolution
    write_mask(masked / f"{lateral(4)[:-4]}_mask.png", np.zeros((H, W), np.uint8))  # empty
    write_mask(masked / "77_IM-0077-1001.dcm_mask.png", box())  # orphan
    (masked / "notes.txt").write_text("not a mask")
    catalog = load_catalog(root)
    cases = catalog.cases
    assert cases["filename"].tolist() == [frontal(1), frontal(2), frontal(3), frontal(4), lateral(4)]
    assert cases["case_id"].tolist()[:2] == ["1_IM-0001-1001.dcm_mask", "2_IM-0002-1001_mask"]
    expected = box(1)
    for path in cases["mask_path"][:4]:
        mask = io.load_mask(path, size=(W, H))
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        np.testing.assert_array_equal(mask, expected)
    problems = dict(zip(catalog.problems["kind"], catalog.problems["file"]))
    assert problems["size_mismatch"] == f"masked/{frontal(4)[:-4]}-mask.png"
    assert problems["empty_mask"] == f"masked/{lateral(4)[:-4]}_mask.png"
    assert problems["orphan_mask"] == "masked/77_IM-0077-1001.dcm_mask.png"
    assert problems["not_a_mask"] == "masked/notes.txt"
    summary = catalog.summary()
    assert summary["masks"] == 6 and summary["labeled_cases"] == 5 and summary["orphan_masks"] == 1
    assert cases.set_index("uid").loc[2, "text_source"] == "impression"


def test_corrupt_mask_is_dropped(tmp_path):
    root = make_root(tmp_path / "ds", n=2)
    write_mask(root / "masked" / f"{frontal(1)[:-4]}_mask.png", box())
    (root / "masked" / f"{frontal(2)[:-4]}_mask.png").write_bytes(b"broken")
    catalog = load_catalog(root)
    assert catalog.cases["uid"].tolist() == [1]
    assert catalog.problems["kind"].tolist() == ["corrupt_mask"]


def test_masks_csv_overrides_pairing_and_text(tmp_path):
    root = make_root(tmp_path / "ds", n=3)
    write_mask(root / "masked" / "lesion_a.png", box())
    write_mask(root / "masked" / f"{frontal(1)[:-4]}_mask.png", box())
    write_mask(root / "masked" / "lesion_b.png", box())
    pd.DataFrame([{"mask": "lesion_a.png", "image": frontal(3), "text": "Left XXXX base opacity."},
                  {"mask": f"{frontal(1)[:-4]}_mask.png", "image": "", "text": "Nodule at the left apex."},
                  {"mask": "lesion_b.png", "image": "missing.png", "text": ""},
                  {"mask": "ghost.png", "image": frontal(2), "text": ""}]
                 ).to_csv(root / layout.MASKS_CSV, index=False)
    catalog = load_catalog(root)
    cases = catalog.cases.set_index("case_id")
    assert cases.loc["lesion_a", "filename"] == frontal(3)
    assert cases.loc["lesion_a", "text"] == "Left base opacity."
    assert cases.loc["lesion_a", "text_source"] == "masks.csv"
    assert cases.loc[f"{frontal(1)[:-4]}_mask", "text"] == "Nodule at the left apex."
    assert sorted(catalog.problems["kind"]) == ["missing_mask", "orphan_mask"]


def test_case_without_report_text_is_kept_with_empty_text(tmp_path):
    root = make_root(tmp_path / "ds", n=2)
    reports = pd.read_csv(root / layout.REPORTS_CSV)
    reports.loc[0, ["findings", "impression"]] = np.nan
    reports.to_csv(root / layout.REPORTS_CSV, index=False)
    write_mask(root / "masked" / f"{frontal(1)[:-4]}_mask.png", box())
    catalog = load_catalog(root)
    assert catalog.cases["text"].tolist() == [""]
    assert catalog.problems["kind"].tolist() == ["no_text", "no_text"]  # the report and the case
    assert catalog.summary()["reports_without_text"] == 1


def test_without_image_checks_nothing_is_decoded(tmp_path):
    root = make_root(tmp_path / "ds", n=2)
    (root / layout.IMAGES_DIR / lateral(1)).write_bytes(b"garbage")
    catalog = load_catalog(root, check_images=False)
    assert len(catalog.images) == 4 and catalog.images["width"].isna().all()


def test_clean_text_and_case_text():
    assert clean_text("The XXXX are  intact.\nXXXX-XXXX noted XX. MAXX stays") == \
        "The are intact. noted. MAXX stays"
    assert clean_text("XXXX-year-old male") == "year-old male"
    assert clean_text(float("nan")) == "" and clean_text(None) == ""
    assert case_text("  Small nodule.  ", "Nodule.") == ("Small nodule.", "findings")
    assert case_text(float("nan"), "Right XXXX effusion.") == ("Right effusion.", "impression")
    assert case_text("XXXX", "") == ("", "none")


def test_mask_geometry(tmp_path):
    from helpers.data.catalog import mask_geometry

    mask = np.zeros((40, 40), np.uint8)
    mask[0:10, 30:40] = 255  # top right of the image: the patient's left upper zone
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    geo = mask_geometry([str(tmp_path / "m.png"), str(tmp_path / "empty.png")], size=40)
    assert geo.loc[0, "area"] == pytest.approx(100 / 1600)
    assert geo.loc[0, "cx"] == pytest.approx(0.875) and geo.loc[0, "cy"] == pytest.approx(0.125)
    assert geo.loc[1, "area"] == 0 and np.isnan(geo.loc[1, "cx"])
