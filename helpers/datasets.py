"""Preprocessing cache, torch Datasets and augmentations.

Decoding and resizing a PNG costs far more than a training step of a small model, so every image is
decoded once, resized to the model size and kept as uint8 in a `.npy` memory map (7,400 images at
256 px: 0.5 GB). Datasets then only index that array and augment.

No augmentation flips horizontally on its own: the patient's left is on the image's right, and a flip
would contradict "left"/"right" in the report. The only flip is the *concordant* one, which also swaps
the side words of the text (see `LabeledCases`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm

from . import distributed as dist
from .io import load_gray, load_masks
from .layout import DatasetError

CACHE_VERSION = 2
UNDESCRIBED = 2  # target value of a lesion the text does not describe (see losses.DiceBCELoss)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W] in 0..255 -> float32 in [-1, 1], the model's input scale."""
    return images.float().div(127.5).sub(1.0)


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
    other sizes and subsets are kept beside it (delete the folder to reclaim the space). Decoding
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
        if npy.exists() and meta.exists():
            info = json.loads(meta.read_text())  # rows by position: the paths of this machine
            array = np.load(npy, mmap_mode="r")
            failed = [(paths[i], reason) for i, reason in info["failed"]]
            return ImageCache(array, [paths[i] for i in info["kept"]], size, failed,
                              time.perf_counter() - start, False, npy)
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
        kept_index = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
        meta.write_text(json.dumps({"kept": kept_index, "paths": [p for p, _ in kept],
                                    "failed": [[i, d] for i, d in enumerate(decoded) if isinstance(d, str)]}))
        array = np.load(npy, mmap_mode="r")
    return ImageCache(array, [p for p, _ in kept], size, failed, time.perf_counter() - start, True, npy)


def train_augmentation(strength: float = 1.0) -> v2.Compose:
    """Small affine + brightness/contrast, applied jointly to an image and its `tv_tensors.Mask`
    (masks are warped with nearest neighbour and skip the colour jitter). Never a bare flip."""
    return v2.Compose([
        v2.RandomAffine(degrees=7 * strength, translate=(0.05 * strength, 0.05 * strength),
                        scale=(1 - 0.08 * strength, 1 + 0.08 * strength)),
        v2.ColorJitter(brightness=0.2 * strength, contrast=0.2 * strength),
    ])


class UnlabeledImages(Dataset):
    """Phase-1 images: `array` uint8 [N, S, S] -> item float32 [1, S, S] in [-1, 1]."""

    def __init__(self, array: np.ndarray, indices: Sequence[int] | None = None, augment: bool = False):
        self.array = array
        self.indices = list(range(len(array))) if indices is None else list(indices)
        self.transform = train_augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = torch.from_numpy(np.array(self.array[self.indices[i]]))[None]
        if self.transform is not None:
            image = self.transform(tv_tensors.Image(image)).as_subclass(torch.Tensor)
        return normalize(image)


LEVEL_SHIFT = 0.3  # of the image height: from a lung's lower zone to its upper zone, or back


def _moved(x: torch.Tensor, how: str | int) -> torch.Tensor:
    """`x` [..., H, W] mirrored left-right (`how="mirror"`) or moved `how` rows down (up when
    negative; what leaves the image is lost, what enters is zero)."""
    if how == "mirror":
        return x.flip(-1)
    out = torch.zeros_like(x)
    if how > 0:
        out[..., how:, :] = x[..., :-how, :]
    elif how < 0:
        out[..., :how, :] = x[..., -how:, :]
    else:
        out = x.clone()
    return out


def level_shift(level: str | None, size: int) -> int:
    """Rows that move a lesion of a lung's `level` ("upper" / "lower") to the other level."""
    return {"upper": 1, "lower": -1}.get(level or "", 0) * round(LEVEL_SHIFT * size)


def copy_is_free(mask: torch.Tensor, how: str | int, margin: int = 2) -> bool:
    """Whether the lesion under `mask` [H, W] moved by `how` (see `_moved`) stays whole inside the
    image and keeps `margin` pixels away from the original."""
    if how == 0:
        return False
    m = mask.float()[None, None]
    copy = _moved(m, how)
    if copy.sum() < m.sum():
        return False
    grown = torch.nn.functional.max_pool2d(m, 2 * margin + 1, stride=1, padding=margin)
    return not bool((grown * copy).any())


def mirror_overlaps(masks: np.ndarray, margin: int = 2) -> np.ndarray:
    """bool [N]: whether each mask of uint8 [N, S, S] touches (within `margin` pixels) its own
    left-right mirror image, i.e. has no free mirror place to be pasted into."""
    return np.array([not copy_is_free(torch.from_numpy(np.asarray(m)), "mirror", margin) for m in masks],
                    dtype=bool)


