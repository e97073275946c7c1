"""Phase-1 and Phase-2 training.

Both phases share one loop, `fit`, written so that a reader sees it whole: autocast on CUDA (bf16
where supported, else fp16 with a grad scaler), a per-step warm-up + cosine schedule, validation every
epoch, the best checkpoint and `last.pth` written atomically each epoch, and resume from `last.pth`
with optimizer, scheduler, scaler and RNG states, so an interrupted run ends exactly where an
uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TINY_TEXT_MODEL, FinetuneConfig, PretrainConfig, default_num_workers, pick_device
from .data import DatasetError
from .datasets import LabeledCases, UnlabeledImages, build_image_cache, load_masks, normalize
from .inference import predict_arrays
from .losses import (DiceBCELoss, hide_patches, masked_reconstruction_loss, pos_weight_from_masks,
                     reconstruction_loss)
from .metrics import best_threshold, dice_per_image
from .model import (MultimodalUnet, build_autoencoder, encoder_checkpoint, freeze_encoder,
                    load_pretrained_encoder)
from .text import EmbeddingCache, load_text_encoder, swap_sides

ENCODER_FILE, BEST_FILE, LAST_FILE = "my_pretrained_encoder.pth", "best_model.pth", "last.pth"


class OutputDirError(OSError):
    """The output folder cannot be created or written."""


@dataclass
class FitResult:
    history: pd.DataFrame  # one row per epoch
    best_path: Path
    last_path: Path
    best_value: float
    best_epoch: int
    seconds: float  # training time of this call (resumed epochs excluded)
    images_per_second: float  # training images per second of this call


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_out_dir(path: str | Path) -> Path:
    """Create `path` and check that it can be written, before any time is spent training."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
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
    with pinned memory and prefetch so the GPU never waits."""
    workers = default_num_workers(device) if num_workers is None else num_workers
    extra = dict(persistent_workers=True, prefetch_factor=4) if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=shuffle and len(dataset) > batch_size,
                      generator=generator, **extra)


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
        loss_fn: Callable[[object], tuple[torch.Tensor, int]], validate: Callable[[], dict],
        *, epochs: int, warmup_epochs: float, out_dir: Path, monitor: str, maximize: bool,
        best_name: str, best_payload: Callable[[dict], dict], config: dict, device: torch.device,
        generator: torch.Generator, resume: bool = False, patience: int | None = None,
        on_epoch_start: Callable[[int], None] | None = None,
        on_epoch_end: Callable[[dict], None] | None = None, progress: bool = True) -> FitResult:
    """Train `model` for `epochs`; `loss_fn(batch) -> (loss, batch size)` runs under autocast.

    `validate()` returns the epoch's validation metrics, among them `monitor`. The best epoch by
    `monitor` is saved as `best_payload(row)` to `out_dir/best_name`; every epoch ends with
    `last.pth`, from which `resume=True` continues.
    """
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    steps_per_epoch = max(1, len(loader))
    scheduler = warmup_cosine(optimizer, epochs * steps_per_epoch,
                              int(warmup_epochs * steps_per_epoch))
    history: list[dict] = []
    best_value, best_epoch, start_epoch = -math.inf if maximize else math.inf, 0, 0
    last_path, best_path = out_dir / LAST_FILE, out_dir / best_name
    state = load_checkpoint(last_path) if resume and last_path.exists() else None
    if state is not None and state.get("config") != config:
        kept = last_path.with_name("last.prev.pth")
        last_path.replace(kept)
        print(f"{last_path} was written with other settings: starting a new run "
              f"(the previous state is kept as {kept.name})")
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["loader"])
        history, best_value, best_epoch = state["history"], state["best_value"], state["best_epoch"]
        start_epoch = state["epoch"]
    stale = start_epoch - best_epoch
    seen, start = 0, time.perf_counter()
    for epoch in range(start_epoch, epochs):
        if patience is not None and stale >= patience:
            break
        model.train()
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        total, count, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
        for batch in bar:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss, n = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total, count = total + loss.item() * n, count + n
            bar.set_postfix(loss=f"{loss.item():.4f}")
        train_seconds = time.perf_counter() - t0
        seen += count
        model.eval()
        with torch.no_grad():
            metrics = validate()
        row = {"epoch": epoch + 1, "train_loss": total / max(1, count), **metrics,
               "lr": optimizer.param_groups[0]["lr"], "images_per_s": count / train_seconds}
        history.append(row)
        value = row[monitor]
        if (value > best_value) if maximize else (value < best_value):
            best_value, best_epoch, stale = value, epoch + 1, 0
            save_checkpoint(best_payload(row), best_path)
        else:
            stale += 1
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                         "rng": {"torch": torch.get_rng_state(), "loader": generator.get_state()},
                         "epoch": epoch + 1, "history": history, "best_value": best_value,
                         "best_epoch": best_epoch, "config": config}, last_path)
        if progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "lr"))
            print(f"epoch {epoch + 1}/{epochs}: {shown}")
        if on_epoch_end is not None:
            on_epoch_end(row)
    seconds = time.perf_counter() - start
    frame = pd.DataFrame(history)
    frame.to_csv(out_dir / f"history_{Path(best_name).stem}.csv", index=False)
    return FitResult(frame, best_path, last_path, best_value, best_epoch, seconds,
                     seen / seconds if seconds > 0 else 0.0)


# --------------------------------------------------------------------------------------------
# Phase 1


def pretrain(cfg: PretrainConfig, image_paths: Sequence[str], out_dir: str | Path, *,
             cache_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
             on_epoch_end: Callable[[dict], None] | None = None) -> FitResult:
    """Phase 1: train a U-Net autoencoder on unlabeled images; save the encoder of the epoch with
    the lowest validation loss as `out_dir/my_pretrained_encoder.pth`.

    `objective="reconstruct"`: MSE of the output against the input. `objective="masked"`: a random
    share of patches is replaced by noise and the loss on them is weighted up, so copying the input
    through the top skip connection no longer pays and the deep encoder has to model anatomy.
    """
    if cfg.objective not in ("reconstruct", "masked"):
        raise ValueError(f"objective must be 'reconstruct' or 'masked', got {cfg.objective!r}")
    out = prepare_out_dir(out_dir)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    paths = list(image_paths)[: cfg.max_images] if cfg.max_images else list(image_paths)
    cache = build_image_cache(paths, cfg.image_size, cache_dir, progress=progress)
    if len(cache.array) < 2:
        failed = "; ".join(f"{p}: {why}" for p, why in cache.failed[:3])
        raise DatasetError(f"Phase 1 needs at least 2 readable images, got {len(cache.array)} of "
                           f"{len(paths)}. {failed} Check the dataset's images/images_normalized/.")
    order = np.random.default_rng(cfg.seed).permutation(len(cache.array))
    n_val = max(1, round(len(order) * cfg.val_fraction))
    train_set = UnlabeledImages(cache.array, order[n_val:], augment=cfg.augment)
    val_set = UnlabeledImages(cache.array, order[:n_val])
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = make_loader(train_set, cfg.batch_size, shuffle=True, device=device,
                         num_workers=cfg.num_workers, generator=generator)
    val_loader = make_loader(val_set, cfg.batch_size, shuffle=False, device=device, num_workers=0)

    model = build_autoencoder(cfg.encoder).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    patch = max(2, round(cfg.patch_size * cfg.image_size / 256))

    def objective_loss(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if cfg.objective == "reconstruct":
            return reconstruction_loss(model(x).float(), x)
        corrupted, hidden = hide_patches(x, patch, cfg.mask_ratio, generator=gen)
        return masked_reconstruction_loss(model(corrupted).float(), x, hidden, cfg.hidden_weight)

    def loss_fn(batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        x = batch.to(device, non_blocking=True)
        return objective_loss(x), len(x)

    def validate() -> dict:
        gen = torch.Generator(device=device).manual_seed(cfg.seed)  # same hidden patches each epoch
        losses = [objective_loss(x.to(device), gen).item() * len(x) for x in val_loader]
        return {"val_loss": sum(losses) / len(val_set)}

    config = {"phase": 1, **dataclasses.asdict(cfg), "n_images": len(cache.array)}
    result = fit(model, optimizer, loader, loss_fn, validate, epochs=cfg.epochs,
                 warmup_epochs=cfg.warmup_epochs, out_dir=out, monitor="val_loss", maximize=False,
                 best_name=ENCODER_FILE, config=config, device=device, generator=generator,
                 resume=resume, progress=progress, on_epoch_end=on_epoch_end,
                 best_payload=lambda row: encoder_checkpoint(
                     model, cfg.encoder, config=config, epoch=row["epoch"],
                     val_loss=row["val_loss"]))
    if cache.failed:
        print(f"Skipped {len(cache.failed)} unreadable image(s), e.g. {cache.failed[0][0]}")
    return result


def reconstruct_examples(encoder_path: str | Path, images: np.ndarray,
                         cfg: PretrainConfig) -> dict[str, np.ndarray]:
    """Inputs, masked inputs (None for the plain objective) and reconstructions of the final
    autoencoder, saved in `last.pth` next to `encoder_path` (for the Phase-1 figure).
    images: uint8 [N, S, S] -> float arrays [N, S, S] in the model's [-1, 1] scale."""
    state = load_checkpoint(Path(encoder_path).with_name(LAST_FILE))
    model = build_autoencoder(cfg.encoder)
    model.load_state_dict(state["model"])
    model.eval()
    x = normalize(torch.from_numpy(np.array(images))[:, None])
    masked = None
    with torch.no_grad():
        if cfg.objective == "masked":
            gen = torch.Generator().manual_seed(cfg.seed)
            patch = max(2, round(cfg.patch_size * cfg.image_size / 256))
            x_in, _ = hide_patches(x, patch, cfg.mask_ratio, generator=gen)
            masked = x_in[:, 0].numpy()
        else:
            x_in = x
        out = model(x_in)[:, 0].numpy()
    return {"inputs": x[:, 0].numpy(), "masked": masked, "outputs": out}


