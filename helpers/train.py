"""Phase-1 and Phase-2 training: one loop, `fit`, and the two tasks it trains.

`fit` is written so that a reader sees it whole: autocast on CUDA (bf16 where supported, else fp16
with a grad scaler), a per-step warm-up + cosine schedule, validation every epoch, the best
checkpoint and `last.pth` written atomically each epoch, and resume from `last.pth` with optimizer,
scheduler, scaler and RNG states, so that an interrupted run ends exactly where an uninterrupted one
would. What differs between the phases (model, data, loss, validation, what the best checkpoint
holds) lives in a `Task`: `AutoencoderTask` (Phase 1) and `SegmentationTask` (Phase 2).

The loop and both tasks are in this one file, longer than the others for that reason: a reader
sees the whole of training in one place, as in nanoGPT.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from . import distributed as dist
from .cache import build_image_cache
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TINY_TEXT_MODEL, FinetuneConfig, PretrainConfig, default_num_workers, pick_device
from .datasets import LabeledArrays, LabeledCases, UnlabeledImages, labeled_arrays
from .layout import (
    BEST_FILE,
    ENCODER_FILE,
    LAST_FILE,
    PREVIOUS_LAST_FILE,
    TEXT_EMBEDDINGS_FILE,
    DatasetError,
    history_file,
)
from .losses import (
    DiceBCELoss,
    hide_patches,
    masked_reconstruction_loss,
    pos_weight_from_masks,
    reconstruction_loss,
    scaled_patch,
)
from .metrics import best_threshold, dice_per_image
from .model import (
    MultimodalUnet,
    build_autoencoder,
    encoder_checkpoint,
    freeze_encoder,
    load_pretrained_encoder,
    predict_arrays,
)
from .places import SIDES, names_level, names_side
from .reader import ReportReader
from .record import ModelRecord
from .text import EmbeddingCache, load_text_encoder


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


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; no autocast on the CPU (it is slower there)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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
    of every epoch (`fit` calls `set_epoch`), `batch_size` items per rank per step."""
    workers = default_num_workers(device) if num_workers is None else num_workers
    extra = dict(persistent_workers=True, prefetch_factor=4) if workers > 0 else {}
    sampler = None
    if shuffle and dist.is_distributed():
        # seeded from the loader's generator so every rank draws the same permutation to shard
        sampler = DistributedSampler(dataset, dist.world_size(), dist.rank(), shuffle=True,
                                     seed=generator.initial_seed() if generator else 0)
    per_rank = len(dataset) // dist.world_size() if sampler is not None else len(dataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
                      drop_last=shuffle and per_rank > batch_size, generator=generator, **extra)