def paste_copy(image: torch.Tensor, mask: torch.Tensor, how: str | int = "mirror",
               feather: float = 0.015) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy the lesion under `mask` to another place of the same image: its mirror place in the
    other lung (`how="mirror"`) or `how` rows down (up when negative; see `level_shift`).

    image uint8 [..., S, S], mask [..., S, S] in {0, 1} -> (image with a second copy of the lesion,
    uint8 [..., S, S]; the copy's mask). The copy is alpha-blended through a Gaussian-feathered mask
    (sigma = `feather` x the image width) so no hard seam marks it as pasted.
    """
    copy = _moved(mask, how)
    sigma = max(0.5, feather * image.shape[-1])
    kernel = 2 * int(3 * sigma) + 1
    alpha = v2.functional.gaussian_blur(copy.float().reshape(-1, 1, *mask.shape[-2:]),
                                        [kernel, kernel], [sigma, sigma]).reshape(mask.shape)
    alpha = torch.maximum(alpha * 2, copy.float()).clamp(0, 1)  # full strength inside
    pasted = image.float() * (1 - alpha) + _moved(image, how).float() * alpha
    return pasted.round().to(torch.uint8), copy


def paste_mirror(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`paste_copy` to the mirror place: the same spot in the other lung."""
    return paste_copy(image, mask, "mirror")


class LabeledCases(Dataset):
    """Phase-2 cases: (image float32 [1, S, S], mask float32 [1, S, S] in {0, 1}, text index int).

    `text_index[i]` points into an embedding table held by the trainer, so each text is encoded once.
    With `flip_prob` > 0 and `flipped_text_index` given, an item is flipped left-right with that
    probability *concordantly*: image and mask are mirrored and the text index switches to the text
    with "left" and "right" swapped, so the report still describes the picture.

    With `negative_rate` > 0, an item gets with that probability a text drawn from
    `negative_text_index[i]` (texts whose finding lies elsewhere) and an empty mask: the model
    must check that the described finding is where it looks.

    Where a single picture would do without the text, these make the place in the words matter
    (each needs `flipped_text_index`; `sided[i]` says whether case i's text names one side):
    - `paste_prob`: the lesion is copied to another place of the same image (`paste_copy`): its
      mirror place when the text names one side, or the other level of the same lung when the
      text names one level (`levels[i]`, "upper"/"lower"; its level-swapped text:
      `level_text_index[i]`), where that place is free. Then either the text as written asks for
      the original lesion or its swapped twin asks for the copy, half and half: both lesions look
      alike, only the place in the words tells;
    - `swap_prob`: the side-swapped text with an empty target (nothing lies where it points);
    - `null_rate`: `null_text_index[i]`, a text that describes nothing present (the report's normal
      and negated sentences), with an empty target.
    With `undescribed`, the lesion that such a text does not describe (the one not asked for, or
    the case's own lesion under a swapped, null or negative text) is marked UNDESCRIBED in the
    target instead of 0: a negative that costs as much as a missed positive.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, text_index: Sequence[int],
                 augment: bool = False, flip_prob: float = 0.0,
                 flipped_text_index: Sequence[int] | None = None, negative_rate: float = 0.0,
                 negative_text_index: Sequence[Sequence[int]] | None = None,
                 paste_prob: float = 0.0, swap_prob: float = 0.0, sided: Sequence[bool] | None = None,
                 null_rate: float = 0.0, null_text_index: Sequence[int] | None = None,
                 levels: Sequence[str | None] | None = None,
                 level_text_index: Sequence[int] | None = None, undescribed: bool = False):
        if not len(images) == len(masks) == len(text_index):
            raise ValueError(f"images ({len(images)}), masks ({len(masks)}) and text_index "
                             f"({len(text_index)}) must have the same length")
        if flip_prob > 0 and flipped_text_index is None:
            raise ValueError("flip_prob > 0 needs flipped_text_index (texts with sides swapped)")
        if negative_rate > 0 and negative_text_index is None:
            raise ValueError("negative_rate > 0 needs negative_text_index (texts of other places)")
        if (paste_prob > 0 or swap_prob > 0) and (flipped_text_index is None or sided is None):
            raise ValueError("paste_prob or swap_prob > 0 needs flipped_text_index and sided")
        if null_rate > 0 and null_text_index is None:
            raise ValueError("null_rate > 0 needs null_text_index (texts that describe nothing)")
        if paste_prob + swap_prob + null_rate + negative_rate > 1:
            raise ValueError("paste_prob + swap_prob + null_rate + negative_rate must be <= 1")
        self.paste_prob, self.swap_prob, self.null_rate = paste_prob, swap_prob, null_rate
        self.sided = [bool(x) for x in sided] if sided is not None else [False] * len(images)
        # per case, the places its lesion may be copied to, each with the text that asks for it
        self.moves: list[list[tuple[str | int, int]]] = [[] for _ in range(len(images))]
        for i in range(len(images)) if paste_prob > 0 else ():
            mask = torch.from_numpy(np.asarray(masks[i]))
            if self.sided[i] and copy_is_free(mask, "mirror"):
                self.moves[i].append(("mirror", flipped_text_index[i]))
            shift = level_shift(levels[i], mask.shape[-2]) if levels is not None else 0
            if level_text_index is not None and copy_is_free(mask, shift):
                self.moves[i].append((shift, level_text_index[i]))
        self.null_text_index = list(null_text_index) if null_text_index is not None else None
        self.undescribed = undescribed
        self.images, self.masks = images, masks
        self.text_index = list(text_index)
        self.flipped_text_index = list(flipped_text_index) if flipped_text_index is not None else None
        self.flip_prob = flip_prob
        self.negative_rate = negative_rate
        self.negative_text_index = ([list(c) for c in negative_text_index]
                                    if negative_text_index is not None else None)
        self.transform = train_augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.images)

    def _draw_method(self) -> str | None:
        """One draw picks at most one of the text methods for an item (None: the item as it is)."""
        u = float(torch.rand(()))
        for method, share in (("null", self.null_rate), ("paste", self.paste_prob),
                              ("swap", self.swap_prob), ("negative", self.negative_rate)):
            if u < share:
                return method
            u -= share
        return None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = torch.from_numpy(np.array(self.images[i]))[None]
        mask = torch.from_numpy(np.array(self.masks[i]))[None]
        text = self.text_index[i]
        # The target marks the described lesion 1 and, with `undescribed`, a lesion the text does
        # not describe UNDESCRIBED (a weighted negative, see losses.DiceBCELoss).
        method, empty, pasted = self._draw_method(), False, False
        hard = UNDESCRIBED if self.undescribed else 0
        if method == "null":
            text, empty = self.null_text_index[i], True
        elif method == "paste" and self.moves[i]:
            pasted = True
            how, other_text = self.moves[i][int(torch.randint(len(self.moves[i]), ()))]
            image, copy = paste_copy(image, mask, how)  # before the warp: both lesions move alike
            if torch.rand(()) < 0.5:
                text, mask, copy = other_text, copy, mask
            mask = torch.where(copy > 0, torch.full_like(mask, hard), mask)
        elif method == "swap" and self.sided[i]:
            text, empty = self.flipped_text_index[i], True
        elif method == "negative" and self.negative_text_index[i]:
            candidates = self.negative_text_index[i]
            text, empty = candidates[int(torch.randint(len(candidates), ()))], True
        if empty:
            mask = mask * hard
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
            image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        plain = not (empty or pasted)
        if plain and self.flip_prob > 0 and torch.rand(()) < self.flip_prob:
            # concordant flip: mirror picture and mask AND use the side-swapped text
            image, mask = image.flip(-1), mask.flip(-1)
            text = self.flipped_text_index[i]
        return normalize(image), mask.float(), text


@dataclass
class LabeledArrays:
    """The labeled cases of one split at model size, with their rows."""

    cases: pd.DataFrame
    images: np.ndarray  # uint8 [N, S, S]
    masks: np.ndarray  # uint8 [N, S, S] in {0, 1}


def labeled_arrays(cases: pd.DataFrame, size: int, cache_dir: str | Path | None = None,
                   progress: bool = False) -> LabeledArrays:
    """Decode the images (through the preprocessing cache) and masks of `cases` at `size`; cases
    whose image cannot be read are left out (and counted)."""
    cache = build_image_cache(sorted(set(cases["image_path"])), size, cache_dir, progress=progress)
    index = cache.index_of()
    readable = cases[cases["image_path"].isin(index)].reset_index(drop=True)
    if len(readable) < len(cases):
        print(f"Skipped {len(cases) - len(readable)} case(s) whose image cannot be read.")
    images = np.stack([cache.array[index[p]] for p in readable["image_path"]]) if len(readable) \
        else np.zeros((0, size, size), np.uint8)
    return LabeledArrays(readable, images, load_masks(list(readable["mask_path"]), size))


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
    if dist.all_reduce_sum(float(npy.exists() and meta.exists()))[0] == dist.world_size():
        info = json.loads(meta.read_text())
        return ImageCache(np.load(npy, mmap_mode="r"), info["paths"], size,
                          [tuple(f) for f in info["failed"]], time.perf_counter() - start, False, npy)
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
        meta.write_text(json.dumps({"paths": [paths[i] for i in kept],
                                    "failed": [(paths[i], why) for i, why in failures]}))
    dist.barrier()
    return ImageCache(np.load(npy, mmap_mode="r"), [paths[i] for i in kept], size,
                      [(paths[i], why) for i, why in failures], time.perf_counter() - start, True, npy)