# --------------------------------------------------------------------------------------------
# Phase 2


@dataclass
class LabeledArrays:
    """The labeled cases of one split at model size, with their rows."""

    cases: pd.DataFrame
    images: np.ndarray  # uint8 [N, S, S]
    masks: np.ndarray  # uint8 [N, S, S] in {0, 1}


def labeled_arrays(cases: pd.DataFrame, size: int, cache_dir: str | Path | None = None,
                   progress: bool = False) -> LabeledArrays:
    """Decode the images (through the preprocessing cache) and masks of `cases` at `size`."""
    cache = build_image_cache(sorted(set(cases["image_path"])), size, cache_dir, progress=progress)
    index = cache.index_of()
    readable = cases[cases["image_path"].isin(index)].reset_index(drop=True)
    if len(readable) < len(cases):
        print(f"Skipped {len(cases) - len(readable)} case(s) whose image cannot be read.")
    images = np.stack([cache.array[index[p]] for p in readable["image_path"]]) if len(readable) \
        else np.zeros((0, size, size), np.uint8)
    return LabeledArrays(readable, images, load_masks(list(readable["mask_path"]), size))


def _split(cases: pd.DataFrame, name: str) -> pd.DataFrame:
    part = cases[cases["split"] == name].reset_index(drop=True)
    if part.empty:
        raise DatasetError(f"No labeled cases in the {name!r} split: add masks under masked/ or "
                           "check the split CSV.")
    return part


