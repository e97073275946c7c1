"""The training loop, `fit`, for both phases, and what it needs: settings, the `Task`, loaders, schedule.

`fit` is written so that a reader sees it whole: autocast on CUDA (bf16 on compute capability
>= 8.0, else fp16 with a grad scaler), a per-step warm-up + cosine schedule, an up-front time
estimate from the first steps, validation every epoch, the best checkpoint written atomically when
it improves and `last.pth` at most every ~10 minutes and at the end, and resume from `last.pth`
with optimizer, scheduler, scaler and RNG states, so that an interrupted run ends exactly where an
uninterrupted one would. What differs between the phases lives in a `Task`:
`pretrain.AutoencoderTask` and `finetune.SegmentationTask`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from ..core import distributed as dist
from ..core.checkpoint import save_checkpoint
from ..core.settings import default_num_workers, pick_device
from ..core.layout import LAST_FILE, PREVIOUS_LAST_FILE, history_file
from ..model.record import TrainingState
from ..core.drive import Mirror
from .rng import EpochSampler, EpochSeeded, restore_rng, rng_state


LAST_SAVE_ENV = "CXR_LAST_SAVE_S"
LAST_SAVE_SECONDS = 600.0  # last.pth (~300 MB with optimizer state on Drive) at most this often
ESTIMATE_STEPS = 6  # the up-front time estimate: steps 2..6 of the first epoch (step 1 allocates)


def last_save_interval() -> float:
    """Seconds between two full `last.pth` writes (and at the end): `CXR_LAST_SAVE_S` if set
    (0: every epoch, as the tests use), else 600 s (on Drive a 300 MB file every epoch costs
    minutes and quota churn)."""
    value = os.environ.get(LAST_SAVE_ENV, "").strip()
    return float(value) if value else LAST_SAVE_SECONDS


def _expected_time(settings: FitSettings, task: Task, epochs_left: int, steps_per_epoch: int,
                   step_seconds: float, measured: int, save_every: float) -> str:
    """The up-front cost line: training time from the measured step time, and what a disconnect
    can lose."""
    total = step_seconds * steps_per_epoch * epochs_left
    size = task.config.get("image_size")
    batch = task.loader.batch_size or 1
    lose = (f"last.pth is written every ~{save_every / 60:.0f} min and at the end: a disconnect "
            f"loses at most the last ~{save_every / 60:.0f} min (resume continues from last.pth)"
            if save_every > 0 else "last.pth is written every epoch")
    return (f"expected: ~{total / 60:.1f} min of training for {epochs_left} epoch(s) x "
            f"{steps_per_epoch} steps of {batch} images{f' at {size} px' if size else ''} on "
            f"{describe_precision(task.device)} ({step_seconds / batch * 1e3:.1f} ms per image, "
            f"measured on {measured} steps; validation adds a little per epoch; early stopping "
            f"may end sooner). {lose}.")


class OutputDirError(OSError):
    """The output folder cannot be created or written."""


@dataclass
class FitSettings:
    """How long `fit` trains and which epoch it keeps."""

    epochs: int
    warmup_epochs: float
    monitor: str  # the validation metric that picks the best epoch
    maximize: bool
    best_name: str  # file name of the best epoch's checkpoint
    patience: int | None = None  # early stop after this many epochs without a better `monitor`
    max_steps: int | None = None  # stop after this many optimizer steps (the benchmark)


@dataclass
class FitResult:
    history: pd.DataFrame  # one row per epoch
    best_path: Path
    last_path: Path
    best_value: float
    best_epoch: int
    seconds: float  # training time of this call (resumed epochs excluded)
    images_per_second: float  # training images per second of this call


class Task:
    """What `fit` trains. A subclass sets `model`, `optimizer`, `loader`, `device`, `generator` (the
    loader's RNG, saved for resume) and `config` (plain values; resuming with other values starts a
    new run), and implements the three methods below."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    device: torch.device
    generator: torch.Generator
    config: dict

    def loss(self, batch) -> tuple[torch.Tensor, int]:
        """(loss, number of images) of one training batch; runs under autocast."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """The epoch's validation metrics (runs under `torch.no_grad`, model in eval mode)."""
        raise NotImplementedError

    def best_checkpoint(self, row: dict) -> dict:
        """What the best epoch's file holds, given the epoch's history row."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (e.g. to freeze or unfreeze the encoder)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def writable_dir(path: str | Path) -> Path:
    """Create `path` and check that it can be written, before any time is spent training."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # one per process: DDP ranks probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OutputDirError(f"Cannot write to the output folder {out} ({err.strerror or err}). "
                             "Choose a writable folder (on Colab: one under /content or your "
                             "mounted Drive).") from err
    return out


