from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.data import io, sources

from helpers.core import layout

from helpers.data.demo import generate as synthetic
from helpers.data.catalog import case_text, clean_text, load_catalog
from helpers.data.split import split_cases
from helpers.core.layout import DatasetError

W, H = 40, 30  # size of the hand-made images


def frontal(uid: int) -> str:
    return f"{uid}_IM-{uid:04d}-1001.dcm.png"


def lateral(uid: int) -> str:
    return f"{uid}_IM-{uid:04d}-2001.dcm.png"


def write_mask(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def box(value: int = 255, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """uint8 [H, W] with a `value` box covering 1/16 of the image."""
    mask = np.zeros(shape, np.uint8)
    mask[shape[0] // 4: shape[0] // 2, shape[1] // 4: shape[1] // 2] = value
    return mask


def make_root(root: Path, n: int = 4) -> Path:
    """A tiny dataset: reports 1..n, each with a frontal and a lateral image; no masks."""
    folder = root / layout.IMAGES_DIR
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    projections = []
    for uid in range(1, n + 1):
        for name, projection in ((frontal(uid), "Frontal"), (lateral(uid), "Lateral")):
            Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8)).save(folder / name)
            projections.append({"uid": uid, "filename": name, "projection": projection})
    reports = [{"uid": uid, "MeSH": "normal", "Problems": "normal", "image": "Xray Chest PA and Lateral",
                "indication": "Cough.", "comparison": "None.",
                "findings": f"Nodule in the right upper lobe, case {uid}. The XXXX are intact.",
                "impression": "Right upper lobe nodule."} for uid in range(1, n + 1)]
    reports[1]["findings"] = ""  # uid 2: the impression is used
    pd.DataFrame(reports).to_csv(root / layout.REPORTS_CSV, index=False)
    pd.DataFrame(projections).to_csv(root / layout.PROJECTIONS_CSV, index=False)
    return root


def zip_folder(folder: Path, zip_path: Path, top: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}{path.relative_to(folder).as_posix()}")
    return zip_path


# --------------------------------------------------------------------------------- fetch_dataset

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


FILE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz_-012"


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


# --------------------------------------------------------------------------------- CSV checks

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


# --------------------------------------------------------------------------------- catalog

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


# --------------------------------------------------------------------------------- text and pixels

def test_clean_text_and_case_text():
    assert clean_text("The XXXX are  intact.\nXXXX-XXXX noted XX. MAXX stays") == \
        "The are intact. noted. MAXX stays"
    assert clean_text("XXXX-year-old male") == "year-old male"
    assert clean_text(float("nan")) == "" and clean_text(None) == ""
    assert case_text("  Small nodule.  ", "Nodule.") == ("Small nodule.", "findings")
    assert case_text(float("nan"), "Right XXXX effusion.") == ("Right effusion.", "impression")
    assert case_text("XXXX", "") == ("", "none")


def test_load_gray_modes_and_resize(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(io.load_gray(tmp_path / "g.png"), gray)

    deep = np.linspace(1000, 5000, H * W).reshape(H, W).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as img:
        assert img.mode.startswith("I")
    out = io.load_gray(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert (np.diff(out.ravel().astype(int)) >= 0).all()  # order kept

    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = io.load_gray(tmp_path / "c.png", size=16)
    assert out.shape == (16, 16) and abs(int(out[0, 0]) - round(0.587 * 200)) <= 1

    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    assert io.load_gray(tmp_path / "p.png", size=(20, 10)).shape == (10, 20)


def test_load_mask_alpha_only_counts_on_a_transparent_background(tmp_path):
    strokes = np.zeros((H, W, 4), np.uint8)
    strokes[..., 3] = box(255)  # black, opaque where the lesion is
    Image.fromarray(strokes).save(tmp_path / "strokes.png")
    np.testing.assert_array_equal(io.load_mask(tmp_path / "strokes.png"), box(1))
    opaque_black = np.zeros((H, W, 4), np.uint8)
    opaque_black[..., 3] = 255
    Image.fromarray(opaque_black).save(tmp_path / "empty.png")
    assert not io.load_mask(tmp_path / "empty.png").any()


def test_load_gray_and_mask_name_bad_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="bad.png"):
        io.load_gray(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match="bad.png"):
        io.load_mask(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match="not found"):
        io.load_gray(tmp_path / "missing.png")


# --------------------------------------------------------------------------------- splits

def cases_frame(n_uids: int, per_uid: int = 1) -> pd.DataFrame:
    uids = np.repeat(np.arange(1, n_uids + 1), per_uid)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(len(uids))], "uid": uids})


