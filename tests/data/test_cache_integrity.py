"""The image cache proves it is whole: a file cut short or changed is found on load and rebuilt,
on both ways a cache is found (its own key, or a larger cache that covers the paths)."""
from __future__ import annotations

import json
import os

import numpy as np

from helpers.data.cache import build_image_cache, covering_cache


def _truncate(npy, keep: float = 0.5) -> None:
    data = npy.read_bytes()
    npy.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_cache_is_found_and_rebuilt_by_its_own_key(catalog, tmp_path, capsys):
    paths = catalog.image_paths()[:6]
    first = build_image_cache(paths, 32, tmp_path, progress=False)
    expected = np.array(first.array)
    record = json.loads(first.location.with_suffix(".json").read_text())["integrity"]
    assert record["bytes"] == first.location.stat().st_size and record["rows"][-1] == 5
    _truncate(first.location)
    again = build_image_cache(paths, 32, tmp_path, progress=False)
    out = capsys.readouterr().out
    assert f"image cache {first.location} is damaged" in out and "cut short" in out
    assert "rebuilt from the images" in out
    assert again.rebuilt and again.location == first.location
    np.testing.assert_array_equal(np.asarray(again.array), expected)
    assert not build_image_cache(paths, 32, tmp_path, progress=False).rebuilt  # whole again


def test_a_changed_cache_is_found_and_a_covering_one_is_not_used(catalog, tmp_path, capsys):
    paths = catalog.image_paths()
    whole = build_image_cache(paths, 32, tmp_path, progress=False)
    subset = paths[2:5]
    expected = np.asarray(whole.array)[2:5].copy()
    assert covering_cache(subset, 32, tmp_path) is not None
    array = np.load(whole.location, mmap_mode="r+")  # the same size, other pixels in a sampled row
    array[0] = 255 - array[0]
    array.flush()
    del array
    assert covering_cache(subset, 32, tmp_path) is None
    assert "its contents changed after it was written" in capsys.readouterr().out
    rebuilt = build_image_cache(subset, 32, tmp_path, progress=False)  # decoded from the images
    assert rebuilt.rebuilt
    np.testing.assert_array_equal(np.asarray(rebuilt.array), expected)


def test_a_covering_cache_cut_short_is_not_read(catalog, tmp_path, capsys):
    """A later machine that has no image files and a cut cache: not a raw NumPy error, the
    message, then the images (here: on this machine) are decoded again."""
    paths = catalog.image_paths()
    whole = build_image_cache(paths, 32, tmp_path, progress=False)
    _truncate(whole.location, 0.9)
    os.utime(whole.location)
    part = build_image_cache(paths[:3], 32, tmp_path, progress=False)
    assert part.rebuilt and "cut short" in capsys.readouterr().out


def test_each_notebook_reads_the_run_folders_cache_once(demo_root, tmp_path, monkeypatch):
    """Notebook 01 stages the collection; notebook 03 on another machine (a new process: nothing
    opened yet) stages its cases, reads train / val / test and probe subsets and a viewer's
    images: the run folder's cache file is read once, copied once to the machine's disk."""
    from collections import Counter

    from helpers.core import drive
    from helpers.data import cache
    from helpers.pipeline import prepare
    from helpers.training.datasets import labeled_arrays

    monkeypatch.setenv(drive.WORK_ENV, str(tmp_path / "local"))
    run = tmp_path / "run"
    prepare(str(demo_root), "smoke", out_dir=run).stage_images(32)  # notebook 01
    assert json.loads((run / "run.json").read_text())["bytes_written"]["image cache"] > 0
    monkeypatch.setattr(cache, "_OPEN", {})
    monkeypatch.setattr(cache, "READS", Counter())
    later = prepare(None, "smoke", out_dir=run)
    later.stage_images(32, later.cases["image_path"])
    for split in ("train", "val", "test", "test"):
        part = later.cases[later.cases["split"] == split]
        assert len(labeled_arrays(part, 32, run / "cache").images) == len(part)
    labeled_arrays(later.cases.head(2), 32, run / "cache")  # a probe's few cases
    reader = later.image_reader(32)
    assert reader(later.catalog.image_paths()[0]).shape == (32, 32)
    assert list(cache.READS.values()) == [1]
    assert len(list((tmp_path / "local").rglob("images_32px_*.npy"))) == 1
