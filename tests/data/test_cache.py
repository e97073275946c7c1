"""The preprocessing cache (helpers/data/cache.py): decoded once, reused across folders and machines."""
from __future__ import annotations

import numpy as np

from helpers.data.cache import build_image_cache
from helpers.data.io import load_gray


def test_cache_equals_direct_decoding_and_is_reused(catalog, tmp_path):
    paths = catalog.image_paths()[:6]
    first = build_image_cache(paths, 40, tmp_path, progress=False)
    assert first.rebuilt and first.array.shape == (6, 40, 40) and first.array.dtype == np.uint8
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(first.array[i], load_gray(p, 40))
    again = build_image_cache(paths, 40, tmp_path, progress=False)
    assert not again.rebuilt
    np.testing.assert_array_equal(np.asarray(again.array), np.asarray(first.array))


def test_cache_rebuilt_when_file_list_or_size_changes(catalog, tmp_path):
    paths = catalog.image_paths()[:4]
    build_image_cache(paths, 32, tmp_path, progress=False)
    added = build_image_cache(paths + catalog.image_paths()[4:5], 32, tmp_path, progress=False)
    assert added.rebuilt and len(added.array) == 5
    resized = build_image_cache(paths, 48, tmp_path, progress=False)
    assert resized.rebuilt and resized.array.shape[1:] == (48, 48)


def test_cache_survives_a_fresh_copy_and_sizes_coexist(catalog, tmp_path):
    """A new machine: the same files copied to another folder (new mtimes) reuse the cache, with
    this machine's paths; caches of two sizes live side by side."""
    import os
    import shutil

    paths = catalog.image_paths()[:5]
    first = build_image_cache(paths, 32, tmp_path / "cache", progress=False)
    other = build_image_cache(paths, 48, tmp_path / "cache", progress=False)
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    moved = [shutil.copy(p, copy / os.path.basename(p)) for p in paths]
    for p in moved:
        os.utime(p, (1, 1))
    again = build_image_cache(moved, 32, tmp_path / "cache", progress=False)
    assert first.rebuilt and other.rebuilt and not again.rebuilt
    assert again.paths == [str(p) for p in moved]
    np.testing.assert_array_equal(np.asarray(again.array), np.asarray(first.array))
    assert not build_image_cache(paths, 48, tmp_path / "cache", progress=False).rebuilt
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_cache_skips_and_lists_corrupt_images(catalog, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cache = build_image_cache(catalog.image_paths()[:2] + [str(bad)], 32, progress=False)
    assert len(cache.array) == 2
    assert cache.failed[0][0] == str(bad)


def test_a_subset_is_read_from_a_cache_that_holds_it_even_without_the_files(catalog, tmp_path):
    """Notebook 01 caches the whole collection; later notebooks read their subsets from it, on
    another machine even when the image files are not there (matched by name)."""
    import os
    import shutil

    paths = catalog.image_paths()
    full = build_image_cache(paths, 32, tmp_path / "cache", progress=False)
    subset = paths[1:6:2]
    part = build_image_cache(subset, 32, tmp_path / "cache", progress=False)
    assert not part.rebuilt and part.paths == subset
    np.testing.assert_array_equal(part.array, np.asarray(full.array)[[1, 3, 5]])
    elsewhere = tmp_path / "not-fetched-yet"  # the same names, no files on this machine
    absent = [str(elsewhere / os.path.basename(p)) for p in subset]
    again = build_image_cache(absent, 32, tmp_path / "cache", progress=False)
    assert not again.rebuilt and again.paths == absent
    np.testing.assert_array_equal(again.array, part.array)
    changed = tmp_path / "changed"  # a file of that name with other bytes is not the cached one
    changed.mkdir()
    shutil.copy(paths[0], changed / os.path.basename(paths[1]))
    other = build_image_cache([str(changed / os.path.basename(paths[1]))], 32, tmp_path / "cache",
                              progress=False)
    assert other.rebuilt
