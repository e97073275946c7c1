"""The preprocessing cache: every image decoded once at model size.

Decoding and resizing a PNG costs far more than a training step of a small model, so every image is
decoded once, resized to the model size and kept as uint8 in a `.npy` memory map (7,400 images at
256 px: 0.5 GB). Datasets (`helpers.datasets`) then only index that array and augment.

The `.json` beside each `.npy` records its byte size and the sums of a few sampled rows: a file cut
short (a Colab machine that went away while Drive was still writing it) or changed is found when it
is opened and rebuilt from the images, with a message that says so. Each file is opened once per
process (`open_cache`); the later calls of a notebook reuse that opening.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..core import distributed as dist
from ..core.drive import count_written, local_work_dir
from .io import load_gray
from ..core.layout import DatasetError

CACHE_VERSION = 3  # 3: the integrity record (byte size, sampled rows' sums) in the .json
SAMPLED_ROWS = 16  # rows whose sums the integrity record holds: spread over the file, the last included
READS: Counter = Counter()  # cache file -> times this process opened it (read once: see open_cache)
_OPEN: dict[str, tuple[tuple | None, np.ndarray | None]] = {}  # file -> (stat stamp, map or None)


@dataclass
class ImageCache:
    """Images decoded once at model size.

    `array` is uint8 [N, S, S] (a read-only memory map when loaded from disk); row i holds `paths[i]`.
    `failed` lists (path, reason) of images that could not be decoded: skipped, not fatal.
    """

    array: np.ndarray
    paths: list[str]
    size: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    rebuilt: bool = False
    location: Path | None = None

    def index_of(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}


def _cache_key(paths: Sequence[str], size: int) -> str:
    """Hash of the model size and, per file in order, its name and byte size: not its folder or
    mtime, so the same data on another machine or mount point (a new Colab machine, a fresh copy)
    reuses the cache. A file replaced by one of the same name and byte size is not noticed: delete
    the cache folder after editing images in place."""
    h = hashlib.sha1(f"v{CACHE_VERSION}:{size}".encode())
    for p in paths:
        try:
            h.update(f"\n{os.path.basename(p)}:{os.stat(p).st_size}".encode())
        except OSError:
            h.update(f"\n{os.path.basename(p)}:missing".encode())
    return h.hexdigest()[:16]


def integrity(npy: Path, array: np.ndarray) -> dict:
    """What proves a cache file whole: its byte size, its shape and the sums of `SAMPLED_ROWS`
    rows spread over it (reading them costs a few pages, not the whole file)."""
    n = len(array)
    rows = sorted({int(i) for i in np.linspace(0, n - 1, min(n, SAMPLED_ROWS)).round()}) if n else []
    return {"bytes": npy.stat().st_size, "shape": list(array.shape), "rows": rows,
            "sums": [int(np.asarray(array[i]).sum(dtype=np.int64)) for i in rows]}


def _damage(npy: Path, record: dict | None) -> tuple[str | None, np.ndarray | None]:
    """(why `npy` is not the file `record` describes, or None; its memory map when it is)."""
    if not isinstance(record, dict):
        return "no integrity record beside it (written by an older version)", None
    try:
        size = npy.stat().st_size
    except OSError:
        return "the file is missing", None
    if size != record["bytes"]:
        return (f"{size} bytes instead of {record['bytes']}: cut short while it was written "
                "(e.g. the machine went away before Drive had saved it)"), None
    try:
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError) as err:
        return f"unreadable ({err})", None
    if list(array.shape) != record["shape"]:
        return f"shape {list(array.shape)} instead of {record['shape']}", None
    if integrity(npy, array)["sums"] != record["sums"]:
        return "its contents changed after it was written", None
    return None, array


def _local_copy(npy: Path, record: dict | None) -> Path:
    """Where to map `npy` from: on Colab a cache in the run folder on Drive is copied once to the
    machine's disk (one sequential read; the training then reads pages locally)."""
    local = local_work_dir(npy.parent)
    if local is None or not isinstance(record, dict) or npy.stat().st_size != record["bytes"]:
        return npy
    copy = local / npy.name
    if not copy.is_file() or copy.stat().st_mtime_ns != npy.stat().st_mtime_ns:  # new or rebuilt
        local.mkdir(parents=True, exist_ok=True)
        shutil.copy2(npy, copy.with_suffix(".tmp"))
        os.replace(copy.with_suffix(".tmp"), copy)
    return copy


