"""Random states for an exact resume: what `last.pth` keeps, and loader workers that draw from
(seed, epoch).

A resumed run must draw what an uninterrupted one would: the same shuffle, the same augmentations
and place items, the same hidden patches. The main process's draws come from torch's CPU state and,
on a GPU, from CUDA's (the masked objective draws its patches there): both are saved in `last.pth`
with the loader's generator (`rng_state`). Loader workers are processes with their own states; a
persistent worker is seeded once, when it starts, which is at epoch 0 in one run and at the resumed
epoch in the other. So with workers each epoch's order is a permutation drawn from (seed, epoch)
(`EpochSampler`), and each worker reseeds itself from (seed, epoch, worker id) at its first item
of an epoch (`EpochSeeded`): what an epoch draws depends on nothing that came before it.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info


def rng_state(generator: torch.Generator) -> dict:
    """torch's CPU state, every CUDA device's when CUDA is present, and the loader's `generator`."""
    state = {"torch": torch.get_rng_state(), "loader": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    """Set what `rng_state` saved (a state saved without CUDA leaves CUDA's as it is)."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def mixed_seed(*parts: int) -> int:
    """A 63-bit seed from integers, e.g. (seed, epoch, worker): unrelated for neighbouring inputs."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class EpochSampler(Sampler):
    """Yields (epoch, index). The order of epoch e is a permutation of `inner` items drawn from
    (seed, e), or, when `inner` is a sampler (a `DistributedSampler`: already seeded by epoch),
    that sampler's order. `set_epoch` is called by the loop before each epoch."""

    def __init__(self, inner: Sampler | int, seed: int):
        self.inner, self.seed, self.epoch = inner, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return self.inner if isinstance(self.inner, int) else len(self.inner)

    def __iter__(self):
        if isinstance(self.inner, int):
            generator = torch.Generator().manual_seed(mixed_seed(self.seed, self.epoch))
            order = torch.randperm(self.inner, generator=generator).tolist()
        else:
            order = list(self.inner)
        return iter([(self.epoch, i) for i in order])


class EpochSeeded(Dataset):
    """`dataset` read by (epoch, index): at its first item of an epoch a process seeds torch,
    `random` and NumPy from (seed, epoch, worker id), so its draws that epoch are fixed."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self._epoch = dataset, seed, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        epoch, index = item
        if epoch != self._epoch:
            worker = get_worker_info()
            seed = mixed_seed(self.seed, epoch, worker.id if worker is not None else 0)
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2 ** 32)
            self._epoch = epoch
        return self.dataset[index]