def fit(task: Task, settings: FitSettings, out_dir: Path, *, resume: bool = False,
        progress: bool = True, on_epoch_end: Callable[[dict], None] | None = None) -> FitResult:
    """Train `task.model` for `settings.epochs`; keep the best epoch by `settings.monitor` as
    `out_dir/settings.best_name` and end every epoch with `last.pth`, from which `resume=True`
    continues.

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
    state = load_checkpoint(last_path) if resume and last_path.exists() else None
    dist.barrier()  # every rank has read last.pth before rank 0 may move it
    if state is not None and state.get("config") != task.config:
        kept = last_path.with_name(PREVIOUS_LAST_FILE)
        if dist.is_main():
            last_path.replace(kept)
        print(f"{last_path} was written with other settings: starting a new run "
              f"(the previous state is kept as {kept.name})")
        state = None
    if state is not None and state.get("complete"):  # a finished run: nothing left to train
        frame = pd.DataFrame(state["history"])
        return FitResult(frame, best_path, last_path, state["best_value"], state["best_epoch"], 0.0, 0.0)
    progress = progress and dist.is_main()
    if dist.is_distributed() and progress:
        per_rank, n = loader.batch_size, dist.world_size()
        lrs = ", ".join(f"{g.get('initial_lr', g['lr']):g}" for g in optimizer.param_groups)
        print(f"DDP: {n} processes x batch {per_rank} = effective batch {per_rank * n}; lr {lrs} "
              "(as set: not rescaled for the larger batch)")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        task.generator.set_state(state["rng"]["loader"])
        history, best_value, best_epoch = state["history"], state["best_value"], state["best_epoch"]
        start_epoch = state["epoch"]
    stale, steps = start_epoch - best_epoch, 0
    seen, start, by_steps = 0, time.perf_counter(), False
    for epoch in range(start_epoch, settings.epochs):
        if settings.patience is not None and stale >= settings.patience:
            break
        model.train()
        task.start_epoch(epoch)
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        task.model = dist.wrap_ddp(model, device)  # the task's steps go through DDP (a no-op alone)
        total, count, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{settings.epochs}", leave=False,
                   disable=not progress)
        for batch in bar:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss, n = task.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total, count, steps = total + loss.item() * n, count + n, steps + 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
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
        if dist.is_main():
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                             "rng": {"torch": torch.get_rng_state(),
                                     "loader": task.generator.get_state()},
                             "epoch": epoch + 1, "history": history, "best_value": best_value,
                             "best_epoch": best_epoch, "config": task.config}, last_path)
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
        if not by_steps and last_path.exists():  # finished (all epochs or early stop): drop the
            # optimizer/scheduler state (2/3 of the file); the final weights stay (Phase-1 figures)
            save_checkpoint({"complete": True, "model": model.state_dict(), "epoch": len(history),
                             "history": history, "best_value": best_value,
                             "best_epoch": best_epoch, "config": task.config}, last_path)
        frame.to_csv(out_dir / history_file(settings.best_name), index=False)
    dist.barrier()  # the files are complete before any rank reads them
    return FitResult(frame, best_path, last_path, best_value, best_epoch, seconds,
                     seen / seconds if seconds > 0 else 0.0)


# --------------------------------------------------------------------------------------------
# Phase 1


class AutoencoderTask(Task):
    """Phase 1: a U-Net reconstructs its input (`reconstruct`), or the patches hidden under noise
    (`masked`), from a uint8 image array [N, S, S]; the best epoch saves the encoder."""

    def __init__(self, cfg: PretrainConfig, array: np.ndarray, device: torch.device):
        if cfg.objective not in ("reconstruct", "masked"):
            raise ValueError(f"objective must be 'reconstruct' or 'masked', got {cfg.objective!r}")
        self.cfg, self.device = cfg, device
        order = np.random.default_rng(cfg.seed).permutation(len(array))
        n_val = max(1, round(len(order) * cfg.val_fraction))
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.loader = make_loader(UnlabeledImages(array, order[n_val:], augment=cfg.augment),
                                  cfg.batch_size, shuffle=True, device=device,
                                  num_workers=cfg.num_workers, generator=self.generator)
        # each rank validates its own slice (no padding: counts are exact) and `validate` weights
        # the ranks' mean losses by their counts: the whole set is scored once, in parallel
        self.val_set = UnlabeledImages(array, order[:n_val][dist.rank()::dist.world_size()])
        self.val_loader = make_loader(self.val_set, cfg.batch_size, shuffle=False, device=device,
                                      num_workers=0)
        self.model = build_autoencoder(cfg.encoder).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.config = {"phase": 1, **dataclasses.asdict(cfg), "n_images": len(array)}

    def objective_loss(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.cfg.objective == "reconstruct":
            return reconstruction_loss(self.model(x).float(), x)
        patch = scaled_patch(self.cfg.patch_size, self.cfg.image_size)
        corrupted, hidden = hide_patches(x, patch, self.cfg.mask_ratio, generator=gen)
        return masked_reconstruction_loss(self.model(corrupted).float(), x, hidden,
                                          self.cfg.hidden_weight)

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        x = batch.to(self.device, non_blocking=True)
        return self.objective_loss(x), len(x)

    def validate(self) -> dict[str, float]:
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)  # same patches each epoch
        losses = [self.objective_loss(x.to(self.device), gen).item() * len(x) for x in self.val_loader]
        return {"val_loss": dist.all_reduce_mean(sum(losses), len(self.val_set))}

    def best_checkpoint(self, row: dict) -> dict:
        return encoder_checkpoint(self.model, self.cfg.encoder, config=self.config,
                                  epoch=row["epoch"], val_loss=row["val_loss"])


def pretrain(cfg: PretrainConfig, image_paths: Sequence[str], out_dir: str | Path, *,
             cache_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
             max_steps: int | None = None, on_epoch_end: Callable[[dict], None] | None = None
             ) -> FitResult:
    """Phase 1: train a U-Net autoencoder on unlabeled images; save the encoder of the epoch with
    the lowest validation loss as `out_dir/my_pretrained_encoder.pth`.

    Under torchrun (`torchrun --nproc_per_node N -m helpers pretrain ...`) every rank calls this
    with the same paths: the cache is built in shards, `cfg.batch_size` is per rank.

    `objective="reconstruct"`: MSE of the output against the input. `objective="masked"`: a random
    share of patches is replaced by noise and the loss on them is weighted up, so copying the input
    through the top skip connection no longer pays and the deep encoder has to model anatomy.
    """
    out = writable_dir(out_dir)
    device = pick_device(cfg.device)
    dist.init_from_env(device)
    device = dist.rank_device(device)
    seed_everything(cfg.seed)  # the same seed on every rank: one saved RNG state resumes them all
    paths = list(image_paths)[: cfg.max_images] if cfg.max_images else list(image_paths)
    cache = build_image_cache(paths, cfg.image_size, cache_dir, progress=progress)
    if len(cache.array) < 2:
        failed = "; ".join(f"{p}: {why}" for p, why in cache.failed[:3])
        raise DatasetError(f"Phase 1 needs at least 2 readable images, got {len(cache.array)} of "
                           f"{len(paths)}. {failed} Check the dataset's images/images_normalized/.")
    task = AutoencoderTask(cfg, cache.array, device)
    settings = FitSettings(cfg.epochs, cfg.warmup_epochs, monitor="val_loss", maximize=False,
                           best_name=ENCODER_FILE, max_steps=max_steps)
    result = fit(task, settings, out, resume=resume, progress=progress, on_epoch_end=on_epoch_end)
    if cache.failed:
        print(f"Skipped {len(cache.failed)} unreadable image(s), e.g. {cache.failed[0][0]}")
        for path, why in cache.failed[1:10]:
            print(f"  {path}: {why}")
    return result


# --------------------------------------------------------------------------------------------
# Phase 2


def _split(cases: pd.DataFrame, name: str) -> pd.DataFrame:
    part = cases[cases["split"] == name].reset_index(drop=True)
    if part.empty:
        raise DatasetError(f"No labeled cases in the {name!r} split: add masks under masked/ or "
                           "check the split CSV.")
    return part


def disjoint_cases(masks: np.ndarray) -> list[list[int]]:
    """For each mask of uint8 [N, S, S], the other cases whose mask does not touch it."""
    flat = torch.from_numpy(np.asarray(masks)).flatten(1).float()
    overlap = (flat @ flat.T) > 0
    return [[j for j in range(len(flat)) if j != i and not overlap[i, j]] for i in range(len(flat))]


class SegmentationTask(Task):
    """Phase 2: the multimodal U-Net learns the mask of the finding a text describes.

    Each case's text goes through `ReportReader(cfg.text_mode).model_text`; every unique
    text (with its side-swapped twin for the concordant flip) is encoded once by the frozen text
    encoder into `table` [U, D] (and `tokens` [U, L, H] + `token_mask` [U, L] for a fusion that
    attends); batches carry row indices into them.
    """

    def __init__(self, cfg: FinetuneConfig, train: LabeledArrays, val: LabeledArrays,
                 device: torch.device, out_dir: Path, text_cache_dir: str | Path | None = None):
        self.cfg, self.device, self.val = cfg, device, val
        encoder = load_text_encoder(cfg.text_model, device=device, cache_dir=text_cache_dir,
                                    fallback=cfg.text_fallback)
        self.text_encoder = encoder
        self.text_model = (TINY_TEXT_MODEL if encoder.is_tiny and cfg.text_model != encoder.name
                           else cfg.text_model)
        model = MultimodalUnet(cfg.encoder, text_dim=encoder.dim, fusion=cfg.fusion,
                               upsampling=cfg.upsampling, token_dim=encoder.token_dim)
        self.reader = reader = ReportReader(cfg.text_mode)
        swapping = cfg.concordant_flip > 0 or cfg.paste_prob > 0 or cfg.swap_prob > 0
        training = reader.training_texts(train.cases["text"], sides=swapping, nulls=cfg.null_rate > 0,
                                         levels=cfg.paste_prob > 0)
        train_texts = training.texts
        texts = train_texts + [reader.model_text(t) for t in val.cases["text"]]
        flipped, nulls, leveled = training.flipped, training.nulls, training.leveled
        extra = [flipped, nulls, leveled]
        embeddings = EmbeddingCache(encoder, out_dir / TEXT_EMBEDDINGS_FILE,
                                    with_tokens=model.needs_tokens)
        table, index = embeddings.table(texts + flipped + nulls + leveled)
        self.tokens = None  # (states [U, L, H], mask [U, L]) in the rows of `table`
        if model.needs_tokens:
            unique = list(dict.fromkeys(texts + flipped + nulls + leveled))
            self.tokens = tuple(t.to(device) for t in embeddings.tokens(unique))
        embeddings.save()
        n_train, n_texts = len(train.cases), len(texts)
        train_idx, self.val_idx = index[:n_train], index[n_train:n_texts]
        starts = np.cumsum([n_texts] + [len(e) for e in extra])
        flipped_idx, null_idx, level_idx = (index[a:b] or None for a, b in zip(starts, starts[1:]))
        if cfg.shuffle_text:  # ablation: the same texts, paired with the wrong images
            train_idx = list(np.random.default_rng(cfg.seed).permutation(train_idx))
        self.text_report = reader.text_report(train.cases["text"], texts, encoder)
        if self.text_report["truncation"]["n_truncated"]:
            t = self.text_report["truncation"]
            print(f"{t['n_truncated']} of {t['n_texts']} training/validation texts are longer than "
                  f"the text encoder's {t['max_length']} tokens and lose {t['mean_tokens_lost']:.0f} "
                  f"tokens at the end on average (text_mode={cfg.text_mode!r}).")

        train_emb = table[sorted(set(train_idx))]
        model.set_text_norm(train_emb.mean(0), train_emb.std(0, unbiased=False) if len(train_emb) > 1
                            else torch.ones(encoder.dim))
        if cfg.pretrained_encoder:
            load_pretrained_encoder(model.encoder, cfg.pretrained_encoder, cfg.encoder)
        self.model = model.to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.table = table.to(device)

        self.criterion = DiceBCELoss(pos_weight_from_masks(train.masks), cfg.dice_weight,
                                     cfg.bce_weight)
        encoder_params = list(model.encoder.parameters())
        encoder_ids = {id(p) for p in encoder_params}
        self.optimizer = torch.optim.AdamW([
            {"params": encoder_params, "lr": cfg.encoder_lr},
            {"params": [p for p in model.parameters() if id(p) not in encoder_ids], "lr": cfg.lr},
        ], weight_decay=cfg.weight_decay)
        negatives = ([[train_idx[j] for j in others] for others in disjoint_cases(train.masks)]
                     if cfg.negative_rate > 0 else None)
        train_set = LabeledCases(train.images, train.masks, train_idx, augment=cfg.augment,
                                 flip_prob=cfg.concordant_flip, flipped_text_index=flipped_idx,
                                 negative_rate=cfg.negative_rate, negative_text_index=negatives,
                                 paste_prob=cfg.paste_prob, swap_prob=cfg.swap_prob,
                                 sided=[names_side(t) in SIDES for t in train_texts],
                                 null_rate=cfg.null_rate, null_text_index=null_idx,
                                 levels=[names_level(t) for t in train_texts],
                                 level_text_index=level_idx, undescribed=cfg.undescribed_weight)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.loader = make_loader(train_set, cfg.batch_size, shuffle=True, device=device,
                                  num_workers=cfg.num_workers, generator=self.generator)
        self.val_masks = torch.from_numpy(val.masks)[:, None].bool()
        self.config = {"phase": 2, **dataclasses.asdict(cfg)}

    def text_args(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """The model's text inputs for table rows [B]: embeddings, and token states + mask."""
        extra = [t[rows] for t in self.tokens] if self.tokens is not None else []
        return [self.table[rows], *extra]

    def loss(self, batch) -> tuple[torch.Tensor, int]:
        images, masks, text = (t.to(self.device, non_blocking=True) for t in batch)
        return self.criterion(self.model(images, *self.text_args(text)), masks), len(images)

    def val_probs(self) -> torch.Tensor:
        """Validation probabilities float32 [N, 1, S, S]."""
        emb, *tokens = self.text_args(torch.tensor(self.val_idx, device=self.device))
        return predict_arrays(self.model, self.val.images, emb, self.device, self.cfg.batch_size,
                              tokens=tuple(tokens) or None)

    def validate(self) -> dict[str, float]:
        probs = self.val_probs()
        logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
        return {"val_loss": self.criterion(logits, self.val_masks.float()).item(),
                "val_dice": dice_per_image(probs >= 0.5, self.val_masks).mean().item()}

    def start_epoch(self, epoch: int) -> None:
        freeze_encoder(self.model, epoch < self.cfg.freeze_encoder_epochs)

    def record(self, row: dict) -> ModelRecord:
        """The best epoch's record, given the epoch's history row (threshold 0.5 until `finetune`
        chooses one on validation)."""
        return ModelRecord(self.model.state_dict(), self.model.config(), self.cfg.image_size,
                           self.text_model, self.text_encoder.dim, threshold=0.5,
                           text_model_requested=self.cfg.text_model,
                           text_model_is_tiny=self.text_encoder.is_tiny, text_mode=self.cfg.text_mode,
                           text_report=self.text_report, finetune=self.config, epoch=row["epoch"],
                           metrics={k: v for k, v in row.items() if k.startswith("val_")})

    def best_checkpoint(self, row: dict) -> dict:
        return self.record(row).to_payload()