def finetune(cfg: FinetuneConfig, cases: pd.DataFrame, out_dir: str | Path, *,
             cache_dir: str | Path | None = None, text_cache_dir: str | Path | None = None,
             resume: bool = False, progress: bool = True,
             on_epoch_end: Callable[[dict], None] | None = None) -> FitResult:
    """Phase 2: fine-tune the multimodal U-Net on the labeled cases (`split` train / val).

    Saves `best_model.pth` at the best validation Dice, with the threshold chosen on validation,
    the settings needed to rebuild model and text encoder, and the validation metrics.
    """
    out = prepare_out_dir(out_dir)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    train, val = (labeled_arrays(_split(cases, s), cfg.image_size, cache_dir) for s in ("train", "val"))

    encoder = load_text_encoder(cfg.text_model, device=device, cache_dir=text_cache_dir,
                                fallback=cfg.text_fallback)
    text_model = TINY_TEXT_MODEL if encoder.is_tiny and cfg.text_model != encoder.name else cfg.text_model
    texts = list(train.cases["text"]) + list(val.cases["text"])
    flipped = [swap_sides(t) for t in train.cases["text"]] if cfg.concordant_flip > 0 else []
    embeddings = EmbeddingCache(encoder, out / "text_embeddings.pt")
    table, index = embeddings.table(texts + flipped)
    embeddings.save()
    n_train = len(train.cases)
    train_idx, val_idx = index[:n_train], index[n_train:len(texts)]
    flipped_idx = index[len(texts):] or None
    if cfg.shuffle_text:  # ablation: the same texts, paired with the wrong images
        train_idx = list(np.random.default_rng(cfg.seed).permutation(train_idx))

    model = MultimodalUnet(cfg.encoder, text_dim=encoder.dim, fusion=cfg.fusion,
                           upsampling=cfg.upsampling)
    train_emb = table[sorted(set(train_idx))]
    model.set_text_norm(train_emb.mean(0), train_emb.std(0, unbiased=False) if len(train_emb) > 1
                        else torch.ones(encoder.dim))
    if cfg.pretrained_encoder:
        load_pretrained_encoder(model.encoder, cfg.pretrained_encoder, cfg.encoder)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    table = table.to(device)

    criterion = DiceBCELoss(pos_weight_from_masks(train.masks), cfg.dice_weight, cfg.bce_weight)
    encoder_params = list(model.encoder.parameters())
    encoder_ids = {id(p) for p in encoder_params}
    optimizer = torch.optim.AdamW([
        {"params": encoder_params, "lr": cfg.encoder_lr},
        {"params": [p for p in model.parameters() if id(p) not in encoder_ids], "lr": cfg.lr},
    ], weight_decay=cfg.weight_decay)
    train_set = LabeledCases(train.images, train.masks, train_idx, augment=cfg.augment,
                             flip_prob=cfg.concordant_flip, flipped_text_index=flipped_idx)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = make_loader(train_set, cfg.batch_size, shuffle=True, device=device,
                         num_workers=cfg.num_workers, generator=generator)
    val_masks = torch.from_numpy(val.masks)[:, None].bool()

    def loss_fn(batch) -> tuple[torch.Tensor, int]:
        images, masks, text = (t.to(device, non_blocking=True) for t in batch)
        return criterion(model(images, table[text]), masks), len(images)

    def validate() -> dict:
        probs = predict_arrays(model, val.images, table[val_idx], device, cfg.batch_size)
        dice = dice_per_image(probs >= 0.5, val_masks)
        logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
        return {"val_loss": criterion(logits, val_masks.float()).item(),
                "val_dice": dice.mean().item()}

    def on_epoch_start(epoch: int) -> None:
        freeze_encoder(model, epoch < cfg.freeze_encoder_epochs)

    config = {"phase": 2, **dataclasses.asdict(cfg)}

    def payload(row: dict) -> dict:
        return {"model": model.state_dict(), "epoch": row["epoch"],
                "metrics": {k: v for k, v in row.items() if k.startswith("val_")},
                "config": {"model": model.config(), "image_size": cfg.image_size,
                           "text_model": text_model, "text_model_requested": cfg.text_model,
                           "text_model_is_tiny": encoder.is_tiny,
                           "text_dim": encoder.dim, "threshold": 0.5, "finetune": config}}

    result = fit(model, optimizer, loader, loss_fn, validate, epochs=cfg.epochs,
                 warmup_epochs=cfg.warmup_epochs, out_dir=out, monitor="val_dice", maximize=True,
                 best_name=BEST_FILE, best_payload=payload, config=config, device=device,
                 generator=generator, resume=resume, patience=cfg.patience,
                 on_epoch_start=on_epoch_start, on_epoch_end=on_epoch_end, progress=progress)

    # Choose the threshold on validation with the best weights, and store it with them.
    best = load_checkpoint(result.best_path)
    model.load_state_dict(best["model"])
    model.eval()
    probs = predict_arrays(model, val.images, table[val_idx], device, cfg.batch_size)
    threshold = best_threshold(probs, val_masks)
    best["config"]["threshold"] = threshold
    best["metrics"]["val_dice_at_threshold"] = dice_per_image(probs >= threshold, val_masks).mean().item()
    save_checkpoint(best, result.best_path)
    return result