def start_run(out_dir: str | Path, device: str, best_name: str, resume: bool, seed: int
              ) -> tuple[Path, torch.device, Mirror, Path]:
    """Both phases' start -> (run folder, device: the rank's own, the Drive mirror: after the process
    group, so rank 0 alone copies, the folder training writes in); the same seed on every rank."""
    out_dir = writable_dir(out_dir)
    dev = pick_device(device)
    dist.init_from_env(dev)
    dev = dist.rank_device(dev)
    mirror = Mirror.for_training(out_dir, best_name, resume)
    work = writable_dir(mirror.work)
    seed_everything(seed)
    return out_dir, dev, mirror, work


def in_run_folder(result: FitResult, mirror: Mirror) -> FitResult:
    """`result` with the paths its files have in the run folder, where `mirror` copied them."""
    return dataclasses.replace(result, best_path=mirror.in_run_folder(result.best_path),
                               last_path=mirror.in_run_folder(result.last_path))


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on GPUs of compute capability >= 8.0 (Ampere and later: A100,
    L4, RTX 30xx), fp16 with a grad scaler below (T4 7.5, V100 7.0: bf16 there is emulated,
    `is_bf16_supported()` says True by default, and bf16 convolutions are very slow or have no
    cuDNN engine); no autocast on the CPU (it is slower there)."""
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def describe_precision(device: torch.device) -> str:
    """One line for logs: the dtype `amp_dtype` chose and why, e.g. 'fp16 + grad scaler (Tesla T4,
    compute capability 7.5: no native bf16)'."""
    dtype = amp_dtype(device)
    if dtype is None:
        return f"float32 ({device.type}: no autocast)"
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if dtype == torch.bfloat16:
        return f"bf16 autocast ({name}, compute capability {major}.{minor})"
    return (f"fp16 autocast + grad scaler ({name}, compute capability {major}.{minor}: "
            "no native bf16 below 8.0)")


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to each group's lr, then cosine decay to 1% of it, per step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, device: torch.device,
                num_workers: int | None = None, generator: torch.Generator | None = None) -> DataLoader:
    """The DataLoader settings measured by `python -m helpers bench`: no workers on the CPU (the
    cache makes items cheap and workers would take cores from compute); on CUDA, persistent workers
    with pinned memory and prefetch so the GPU never waits.

    Under torchrun a shuffled loader gets a `DistributedSampler`: each rank draws its own shard
    of every epoch (`fit` calls `set_epoch`), `batch_size` items per rank per step. With workers
    a shuffled loader draws each epoch from (seed, epoch) (`rng.EpochSampler`, `rng.EpochSeeded`),
    so that a resumed run draws what an uninterrupted one would."""
    workers = default_num_workers(device) if num_workers is None else num_workers
    extra = dict(persistent_workers=True, prefetch_factor=4) if workers > 0 else {}
    sampler = None
    if shuffle and dist.is_distributed():
        # seeded from the loader's generator so every rank draws the same permutation to shard
        sampler = DistributedSampler(dataset, dist.world_size(), dist.rank(), shuffle=True,
                                     seed=generator.initial_seed() if generator else 0)
    per_rank = len(dataset) // dist.world_size() if sampler is not None else len(dataset)
    if shuffle and workers > 0:  # exact resume with workers: each epoch drawn from (seed, epoch)
        seed = generator.initial_seed() if generator else 0
        sampler, dataset = EpochSampler(sampler or len(dataset), seed), EpochSeeded(dataset, seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
                      drop_last=shuffle and per_rank > batch_size, generator=generator, **extra)