def test_split_groups_by_uid_and_tiny_inputs_fill_every_split():
    split = split_cases(cases_frame(40, per_uid=3))
    assert split.groupby("uid")["split"].nunique().max() == 1
    counts = split["split"].value_counts()
    assert counts["test"] == 18 and counts["val"] == 18 and counts["train"] == 84
    tiny = split_cases(cases_frame(16))
    assert set(tiny["split"]) == {"train", "val", "test"}
    assert (split_cases(cases_frame(16))["split"] == tiny["split"]).all()  # seeded
    with pytest.raises(DatasetError, match="at least 3"):
        split_cases(cases_frame(2))


def test_split_is_reused_when_present_and_rebuilt_when_cases_change(tmp_path, capsys):
    out = tmp_path / "splits.csv"
    cases = cases_frame(20)
    first = split_cases(cases, out)
    saved = pd.read_csv(out)
    assert saved.columns.tolist() == ["case_id", "uid", "split"]
    saved["split"] = "train"  # a hand-edited split is returned as saved
    saved.loc[0, "split"] = "test"
    saved.to_csv(out, index=False)
    reused = split_cases(cases, out)
    assert reused["split"].tolist() == saved["split"].tolist()
    assert capsys.readouterr().out == ""
    rebuilt = split_cases(cases.iloc[:-1], out)
    assert "rebuilt" in capsys.readouterr().out
    assert set(rebuilt["split"]) == {"train", "val", "test"}
    written = pd.read_csv(out)
    assert written[["case_id", "split"]].values.tolist() == rebuilt[["case_id", "split"]].values.tolist()
    assert set(first["split"]) == {"train", "val", "test"}


def test_fixed_patient_split_wins_and_is_saved(tmp_path):
    fixed = pd.Series({1: "test", 2: "val", 3: "train", 4: "train"})
    out = tmp_path / "splits.csv"
    split_cases(cases_frame(4), out)  # a random split saved earlier
    result = split_cases(cases_frame(4, per_uid=2), out, fixed=fixed)
    assert result.groupby("uid")["split"].first().to_dict() == fixed.to_dict()
    assert pd.read_csv(out)["split"].tolist() == result["split"].tolist()
    with pytest.raises(DatasetError, match=r"no split for uid\(s\) \[5\]"):
        split_cases(cases_frame(5), fixed=fixed)
    with pytest.raises(DatasetError, match="without a labeled case"):
        split_cases(cases_frame(4), fixed=fixed.replace("val", "train"))


@pytest.mark.parametrize("content, message", [
    ("uid,fold\n1,test\n", "needs columns uid, split"),
    ("uid,split\n1,holdout\n", "integer uid and a split"),
    ("uid,split\nx,test\n", "integer uid and a split"),
    ("uid,split\n1,test\n1,val\n", "listed twice"),
])
def test_patient_splits_file_errors_name_the_file(tmp_path, content, message):
    from helpers.data.split import read_patient_splits

    path = tmp_path / "patient_splits.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        read_patient_splits(path)
    assert str(path) in str(err.value)


def test_demo_catalog_carries_its_fixed_split(catalog):
    assert catalog.patient_splits is not None
    assert set(catalog.cases["uid"]) <= set(catalog.patient_splits.index)
