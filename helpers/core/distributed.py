"""Process-group helpers for data-parallel training under `torchrun` (PyTorch's own launcher).

`torchrun --nproc_per_node N -m helpers pretrain ...` starts N processes and gives each the env
vars RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_from_env` turns them into a
process group (NCCL on GPUs, gloo on CPUs). Without them (one process, notebooks, Colab) every
helper here is a no-op: rank 0 of a world of 1, so single-process code paths stay unchanged.

Why torch.distributed and not Accelerate (or Lightning): no new dependency, and the training
loop stays one readable function whose every line is plain PyTorch; the few collective calls it
needs (barrier, all_reduce, all_gather_object, broadcast) are wrapped below. Nothing here
launches processes or moves bytes by itself: torchrun launches, torch.distributed communicates.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
from typing import Any, Iterator

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """True when the torchrun env vars ask for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its machine (which GPU it drives)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0: the only process that writes checkpoints, logs and progress bars."""
    return rank() == 0


def init_from_env(device: torch.device | str = "cpu", timeout_minutes: float = 30) -> bool:
    """Join the process group torchrun described in the environment (once; later calls are no-ops).

    NCCL for CUDA devices, gloo otherwise. Returns True when running distributed. On CUDA, each
    process takes the GPU of its LOCAL_RANK. The generous timeout covers rank 0 building a cache
    or a text model while the others wait at a barrier.
    """
    if is_distributed():
        return True
    if not launched_by_torchrun():
        return False
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return True


def rank_device(device: torch.device) -> torch.device:
    """`device` with this process's GPU index under DDP (cuda -> cuda:LOCAL_RANK)."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", local_rank())
    return device


def quiet_unless_main() -> None:
    """Send the prints of ranks > 0 to /dev/null (errors on stderr still show), so a run prints
    each line once."""
    if not is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. downloads, builds a shared file); the others wait, then
    run it and find the work done."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def _backend_device() -> torch.device:
    """Where tensors for collectives must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(*values: float) -> tuple[float, ...]:
    """Sums of each value over all ranks (float64 on the wire)."""
    if not is_distributed():
        return tuple(float(v) for v in values)
    t = torch.tensor(values, dtype=torch.float64, device=_backend_device())
    dist.all_reduce(t)
    return tuple(t.tolist())


def all_reduce_mean(total: float, count: float) -> float:
    """The count-weighted mean over ranks: sum(total) / sum(count), where each rank passes its
    sum of per-item values and its number of items (ranks may hold different counts)."""
    total, count = all_reduce_sum(total, count)
    return total / max(count, 1.0)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order; [obj] in one process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP keeps parameters identical but each rank updates its BatchNorm statistics on its own
    shard during the last step; after this call every rank holds what rank 0 saves, so
    validation and checkpoints agree across ranks."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` in DistributedDataParallel under torchrun, else `model` itself.

    Wrapped afresh each epoch, after the task froze or unfroze parameters (DDP fixes the set of
    trained parameters at construction). Checkpoints are written from the unwrapped model, so a
    DDP checkpoint loads in one process and vice versa."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def cleanup() -> None:
    """Leave the process group (end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
