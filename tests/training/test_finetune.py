"""Phase 2 (helpers/training/finetune.py): training, the text table, what the best checkpoint holds."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers.core.checkpoint import CheckpointError, load_checkpoint
from helpers.core.layout import DatasetError
from helpers.model.unet import MultimodalUnet
from helpers.training.finetune import finetune
from helpers.training.pretrain import pretrain


def test_finetune_selects_on_the_validation_probe_and_keeps_the_prior(cases, tmp_path, finetune_cfg,
                                                                        text_dir):
    from helpers.core.checkpoint import load_checkpoint
    from helpers.training.finetune import finetune

    cfg = dataclasses.replace(finetune_cfg, epochs=2, fusion="cross_attn", text_mode="positive",
                              place_prior=True, select_on_probe=True)
    result = finetune(cfg, cases, tmp_path / "a", text_cache_dir=text_dir, progress=False)
    history = result.history
    assert history["val_follows"].between(0, 1).all()
    assert np.allclose(history["val_select"], (history["val_dice"] + history["val_follows"]) / 2)
    best = load_checkpoint(result.best_path)
    assert best["config"]["model"]["place_prior"] and "val_follows" in best["metrics"]
    plain = dataclasses.replace(cfg, epochs=1, place_prior=False, select_on_probe=False)
    history = finetune(plain, cases, tmp_path / "b", text_cache_dir=text_dir, progress=False).history
    assert np.allclose(history["val_select"], history["val_dice"])
    assert not load_checkpoint(tmp_path / "b" / "best_model.pth")["config"]["model"]["place_prior"]


def test_finetune_trains_saves_and_rejects_foreign_encoder(cases, tmp_path, finetune_cfg,
                                                           pretrain_cfg, catalog, text_dir):
    phase1 = pretrain(dataclasses.replace(pretrain_cfg, epochs=1, max_images=8),
                      catalog.image_paths(), tmp_path / "p1", progress=False)
    cfg = dataclasses.replace(finetune_cfg, epochs=3, pretrained_encoder=str(phase1.best_path))
    result = finetune(cfg, cases, tmp_path / "p2", text_cache_dir=text_dir, progress=False)
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]
    best = load_checkpoint(result.best_path)
    assert 0.0 < best["config"]["threshold"] < 1.0 and best["config"]["text_model_is_tiny"]
    assert "val_dice" in best["metrics"]
    model = MultimodalUnet(**best["config"]["model"])
    model.load_state_dict(best["model"])
    # the encoder started from Phase 1: with one epoch of fine-tuning at a small lr it moved,
    # but loading the wrong encoder family must fail loudly instead
    other = dataclasses.replace(cfg, encoder="resnet34")
    with pytest.raises(CheckpointError):
        finetune(other, cases, tmp_path / "p2b", text_cache_dir=text_dir, progress=False)


def test_phase1_weights_are_loaded_into_phase2(cases, tmp_path, finetune_cfg, pretrain_cfg,
                                               catalog, text_dir):
    phase1 = pretrain(dataclasses.replace(pretrain_cfg, epochs=1, max_images=8),
                      catalog.image_paths(), tmp_path / "p1", progress=False)
    cfg = dataclasses.replace(finetune_cfg, epochs=1, freeze_encoder_epochs=1, encoder_lr=0.0,
                              pretrained_encoder=str(phase1.best_path))
    result = finetune(cfg, cases, tmp_path / "p2", text_cache_dir=text_dir, progress=False)
    saved = load_checkpoint(phase1.best_path)["encoder"]
    model = load_checkpoint(result.best_path)["model"]
    for key, value in saved.items():
        assert torch.equal(model[f"encoder.{key}"], value), key


def test_finetune_without_validation_cases_is_a_clear_error(cases, tmp_path, finetune_cfg, text_dir):
    no_val = cases.assign(split=cases["split"].replace("val", "train"))
    with pytest.raises(DatasetError, match="'val' split"):
        finetune(finetune_cfg, no_val, tmp_path, text_cache_dir=text_dir, progress=False)


def test_finetune_cross_attention_on_positive_sentences(cases, tmp_path, finetune_cfg, text_dir):
    cfg = dataclasses.replace(finetune_cfg, epochs=2, fusion="cross_attn", text_mode="positive",
                              negative_rate=0.3)
    result = finetune(cfg, cases, tmp_path, text_cache_dir=text_dir, progress=False)
    best = load_checkpoint(result.best_path)["config"]
    assert best["text_mode"] == "positive" and best["model"]["fusion"] == "cross_attn"
    assert best["model"]["token_dim"] > 0
    report = best["text_report"]
    assert report["sentences_kept"] > 0 and report["sentences_dropped"] > 0  # demo reports mix both
    assert report["truncation"]["n_texts"] == (cases["split"] != "test").sum()
    from helpers.inference.segmenter import Segmenter

    seg = Segmenter.from_checkpoint(result.best_path, device="cpu", text_cache_dir=text_dir)
    chosen = seg.sentences("No left effusion. Right basilar opacity.")
    assert chosen.kept == ["Right basilar opacity."] and chosen.dropped == ["No left effusion."]
    image = cases["image_path"].iloc[0]
    # the model reads only the positive sentence: adding a normal one changes nothing
    torch.testing.assert_close(
        torch.from_numpy(seg.predict(image, "Right basilar opacity.")),
        torch.from_numpy(seg.predict(image, "Heart size is normal. Right basilar opacity.")))


def test_training_and_inference_read_a_report_the_same_way(cases, tmp_path, finetune_cfg, text_dir):
    """The texts training encodes are the Segmenter's model texts of the same reports, and the
    embedding a training case gets is the one inference computes for its report."""
    from helpers.core.layout import TEXT_EMBEDDINGS_FILE
    from helpers.inference.segmenter import Segmenter
    from helpers.training.datasets import labeled_arrays
    from helpers.training.finetune import SegmentationTask

    cfg = dataclasses.replace(finetune_cfg, fusion="cross_attn", text_mode="positive", concordant_flip=0.0,
                              paste_prob=0.0, swap_prob=0.0, null_rate=0.0)  # only the reports' texts
    train, val = (labeled_arrays(cases[cases["split"] == s].reset_index(drop=True), cfg.image_size)
                  for s in ("train", "val"))
    task = SegmentationTask(cfg, train, val, torch.device("cpu"), tmp_path, text_dir)
    task.record({"epoch": 1, "val_dice": 0.0}).save(tmp_path / "best_model.pth")
    seg = Segmenter.from_checkpoint(tmp_path / "best_model.pth", device="cpu", text_cache_dir=text_dir)
    assert seg.reader == task.reader and seg.text_mode == "positive"
    reports = list(train.cases["text"]) + list(val.cases["text"])
    stored = load_checkpoint(tmp_path / TEXT_EMBEDDINGS_FILE)["texts"]
    texts = {seg.model_text(r) for r in reports}
    # beside them only the validation probe's texts: a validation text with its place swapped
    from helpers.text.places import swap_levels, swap_sides

    val_twins = {swap(seg.model_text(r)) for r in val.cases["text"] for swap in (swap_sides, swap_levels)}
    assert texts <= set(stored) and set(stored) - texts <= val_twins
    assert any(seg.model_text(r) != " ".join(r.split()) for r in reports)  # sentences were dropped
    rows = task.loader.dataset.text_index  # each training case's row of the embedding table
    inferred = seg.embeddings.get([seg.model_text(r) for r in train.cases["text"]])
    torch.testing.assert_close(task.table[rows], inferred)
