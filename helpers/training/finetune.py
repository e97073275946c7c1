"""Phase 2: the multimodal segmentation task that the loop (`loop.fit`) trains and `finetune`
that runs it.

A `Task` holds what differs between the phases: model, data, loss, validation and what the best
checkpoint holds. `SegmentationTask` reads each report through `text.reader.ReportReader` and
saves a `model.record.ModelRecord`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..core import distributed as dist
from ..core.settings import TINY_TEXT_MODEL, FinetuneConfig, pick_device
from .datasets import LabeledArrays, LabeledCases, labeled_arrays
from ..model.encoders import load_pretrained_encoder
from ..core.layout import BEST_FILE, TEXT_EMBEDDINGS_FILE, DatasetError
from ..core.drive import Mirror
from .loop import (FitResult, FitSettings, Task, fit, in_run_folder, make_loader, seed_everything,
                   writable_dir)
from ..model.losses import (
    DiceBCELoss,
    pos_weight_from_masks,
)
from ..model.metrics import best_threshold, dice_per_image, follows_text
from ..model.unet import MultimodalUnet, freeze_encoder, predict_arrays
from ..text.places import SIDES, names_level, names_side, place_questions
from ..text.reader import ReportReader
from ..model.record import ModelRecord
from ..text.encoders import EmbeddingCache, load_text_encoder
from ..data.unlabeled import check_encoder_patients




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
                               upsampling=cfg.upsampling, token_dim=encoder.token_dim,
                               place_prior=cfg.place_prior, shared_decoder=cfg.shared_decoder)
        self.reader = reader = ReportReader(cfg.text_mode)
        swapping = cfg.concordant_flip > 0 or cfg.paste_prob > 0 or cfg.swap_prob > 0
        training = reader.training_texts(train.cases["text"], sides=swapping, nulls=cfg.null_rate > 0,
                                         levels=cfg.paste_prob > 0, sentences=cfg.sentence_prob > 0)
        train_texts = training.texts
        val_texts = [reader.model_text(t) for t in val.cases["text"]]
        texts = train_texts + val_texts
        # the validation place probe: each val lesion copied to its mirror place or other level
        probe_images, probe_texts, self.probe_meant, self.probe_other = place_questions(
            torch.from_numpy(val.images), torch.from_numpy(val.masks), val_texts)
        self.probe_images = probe_images.numpy()
        # a report whose lesion sentence is not known asks with its own text there (index -1 below)
        known = [bool(t) for t in training.lesion]
        lesion, beside = ([t or own for t, own in zip(column, train_texts)]
                          for column in (training.lesion, training.beside))
        extra = [training.flipped, training.nulls, training.leveled, lesion, beside, probe_texts]
        every = texts + [t for e in extra for t in e]
        embeddings = EmbeddingCache(encoder, out_dir / TEXT_EMBEDDINGS_FILE,
                                    with_tokens=model.needs_tokens, places=cfg.place_prior)
        table, index = embeddings.table(every)
        self.tokens = None  # (states [U, L, H], mask [U, L]) in the rows of `table`
        if model.needs_tokens:
            self.tokens = tuple(t.to(device) for t in embeddings.tokens(list(dict.fromkeys(every))))
        embeddings.save()
        n_train, n_texts = len(train.cases), len(texts)
        train_idx, self.val_idx = index[:n_train], index[n_train:n_texts]
        starts = np.cumsum([n_texts] + [len(e) for e in extra])
        flipped_idx, null_idx, level_idx, lesion_idx, beside_idx, self.probe_idx = (
            index[a:b] or None for a, b in zip(starts, starts[1:]))
        lesion_idx = lesion_idx and [j if k else -1 for j, k in zip(lesion_idx, known)]
        if cfg.shuffle_text:  # ablation: the same texts, paired with the wrong images
            train_idx = list(np.random.default_rng(cfg.seed).permutation(train_idx))
        self.text_report = reader.text_report(train.cases["text"], texts, encoder)
        if self.text_report["truncation"]["n_truncated"]:
            t = self.text_report["truncation"]
            print(f"{t['n_truncated']} of {t['n_texts']} training/validation texts are longer than "
                  f"the text encoder's {t['max_length']} tokens and lose {t['mean_tokens_lost']:.0f} "
                  f"tokens at the end on average (text_mode={cfg.text_mode!r}).")

        train_emb = table[sorted(set(train_idx)), :encoder.dim]  # the text, not the place code
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
                                 level_text_index=level_idx, undescribed=cfg.undescribed_weight,
                                 sentence_prob=cfg.sentence_prob, lesion_text_index=lesion_idx,
                                 beside_text_index=beside_idx)
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

    def val_probs(self, images: np.ndarray | None = None, rows: list[int] | None = None) -> torch.Tensor:
        """Probabilities float32 [N, 1, S, S] of the validation images (or `images` read with the
        texts of table `rows`)."""
        emb, *tokens = self.text_args(torch.tensor(self.val_idx if rows is None else rows,
                                                   device=self.device))
        return predict_arrays(self.model, self.val.images if images is None else images, emb,
                              self.device, self.cfg.batch_size, tokens=tuple(tokens) or None)

    def validate(self) -> dict[str, float]:
        probs = self.val_probs()
        logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
        row = {"val_loss": self.criterion(logits, self.val_masks.float()).item(),
               "val_dice": dice_per_image(probs >= 0.5, self.val_masks).mean().item()}
        row["val_select"] = row["val_dice"]
        if self.probe_idx:  # the share of questions whose mask lies more on the meant lesion
            p = self.val_probs(self.probe_images, self.probe_idx)[:, 0]
            row["val_follows"] = follows_text(p, self.probe_meant, self.probe_other).float().mean().item()
            if self.cfg.select_on_probe:
                row["val_select"] = (row["val_dice"] + row["val_follows"]) / 2
        return row

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

    Saves `best_model.pth` at the best validation score (`val_select`: Dice, or with
    `select_on_probe` its mean with the validation place probe), with the threshold chosen on validation,
    the settings needed to rebuild model and text encoder, and the validation metrics.
    `max_steps` stops after that many optimizer steps (the benchmark times the real loop so).
    Under torchrun every rank validates the whole validation set rather than a shard: it is small
    (tens of cases), the threshold search needs all its probabilities, and identical weights give
    identical metrics, hence the same best epoch and early stop, on every rank.
    """
    check_encoder_patients(cfg, cases)  # before any time is spent: no leak of val/test patients
    out_dir = writable_dir(out_dir)
    device = pick_device(cfg.device)
    dist.init_from_env(device)
    device = dist.rank_device(device)
    # on Colab the run folder is on Drive: train on this machine's disk, copy at most every ~10 min
    mirror = Mirror.for_training(out_dir, BEST_FILE, resume)
    out = writable_dir(mirror.work)
    seed_everything(cfg.seed)
    train, val = (labeled_arrays(_split(cases, s), cfg.image_size, cache_dir) for s in ("train", "val"))
    with dist.main_first():  # rank 0 builds the text model and embedding cache, the others reuse
        task = SegmentationTask(cfg, train, val, device, out, text_cache_dir)
    settings = FitSettings(cfg.epochs, cfg.warmup_epochs, monitor="val_select", maximize=True,
                           best_name=BEST_FILE, patience=cfg.patience, max_steps=max_steps)
    result = fit(task, settings, out, resume=resume, progress=progress,
                 on_epoch_end=mirror.after_epoch(on_epoch_end))

    # Choose the threshold on validation with the best weights, and store it with them.
    best = ModelRecord.load(result.best_path)
    task.model.load_state_dict(best.state_dict)
    probs = task.val_probs()
    threshold = best_threshold(probs, task.val_masks)
    dice = dice_per_image(probs >= threshold, task.val_masks).mean().item()
    chosen = (best.threshold, best.metrics.get("val_dice_at_threshold")) == (threshold, dice)
    best.threshold, best.metrics["val_dice_at_threshold"] = threshold, dice
    if dist.is_main() and not chosen:  # a finished run resumed: already there, not written again
        best.save(result.best_path)
    dist.barrier()
    mirror.push()  # the best checkpoint with its threshold, then last.pth
    return in_run_folder(result, mirror)
