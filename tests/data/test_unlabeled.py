"""Phase-1 image lists (helpers/data/unlabeled.py): unlabeled sources and the IU images Phase 1 may see."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from helpers.core.layout import DatasetError
from helpers.data.unlabeled import iu_pretrain_paths, list_unlabeled
from helpers.training.pretrain import pretrain


@pytest.fixture
def images(catalog) -> list[str]:
    return catalog.image_paths()[:4]


def test_folder_list_and_mixed_sources(images, tmp_path):
    folder = tmp_path / "chexpert" / "patient1"
    folder.mkdir(parents=True)
    for i, src in enumerate(images[:2]):
        (folder / f"view{i}.png").write_bytes(Path(src).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    txt = tmp_path / "list.txt"
    txt.write_text(f"# MIMIC subset\n{images[2]}\n\n{images[0]}\n")
    csv = tmp_path / "list.csv"
    pd.DataFrame({"Path": [images[3], "missing.png", "report.pdf"], "label": [0, 1, 2]}).to_csv(csv)
    found = list_unlabeled([tmp_path / "chexpert", txt, csv])
    assert len(found.paths) == 5 and len(set(found.paths)) == 5  # images[0] listed twice: once
    assert found.counts == {str(tmp_path / "chexpert"): 2, str(txt): 2, str(csv): 1}
    reasons = dict(found.skipped)
    assert "not found" in reasons["missing.png"] and "not a PNG/JPEG" in reasons["report.pdf"]
    assert "missing.png" in found.report()


def test_headerless_csv_and_relative_entries(images, tmp_path):
    (tmp_path / "a.png").write_bytes(Path(images[0]).read_bytes())
    (tmp_path / "b.jpg").write_bytes(Path(images[1]).read_bytes())
    (tmp_path / "list.csv").write_text("a.png\nb.jpg\n")
    assert [Path(p).name for p in list_unlabeled([tmp_path / "list.csv"]).paths] == ["a.png", "b.jpg"]


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: not found"):
        list_unlabeled(["nowhere"])
    csv = tmp_path / "cols.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="cols.csv: no image column"):
        list_unlabeled([csv])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No PNG/JPEG image"):
        list_unlabeled([tmp_path / "empty"])


def test_unreadable_images_are_skipped_and_named(images, tmp_path, pretrain_cfg, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    found = list_unlabeled([*images, bad])
    cfg = dataclasses.replace(pretrain_cfg, epochs=1, batch_size=2, val_fraction=0.25)
    pretrain(cfg, found.paths, tmp_path / "out", progress=False)
    assert "Skipped 1 unreadable image(s), e.g. " + str(bad) in capsys.readouterr().out


def test_iu_pretraining_leaves_out_val_and_test_patients(catalog, cases, capsys):
    allowed = iu_pretrain_paths(catalog.images, cases)
    held = set(cases.loc[cases["split"] != "train", "uid"])
    by_path = catalog.images.set_index("path")["uid"]
    assert allowed and not {by_path[p] for p in allowed} & held
    assert len(allowed) == (~catalog.images["uid"].isin(held)).sum()
    assert "never seen in Phase 1" in capsys.readouterr().out
