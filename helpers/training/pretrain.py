"""Phase 1: the U-Net autoencoder task that the loop (`loop.fit`) trains, `pretrain` that runs
it and saves the encoder, and `reconstruct_examples` for the figure of what it learned."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..core import distributed as dist
from ..data.cache import build_image_cache
from ..core.settings import PretrainConfig
from .datasets import UnlabeledImages
from ..model.encoders import build_autoencoder
from ..model.record import EncoderRecord, TrainingState
from ..core.layout import ENCODER_FILE, LAST_FILE, DatasetError
from ..data.io import normalize
from .loop import (FitResult, FitSettings, Task, fit, in_run_folder, make_loader, start_run)
from ..model.losses import (
    hide_patches,
    masked_reconstruction_loss,
    reconstruction_loss,
    scaled_patch,
)




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
        self.model = build_autoencoder(cfg.encoder, encoder_weights=cfg.encoder_weights).to(device)
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
        encoder = self.model.encoder
        return EncoderRecord(encoder.state_dict(), self.cfg.encoder, encoder.out_channels[0],
                             self.config, row["epoch"], row["val_loss"]).to_payload()


def pretrain(cfg: PretrainConfig, image_paths: Sequence[str], out_dir: str | Path, *,
             cache_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
             max_steps: int | None = None, on_epoch_end: Callable[[dict], None] | None = None,
             patients: Sequence[int] | None = None) -> FitResult:
    """Phase 1: train a U-Net autoencoder on unlabeled images; save the encoder of the epoch with
    the lowest validation loss as `out_dir/my_pretrained_encoder.pth`.

    Under torchrun (`torchrun --nproc_per_node N -m helpers pretrain ...`) every rank calls this
    with the same paths: the cache is built in shards, `cfg.batch_size` is per rank.

    `objective="reconstruct"`: MSE of the output against the input. `objective="masked"`: a random
    share of patches is replaced by noise and the loss on them is weighted up, so copying the input
    through the top skip connection no longer pays and the deep encoder has to model anatomy.

    `patients`: the IU patients (`uid`) whose images are among `image_paths`
    (`unlabeled.iu_patients`); recorded in the encoder checkpoint (`config["patients"]`) so that
    `finetune` refuses an encoder that saw its validation or test patients. None: not recorded
    (the check then only warns).
    """
    out_dir, device, mirror, out = start_run(out_dir, cfg.device, ENCODER_FILE, resume, cfg.seed)
    paths = list(image_paths)[: cfg.max_images] if cfg.max_images else list(image_paths)
    cache = build_image_cache(paths, cfg.image_size, cache_dir, progress=progress)
    if len(cache.array) < 2:
        failed = "; ".join(f"{p}: {why}" for p, why in cache.failed[:3])
        raise DatasetError(f"Phase 1 needs at least 2 readable images, got {len(cache.array)} of "
                           f"{len(paths)}. {failed} Check the dataset's images/images_normalized/.")
    task = AutoencoderTask(cfg, cache.array, device)
    task.config["patients"] = sorted({int(u) for u in patients}) if patients is not None else None
    settings = FitSettings(cfg.epochs, cfg.warmup_epochs, monitor="val_loss", maximize=False,
                           best_name=ENCODER_FILE, max_steps=max_steps)
    result = fit(task, settings, out, resume=resume, progress=progress,
                 on_epoch_end=mirror.after_epoch(on_epoch_end))
    mirror.push()
    result = in_run_folder(result, mirror)
    if cache.failed:
        print(f"Skipped {len(cache.failed)} unreadable image(s), e.g. {cache.failed[0][0]}")
        for path, why in cache.failed[1:10]:
            print(f"  {path}: {why}")
    return result


def reconstruct_examples(encoder_path: str | Path, images: np.ndarray,
                         cfg: PretrainConfig) -> dict[str, np.ndarray | None]:
    """Inputs, masked inputs (None for the plain objective) and reconstructions of the final
    autoencoder, saved in `last.pth` next to `encoder_path` (for the Phase-1 figure).
    images: uint8 [N, S, S] -> float arrays [N, S, S] in the model's [-1, 1] scale."""
    state = TrainingState.load(Path(encoder_path).with_name(LAST_FILE))
    model = build_autoencoder(cfg.encoder)
    model.load_state_dict(state.model)
    model.eval()
    x = normalize(torch.from_numpy(np.array(images))[:, None])
    masked = None
    with torch.no_grad():
        if cfg.objective == "masked":
            gen = torch.Generator().manual_seed(cfg.seed)
            patch = scaled_patch(cfg.patch_size, cfg.image_size)
            x_in, _ = hide_patches(x, patch, cfg.mask_ratio, generator=gen)
            masked = x_in[:, 0].numpy()
        else:
            x_in = x
        out = model(x_in)[:, 0].numpy()
    return {"inputs": x[:, 0].numpy(), "masked": masked, "outputs": out}
