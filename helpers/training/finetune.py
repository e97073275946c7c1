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
from ..core.settings import TINY_TEXT_MODEL, FinetuneConfig
from .datasets import LabeledArrays, LabeledCases, labeled_arrays
from ..model.encoders import load_pretrained_encoder
from ..core.layout import BEST_FILE, TEXT_EMBEDDINGS_FILE, DatasetError
from .loop import (FitResult, FitSettings, Task, fit, in_run_folder, make_loader, start_run)
from ..model.losses import (
    DiceBCELoss,
    pos_weight_from_masks,
)
from ..model.metrics import best_threshold, dice_per_image, follows_text
from ..model.unet import MultimodalUnet, freeze_encoder, predict_arrays
from ..text.places import split_text_input
from .methods import MethodContext, active_methods, image_only, method_texts, method_uses
from .questions import place_questions
from ..text.reader import ReportReader
from ..model.record import ModelRecord, check_encoder_patients
from ..text.encoders import EmbeddingCache, load_text_encoder
from ..text.vocabulary import learn_vocabulary
from ..data.split import split_keys


def _split(cases: pd.DataFrame, name: str) -> pd.DataFrame:
    part = cases[cases["split"] == name].reset_index(drop=True)
    if part.empty:
        raise DatasetError(f"No labeled cases in the {name!r} split: add masks under masked/ or "
                           "check the split CSV.")
    return part


class SegmentationTask(Task):
    """Phase 2: the multimodal U-Net learns the mask of the finding a text describes.

    Each case's text goes through `ReportReader(cfg.text_mode).model_text`; every unique text
    (the cases', and those the active text methods ask with, `training.methods`) is encoded once
    by the frozen text encoder into `table` [U, D] (and `tokens` [U, L, H] + `token_mask` [U, L]
    for a fusion that attends); batches carry row indices into them.
    """

    def __init__(self, cfg: FinetuneConfig, train: LabeledArrays, val: LabeledArrays,
                 device: torch.device, out_dir: Path, text_cache_dir: str | Path | None = None):
        if image_only(cfg) != cfg:
            print('fusion "none" is the image-only control: it reads no text, so the place prior '
                  "and the text methods are off")
            cfg = image_only(cfg)
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
        self.vocabulary = learn_vocabulary(train.cases["text"], train.masks)  # what the masks draw
        train_texts = [reader.model_text(t) for t in train.cases["text"]]
        val_texts = [reader.model_text(t) for t in val.cases["text"]]
        # the validation place probe: each val lesion copied to its mirror place or other level
        probe_images, probe_texts, self.probe_meant, self.probe_other = place_questions(
            torch.from_numpy(val.images), torch.from_numpy(val.masks), val_texts)
        self.probe_images = probe_images.numpy()
        context = MethodContext(list(train.cases["text"]), train_texts, train.masks, reader, self.vocabulary)
        methods = active_methods(cfg)
        asked = method_texts(methods, context)  # the texts the methods ask with, by kind
        every = train_texts + val_texts + [t for texts in asked.values() for t in texts] + probe_texts
        embeddings = EmbeddingCache(encoder, out_dir / TEXT_EMBEDDINGS_FILE,
                                    with_tokens=model.needs_tokens, places=cfg.place_prior,
                                    drawn=self.vocabulary.describes_drawn)
        table, index = embeddings.table(every)
        self.tokens = None  # (states [U, L, H], mask [U, L]) in the rows of `table`
        if model.needs_tokens:
            self.tokens = tuple(t.to(device) for t in embeddings.tokens(list(dict.fromkeys(every))))
        embeddings.save()
        row = dict(zip(every, index))
        rows = {kind: [row[t] for t in texts] for kind, texts in asked.items()}
        train_idx, self.val_idx = [row[t] for t in train_texts], [row[t] for t in val_texts]
        self.probe_idx = [row[t] for t in probe_texts]
        if cfg.shuffle_text:  # ablation: the same texts, paired with the wrong images
            train_idx = list(np.random.default_rng(cfg.seed).permutation(train_idx))
        rows["report"] = train_idx
        self.text_report = reader.text_report(train.cases["text"], train_texts + val_texts, encoder)
        if self.text_report["truncation"]["n_truncated"]:
            t = self.text_report["truncation"]
            print(f"{t['n_truncated']} of {t['n_texts']} training/validation texts are longer than "
                  f"the text encoder's {t['max_length']} tokens and lose {t['mean_tokens_lost']:.0f} "
                  f"tokens at the end on average (text_mode={cfg.text_mode!r}).")

        train_emb = split_text_input(table[sorted(set(train_idx))], encoder.dim)[0]  # not the code
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
        train_set = LabeledCases(train.images, train.masks, train_idx,
                                 method_uses(methods, context, rows), augment=cfg.augment,
                                 undescribed=cfg.undescribed_weight)
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
                           text_report=self.text_report, finetune=self.config,
                           vocabulary=self.vocabulary.to_dict(), epoch=row["epoch"],
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
    # before any time is spent: no leak of validation/test patients through Phase 1
    check_encoder_patients(cfg.pretrained_encoder, cases, cfg.allow_seen_patients)
    out_dir, device, mirror, out = start_run(out_dir, cfg.device, BEST_FILE, resume, cfg.seed)
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
    best.patients = split_keys(cases)  # the model carries its split: scoring leaves its training cases out
    if dist.is_main() and not chosen:  # a finished run resumed: already there, not written again
        best.save(result.best_path)
    dist.barrier()
    mirror.push()  # the best checkpoint with its threshold, then last.pth
    return in_run_folder(result, mirror)