def fit(task: Task, settings: FitSettings, out_dir: Path, *, resume: bool = False,
        progress: bool = True, on_epoch_end: Callable[[dict], None] | None = None) -> FitResult:
    """Train `task.model` for `settings.epochs`; keep the best epoch by `settings.monitor` as
    `out_dir/settings.best_name`, and write `last.pth` (the full state) after an epoch when
    `last_save_interval()` seconds have passed since the last write, and at the end (slim), from
    which `resume=True` continues exactly: epochs after the last write are trained again.

    Under torchrun (see `helpers.distributed`) every rank runs this same loop on its shard: the
    model is wrapped in DDP for the training steps (gradients averaged across ranks), losses are
    summed over ranks, and rank 0 alone writes files and shows progress."""
    model, optimizer, loader, device = task.model, task.optimizer, task.loader, task.device
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    steps_per_epoch = max(1, len(loader))
    scheduler = warmup_cosine(optimizer, settings.epochs * steps_per_epoch,
                              int(settings.warmup_epochs * steps_per_epoch))
    history: list[dict] = []
    best_value, best_epoch, start_epoch = -math.inf if settings.maximize else math.inf, 0, 0
    last_path, best_path = out_dir / LAST_FILE, out_dir / settings.best_name
    state = TrainingState.load(last_path) if resume and last_path.exists() else None
    dist.barrier()  # every rank has read last.pth before rank 0 may move it
    if state is not None and state.config != task.config:
        kept = last_path.with_name(PREVIOUS_LAST_FILE)
        if dist.is_main():
            last_path.replace(kept)
        print(f"{last_path} was written with other settings: starting a new run "
              f"(the previous state is kept as {kept.name})")
        state = None
    if state is not None and state.complete:  # a finished run: nothing left to train
        frame = pd.DataFrame(state.history)
        return FitResult(frame, best_path, last_path, state.best_value, state.best_epoch, 0.0, 0.0)
    progress = progress and dist.is_main()
    if dist.is_distributed() and progress:
        per_rank, n = loader.batch_size, dist.world_size()
        lrs = ", ".join(f"{g.get('initial_lr', g['lr']):g}" for g in optimizer.param_groups)
        print(f"DDP: {n} processes x batch {per_rank} = effective batch {per_rank * n}; lr {lrs} "
              "(as set: not rescaled for the larger batch)")
    if state is not None:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        scaler.load_state_dict(state.scaler)
        restore_rng(state.rng, task.generator)
        history, best_value, best_epoch = state.history, state.best_value, state.best_epoch
        start_epoch = state.epoch
    stale, steps = start_epoch - best_epoch, 0
    seen, start, by_steps = 0, time.perf_counter(), False
    save_every, last_saved = last_save_interval(), time.perf_counter()
    for epoch in range(start_epoch, settings.epochs):
        if settings.patience is not None and stale >= settings.patience:
            break
        model.train()
        task.start_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):  # Distributed- / EpochSampler
            loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        task.model = dist.wrap_ddp(model, device)  # the task's steps go through DDP (a no-op alone)
        total, count, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{settings.epochs}", leave=False,
                   disable=not progress)
        for step, batch in enumerate(bar):
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss, n = task.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total, count, steps = total + loss.item() * n, count + n, steps + 1  # .item(): synced
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if progress and epoch == start_epoch and settings.max_steps is None:
                if step == 0:
                    t_probe = time.perf_counter()  # after the first step (allocation, kernels)
                elif step == min(ESTIMATE_STEPS, steps_per_epoch) - 1:
                    per_step = (time.perf_counter() - t_probe) / step
                    tqdm.write(_expected_time(settings, task, settings.epochs - epoch,
                                              steps_per_epoch, per_step, step, save_every))
            if settings.max_steps is not None and steps >= settings.max_steps:
                break
        task.model = model
        dist.broadcast_buffers(model)  # BatchNorm statistics of rank 0 everywhere
        total, count = dist.all_reduce_sum(total, count)  # over all ranks: the global mean loss
        train_seconds = time.perf_counter() - t0
        seen += count
        model.eval()
        with torch.no_grad():
            metrics = task.validate()
        row = {"epoch": epoch + 1, "train_loss": total / max(1, count), **metrics,
               "lr": optimizer.param_groups[0]["lr"], "images_per_s": count / train_seconds}
        history.append(row)
        value = row[settings.monitor]
        if (value > best_value) if settings.maximize else (value < best_value):
            best_value, best_epoch, stale = value, epoch + 1, 0
            if dist.is_main():
                save_checkpoint(task.best_checkpoint(row), best_path)
        else:
            stale += 1
        if dist.is_main() and time.perf_counter() - last_saved >= save_every:
            last_saved = time.perf_counter()
            TrainingState(model.state_dict(), epoch + 1, history, best_value, best_epoch, task.config,
                          optimizer.state_dict(), scheduler.state_dict(), scaler.state_dict(),
                          rng=rng_state(task.generator)).save(last_path)
        if progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "lr"))
            print(f"epoch {epoch + 1}/{settings.epochs}: {shown}")
        if on_epoch_end is not None:
            on_epoch_end(row)
        if progress and epoch == start_epoch and epoch + 1 < settings.epochs:  # the cost, once
            left = (time.perf_counter() - t0) * (settings.epochs - epoch - 1)
            print(f"~{left / 60:.0f} min left ({settings.epochs - epoch - 1} more epochs at "
                  f"{time.perf_counter() - t0:.0f} s each; early stopping may end sooner)")
        if settings.max_steps is not None and steps >= settings.max_steps:
            by_steps = True
            break
    seconds = time.perf_counter() - start
    frame = pd.DataFrame(history)
    if dist.is_main():
        if not by_steps and history:  # finished (all epochs or early stop): drop the
            # optimizer/scheduler state (2/3 of the file); the final weights stay (Phase-1 figures)
            TrainingState(model.state_dict(), len(history), history, best_value, best_epoch,
                          task.config, complete=True).save(last_path)
        frame.to_csv(out_dir / history_file(settings.best_name), index=False)
    dist.barrier()  # the files are complete before any rank reads them
    return FitResult(frame, best_path, last_path, best_value, best_epoch, seconds,
                     seen / seconds if seconds > 0 else 0.0)