def open_cache(npy: Path, record: dict | None) -> np.ndarray | None:
    """The read-only memory map of the cache file `npy` (of its local copy, `_local_copy`),
    checked against its integrity `record` once per process and then reused (a changed file is
    checked again); None, after a message that says why, when the file is damaged."""
    npy = Path(npy)
    try:
        st = npy.stat()
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        stamp = None
    key = str(npy.resolve())
    if key not in _OPEN or _OPEN[key][0] != stamp:
        READS[key] += 1
        why, array = _damage(_local_copy(npy, record) if stamp else npy, record)
        if why is not None:
            print(f"image cache {npy} is damaged ({why}): it is rebuilt from the images")
        _OPEN[key] = (stamp, array)
    return _OPEN[key][1]


def _name_and_bytes(path: str) -> list:
    """[file name, byte size or None when the file is not on this machine]."""
    return [os.path.basename(path), os.stat(path).st_size if os.path.isfile(path) else None]


def find_covering(paths: Sequence[str], size: int, cache_dir: Path
                  ) -> tuple[np.ndarray, list[tuple[str, int]], list[str], Path] | None:
    """A whole cache of this size in `cache_dir` that holds every one of `paths` (matched by file
    name and byte size, or by name alone for a file not on this machine): (its memory map, the
    (path, row) of each path it holds, the paths it lists as undecodable, its file); None when no
    cache holds them all. Of its pixels only a few sampled rows are read here (on Colab the file
    is copied to this machine once, `open_cache`)."""
    wanted = [_name_and_bytes(p) for p in paths]
    for meta in sorted(cache_dir.glob(f"images_{size}px_*.json"), key=lambda m: m.stat().st_size):
        try:
            info = json.loads(meta.read_text())
            rows = {name: (i, n) for i, (name, n) in enumerate(info["files"])}
            bad = dict(info["failed_files"])
            record = info["integrity"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an older cache without file names or integrity record, or a damaged one
        fits = [(name in rows and n in (None, rows[name][1])) or (name in bad and n in (None, bad[name]))
                for name, n in wanted]
        if all(fits):
            array = open_cache(meta.with_suffix(".npy"), record)
            if array is None:
                continue
            kept = [(p, rows[name][0]) for p, (name, _) in zip(paths, wanted) if name in rows]
            failed = [p for p, (name, _) in zip(paths, wanted) if name not in rows]
            return array, kept, failed, meta.with_suffix(".npy")
    return None


def covering_cache(paths: Sequence[str], size: int, cache_dir: Path) -> ImageCache | None:
    """The rows of `paths` from a cache of this size in `cache_dir` that holds them all (e.g. the
    whole collection, staged by notebook 01; see `find_covering`), as an in-memory ImageCache, or
    None when no cache holds them all."""
    found = find_covering(paths, size, cache_dir)
    if found is None:
        return None
    array, kept, failed, npy = found
    data = np.asarray(array[[i for _, i in kept]])
    return ImageCache(data, [p for p, _ in kept], size,
                      [(p, "could not be decoded when the cache was built") for p in failed], 0.0,
                      False, npy)


def _decode(path: str, size: int) -> np.ndarray | str:
    try:
        return load_gray(path, size)
    except (DatasetError, OSError) as err:
        return str(err)


def build_image_cache(paths: Sequence[str], size: int, cache_dir: str | Path | None = None,
                      num_workers: int | None = None, progress: bool = True) -> ImageCache:
    """Decode and resize `paths` to `size` x `size` uint8, once.

    With `cache_dir` the result is stored as `images_<size>px_<key>.npy` + `.json` and reused while
    the file names, their byte sizes and the model size are unchanged (see `_cache_key`); caches of
    other sizes and subsets are kept beside it (delete the folder to reclaim the space); a subset of
    one already there is read from it, also without the files (`covering_cache`). Decoding
    runs in a thread pool (PIL releases the GIL). Under torchrun with `cache_dir`, every rank must
    call this with the same paths: the ranks decode their shares into one file (`_build_sharded`).
    """
    paths = [str(p) for p in paths]
    if cache_dir is not None and dist.is_distributed():
        return _build_sharded(paths, size, Path(cache_dir), num_workers, progress)
    start = time.perf_counter()
    npy = meta = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        key = _cache_key(paths, size)
        npy, meta = cache_dir / f"images_{size}px_{key}.npy", cache_dir / f"images_{size}px_{key}.json"
        info = _read_meta(meta) if npy.exists() else None
        array = open_cache(npy, info.get("integrity")) if info is not None else None
        if array is not None:  # rows by position: the paths of this machine
            failed = [(paths[i], reason) for i, reason in info["failed"]]
            return ImageCache(array, [paths[i] for i in info["kept"]], size, failed,
                              time.perf_counter() - start, False, npy)
        covering = covering_cache(paths, size, cache_dir)
        if covering is not None:
            covering.seconds = time.perf_counter() - start
            return covering
    workers = num_workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        decoded = list(tqdm(pool.map(lambda p: _decode(p, size), paths), total=len(paths),
                            desc=f"decoding images at {size} px", disable=not progress, leave=False))
    kept = [(p, d) for p, d in zip(paths, decoded) if isinstance(d, np.ndarray)]
    failed = [(p, d) for p, d in zip(paths, decoded) if isinstance(d, str)]
    array = np.stack([d for _, d in kept]) if kept else np.zeros((0, size, size), np.uint8)
    if npy is not None:
        npy.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_suffix(".tmp.npy")
        np.save(tmp, array)
        os.replace(tmp, npy)
        count_written(cache_dir, npy.stat().st_size, "image cache")
        kept_index = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
        _write_meta(meta, {"kept": kept_index, "paths": [p for p, _ in kept],
                           "failed": [[i, d] for i, d in enumerate(decoded) if isinstance(d, str)],
                           "files": [_name_and_bytes(paths[i]) for i in kept_index],
                           "failed_files": [_name_and_bytes(p) for p, _ in failed],
                           "integrity": integrity(npy, array)})
        st, _ = npy.stat(), array.setflags(write=False)  # the pixels are here: not read back
        _OPEN[str(npy.resolve())] = ((st.st_size, st.st_mtime_ns, st.st_ino), array)
    return ImageCache(array, [p for p, _ in kept], size, failed, time.perf_counter() - start, True, npy)


def _read_meta(meta: Path) -> dict | None:
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _write_meta(meta: Path, info: dict) -> None:
    """The `.json` beside a cache file, renamed into place whole."""
    tmp = meta.with_suffix(".tmp.json")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, meta)