def finetune(cfg: FinetuneConfig, cases: pd.DataFrame, out_dir: str | Path, *,
             cache_dir: str | Path | None = None, text_cache_dir: str | Path | None = None,
             resume: bool = False, progress: bool = True, max_steps: int | None = None,
             on_epoch_end: Callable[[dict], None] | None = None) -> FitResult:
    """Phase 2: fine-tune the multimodal U-Net on the labeled cases (`split` train / val).

    Saves `best_model.pth` at the best validation Dice, with the threshold chosen on validation,
    the settings needed to rebuild model and text encoder, and the validation metrics.
    `max_steps` stops after that many optimizer steps (the benchmark times the real loop so).
    Under torchrun every rank validates the whole validation set rather than a shard: it is small
    (tens of cases), the threshold search needs all its probabilities, and identical weights give
    identical metrics, hence the same best epoch and early stop, on every rank.
    """
    out = writable_dir(out_dir)
    device = pick_device(cfg.device)
    dist.init_from_env(device)
    device = dist.rank_device(device)
    seed_everything(cfg.seed)
    train, val = (labeled_arrays(_split(cases, s), cfg.image_size, cache_dir) for s in ("train", "val"))
    with dist.main_first():  # rank 0 builds the text model and embedding cache, the others reuse
        task = SegmentationTask(cfg, train, val, device, out, text_cache_dir)
    settings = FitSettings(cfg.epochs, cfg.warmup_epochs, monitor="val_dice", maximize=True,
                           best_name=BEST_FILE, patience=cfg.patience, max_steps=max_steps)
    result = fit(task, settings, out, resume=resume, progress=progress, on_epoch_end=on_epoch_end)

    # Choose the threshold on validation with the best weights, and store it with them.
    best = ModelRecord.load(result.best_path)
    task.model.load_state_dict(best.state_dict)
    probs = task.val_probs()
    best.threshold = best_threshold(probs, task.val_masks)
    best.metrics["val_dice_at_threshold"] = dice_per_image(probs >= best.threshold,
                                                           task.val_masks).mean().item()
    if dist.is_main():
        best.save(result.best_path)
    dist.barrier()
    return result