def check_disk_space(folder: Path, nbytes: int) -> None:
    """Print what a cache of `nbytes` will take and refuse (DatasetError) when the disk holding
    `folder` has less free space than that."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    print(f"image cache: {nbytes / 1e9:.2f} GB of uint8 in {folder} ({free / 1e9:.1f} GB free)")
    if nbytes > free:
        raise DatasetError(f"Not enough disk space for the image cache in {folder}: it needs "
                           f"{nbytes / 1e9:.2f} GB, {free / 1e9:.2f} GB are free. Free space, pass a "
                           "cache folder on a larger disk, or lower --image-size / --max-images.")


def _build_sharded(paths: list[str], size: int, cache_dir: Path, num_workers: int | None,
                   progress: bool) -> ImageCache:
    """`build_image_cache` under torchrun: one uint8 [N, S, S] file filled by all ranks at once.

    Rank 0 creates `<name>.tmp.npy` with `np.lib.format.open_memmap` (after the disk check); after
    a barrier each rank decodes one contiguous block of rows (its own thread pool) and writes them
    in place; the failures are gathered; rank 0 drops their rows (a copy, only when some failed),
    renames the file and writes the `.json`; after a second barrier every rank maps the same file.
    Blocks share at most one page at their edges: fine on one machine or a POSIX shared file
    system (Lustre, GPFS); on NFS build the cache once with a single node first.
    """
    start = time.perf_counter()
    key = _cache_key(paths, size)
    npy, meta = cache_dir / f"images_{size}px_{key}.npy", cache_dir / f"images_{size}px_{key}.json"
    info = _read_meta(meta) if npy.exists() else None
    array = open_cache(npy, info.get("integrity")) if info is not None else None
    if dist.all_reduce_sum(float(array is not None))[0] == dist.world_size():
        return ImageCache(array, info["paths"], size, [tuple(f) for f in info["failed"]],
                          time.perf_counter() - start, False, npy)
    n, tmp = len(paths), npy.with_suffix(".tmp.npy")
    error = None
    if dist.is_main():
        try:
            check_disk_space(cache_dir, n * size * size)
            cache_dir.mkdir(parents=True, exist_ok=True)
            for old in cache_dir.glob(f"images_{size}px_*"):  # one cache per size: drop stale ones
                old.unlink()
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size)).flush()
        except (DatasetError, OSError) as err:
            error = str(err)
    error = dist.all_gather_objects(error)[0]  # also the barrier: the file exists past this line
    if error is not None:
        raise DatasetError(error)
    lo, hi = n * dist.rank() // dist.world_size(), n * (dist.rank() + 1) // dist.world_size()
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    workers = num_workers or max(1, min(8, (os.cpu_count() or 1) // local))
    rows = np.lib.format.open_memmap(tmp, mode="r+")
    failed: list[tuple[int, str]] = []
    with ThreadPoolExecutor(workers) as pool:
        decoded = pool.map(lambda p: _decode(p, size), paths[lo:hi])
        for i, d in zip(range(lo, hi), tqdm(decoded, total=hi - lo, leave=False,
                                            desc=f"decoding images at {size} px (rank 0's share)",
                                            disable=not (progress and dist.is_main()))):
            if isinstance(d, str):
                failed.append((i, d))
            else:
                rows[i] = d
    rows.flush()
    del rows
    failures = sorted(f for part in dist.all_gather_objects(failed) for f in part)
    bad = {i for i, _ in failures}
    kept = [i for i in range(n) if i not in bad]
    if dist.is_main():
        if bad:  # drop the failed rows: copy the kept ones, in chunks, into the final file
            full = np.load(tmp, mmap_mode="r")
            out = np.lib.format.open_memmap(npy.with_suffix(".kept.npy"), mode="w+",
                                            dtype=np.uint8, shape=(len(kept), size, size))
            for a in range(0, len(kept), 1024):
                out[a:a + 1024] = full[kept[a:a + 1024]]
            out.flush()
            del out, full
            os.replace(npy.with_suffix(".kept.npy"), npy)
            tmp.unlink()
        else:
            os.replace(tmp, npy)
        _write_meta(meta, {"paths": [paths[i] for i in kept],
                           "failed": [(paths[i], why) for i, why in failures],
                           "integrity": integrity(npy, np.load(npy, mmap_mode="r"))})
    dist.barrier()
    return ImageCache(open_cache(npy, _read_meta(meta)["integrity"]), [paths[i] for i in kept], size,
                      [(paths[i], why) for i, why in failures], time.perf_counter() - start, True, npy)
