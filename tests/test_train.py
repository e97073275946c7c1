"""Training loops, checkpoints and resume, the preprocessing cache, the datasets."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.data.cache import build_image_cache
from helpers.core.checkpoint import CheckpointError, load_checkpoint
from helpers.training.datasets import LabeledCases, UnlabeledImages
from helpers.data.io import load_gray
from helpers.core.layout import DatasetError
from helpers.model.encoders import build_encoder
from helpers.model.record import EncoderRecord
from helpers.model.unet import MultimodalUnet
from helpers.training.loop import OutputDirError
from helpers.training.finetune import finetune
from helpers.training.pretrain import pretrain


def test_cache_equals_direct_decoding_and_is_reused(catalog, tmp_path):
    paths = catalog.image_paths()[:6]
    first = build_image_cache(paths, 40, tmp_path, progress=False)
    assert first.rebuilt and first.array.shape == (6, 40, 40) and first.array.dtype == np.uint8
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(first.array[i], load_gray(p, 40))
    again = build_image_cache(paths, 40, tmp_path, progress=False)
    assert not again.rebuilt
    np.testing.assert_array_equal(np.asarray(again.array), np.asarray(first.array))


def test_cache_rebuilt_when_file_list_or_size_changes(catalog, tmp_path):
    paths = catalog.image_paths()[:4]
    build_image_cache(paths, 32, tmp_path, progress=False)
    added = build_image_cache(paths + catalog.image_paths()[4:5], 32, tmp_path, progress=False)
    assert added.rebuilt and len(added.array) == 5
    resized = build_image_cache(paths, 48, tmp_path, progress=False)
    assert resized.rebuilt and resized.array.shape[1:] == (48, 48)


def test_cache_survives_a_fresh_copy_and_sizes_coexist(catalog, tmp_path):
    """A new machine: the same files copied to another folder (new mtimes) reuse the cache, with
    this machine's paths; caches of two sizes live side by side."""
    import os
    import shutil

    paths = catalog.image_paths()[:5]
    first = build_image_cache(paths, 32, tmp_path / "cache", progress=False)
    other = build_image_cache(paths, 48, tmp_path / "cache", progress=False)
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    moved = [shutil.copy(p, copy / os.path.basename(p)) for p in paths]
    for p in moved:
        os.utime(p, (1, 1))
    again = build_image_cache(moved, 32, tmp_path / "cache", progress=False)
    assert first.rebuilt and other.rebuilt and not again.rebuilt
    assert again.paths == [str(p) for p in moved]
    np.testing.assert_array_equal(np.asarray(again.array), np.asarray(first.array))
    assert not build_image_cache(paths, 48, tmp_path / "cache", progress=False).rebuilt
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_cache_skips_and_lists_corrupt_images(catalog, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cache = build_image_cache(catalog.image_paths()[:2] + [str(bad)], 32, progress=False)
    assert len(cache.array) == 2
    assert cache.failed[0][0] == str(bad)


def test_labeled_cases_augment_image_and_mask_together():
    images = np.zeros((1, 32, 32), np.uint8)
    images[0, 8:16, 8:16] = 255
    masks = (images > 0).astype(np.uint8)
    torch.manual_seed(0)
    ds = LabeledCases(images, masks, [0], augment=True)
    for _ in range(5):
        image, mask, text = ds[0]
        assert image.shape == mask.shape == (1, 32, 32) and text == 0
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        # the bright square and the mask moved together
        assert (image[mask.bool()] > 0).float().mean() > 0.8


def test_unlabeled_images_scale():
    ds = UnlabeledImages(np.full((2, 8, 8), 255, np.uint8))
    assert ds[1].shape == (1, 8, 8) and torch.allclose(ds[1], torch.ones(1, 8, 8))


@pytest.mark.parametrize("objective", ["reconstruct", "masked"])
def test_pretrain_loss_falls_and_encoder_checkpoint_loads(catalog, tmp_path, pretrain_cfg, objective):
    cfg = dataclasses.replace(pretrain_cfg, objective=objective, epochs=4, max_images=12)
    result = pretrain(cfg, catalog.image_paths(), tmp_path / "out", cache_dir=tmp_path / "cache",
                      progress=False, patients=[7, 3])
    losses = result.history["train_loss"]
    assert losses.iloc[-1] < losses.iloc[0]
    saved = load_checkpoint(result.best_path)
    assert saved["encoder_name"] == "resnet18" and saved["val_loss"] == pytest.approx(result.best_value)
    assert EncoderRecord.load(result.best_path).patients == [3, 7]  # for the leak check of Phase 2
    fresh = build_encoder("resnet18")
    fresh.load_state_dict(saved["encoder"])
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, saved["encoder"][key])
    assert (tmp_path / "out" / "history_my_pretrained_encoder.csv").exists()


def test_pretrain_resume_matches_uninterrupted_run(catalog, tmp_path, pretrain_cfg):
    cfg = dataclasses.replace(pretrain_cfg, objective="masked", max_images=10, augment=True)
    paths = catalog.image_paths()
    straight = pretrain(cfg, paths, tmp_path / "straight", progress=False)

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, paths, tmp_path / "resumed", progress=False, on_epoch_end=interrupt)
    assert load_checkpoint(tmp_path / "resumed" / "last.pth")["epoch"] == 2
    assert "optimizer" in load_checkpoint(tmp_path / "resumed" / "last.pth")
    resumed = pretrain(cfg, paths, tmp_path / "resumed", resume=True, progress=False)
    finished = load_checkpoint(resumed.last_path)
    assert finished["complete"] and "optimizer" not in finished  # a finished run keeps no optimizer
    again = pretrain(cfg, paths, tmp_path / "resumed", resume=True, progress=False)
    assert again.seconds == 0 and again.best_epoch == resumed.best_epoch  # returns at once
    a = load_checkpoint(straight.last_path)["model"]
    b = load_checkpoint(resumed.last_path)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    pd.testing.assert_frame_equal(straight.history.drop(columns="images_per_s"),
                                  resumed.history.drop(columns="images_per_s"))


def test_pretrain_bad_inputs(tmp_path, pretrain_cfg, catalog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputDirError, match="writable"):
        pretrain(pretrain_cfg, catalog.image_paths(), blocker / "out", progress=False)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="at least 2 readable images"):
        pretrain(pretrain_cfg, [str(junk)], tmp_path / "out", progress=False)


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
    from helpers.training.datasets import labeled_arrays
    from helpers.inference.segmenter import Segmenter
    from helpers.core.layout import TEXT_EMBEDDINGS_FILE
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


def _one_lesion(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """One image with a bright square on the image's left (the patient's right) and its mask."""
    images = np.full((1, size, size), 40, np.uint8)
    images[0, 10:18, 4:12] = 220
    return images, (images > 100).astype(np.uint8)


def test_paste_mirror_copies_the_lesion_to_its_mirror_place():
    from helpers.training.paste import mirror_overlaps, paste_mirror

    images, masks = _one_lesion()
    pasted, copy = paste_mirror(torch.from_numpy(images), torch.from_numpy(masks))
    assert pasted.dtype == torch.uint8 and copy.shape == masks.shape
    assert torch.equal(copy, torch.from_numpy(masks).flip(-1))
    assert (pasted[copy.bool()] == 220).all()  # full strength inside the copy
    assert torch.equal(pasted[torch.from_numpy(masks).bool()], torch.from_numpy(images[masks > 0]))
    far = torch.zeros_like(copy, dtype=torch.bool)
    far[..., :, 14:18] = True  # between the two lesions: untouched background
    assert (pasted[far] == 40).all()
    centred = np.zeros((1, 32, 32), np.uint8)
    centred[0, 10:18, 13:19] = 1
    assert mirror_overlaps(np.concatenate([masks, centred])).tolist() == [False, True]


def test_finetune_with_place_training_encodes_swapped_and_null_texts(cases, tmp_path, finetune_cfg,
                                                                      text_dir):
    from helpers.core.layout import TEXT_EMBEDDINGS_FILE
    from helpers.text.places import swap_sides
    from helpers.text.sentences import null_text, select_text, split_by_lesion

    cfg = dataclasses.replace(finetune_cfg, epochs=1, fusion="cross_attn", text_mode="positive",
                              paste_prob=0.3, swap_prob=0.2, null_rate=0.2, sentence_prob=0.2)
    result = finetune(cfg, cases, tmp_path, text_cache_dir=text_dir, progress=False)
    assert result.best_path.exists()
    stored = load_checkpoint(tmp_path / TEXT_EMBEDDINGS_FILE)["texts"]
    train = cases[cases["split"] == "train"]["text"]
    split = [split_by_lesion(text) for text in train]
    assert any(split)  # the demo's reports name other findings beside the lesion
    for text, sentences in zip(train, split):
        model_text = select_text(text, "positive")
        assert swap_sides(model_text) in stored
        assert select_text(null_text(text), "positive") in stored
        assert sentences is None or set(sentences) <= set(stored)


def test_paste_copies_the_lesion_to_the_other_level():
    from helpers.training.paste import copy_is_free, level_shift, paste_copy

    images = np.full((1, 40, 40), 40, np.uint8)
    images[0, 26:32, 4:10] = 220  # the lower zone of the image's left lung
    masks = (images > 100).astype(np.uint8)
    shift = level_shift("lower", 40)
    assert shift == -12 and level_shift("mixed", 40) == 0 and level_shift("upper", 40) == 12
    mask = torch.from_numpy(masks[0])
    assert copy_is_free(mask, shift) and not copy_is_free(mask, 12)  # down: out of the image
    pasted, copy = paste_copy(torch.from_numpy(images), torch.from_numpy(masks), shift)
    assert copy[0, 14:20, 4:10].all() and copy.sum() == masks.sum()
    assert (pasted[0, 14:20, 4:10] == 220).all()


def test_level_words_swap_and_name_one_level():
    from helpers.text.places import names_level, swap_levels

    assert swap_levels("Patchy opacity at the Right base.") == "Patchy opacity at the Right apex."
    assert swap_levels("RIGHT LOWER LOBE nodule, left apical scar") == "RIGHT UPPER LOBE nodule, left basilar scar"
    assert names_level("Nodule in the left upper lobe.") == "upper"
    assert names_level("Right basilar atelectasis.") == "lower"
    assert names_level("Left apical and basilar scarring.") == "mixed"
    assert names_level("Opacity in the left lower lobe and lingula.") == "mixed"
    assert names_level("Right perihilar density.") is None
    assert names_level("Small left pleural effusion.") is None


@pytest.mark.parametrize("capability,expected", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                 ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_mixed_precision_follows_compute_capability(monkeypatch, capability, expected):
    """A T4 (7.5) says bf16 is supported (emulated) but gets fp16 + grad scaler; Ampere+ gets bf16."""
    from helpers.training.loop import amp_dtype, describe_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    cuda = torch.device("cuda")
    assert amp_dtype(cuda) is expected
    text = describe_precision(cuda)
    assert ("grad scaler" in text) == (expected is torch.float16)
    assert f"{capability[0]}.{capability[1]}" in text
    assert amp_dtype(torch.device("cpu")) is None
    assert describe_precision(torch.device("cpu")).startswith("float32")


def test_last_pth_at_most_every_interval_and_at_the_end_resume_still_exact(catalog, tmp_path,
                                                                            pretrain_cfg, monkeypatch,
                                                                            capsys):
    """With a long interval nothing is written mid-run (a disconnect loses those epochs, and
    resume trains them again to the same result); the end always writes the slim last.pth. The
    cost is printed up front, from the first steps."""
    cfg = dataclasses.replace(pretrain_cfg, objective="masked", max_images=10, batch_size=2)
    paths = catalog.image_paths()
    straight = pretrain(cfg, paths, tmp_path / "straight", progress=False)
    monkeypatch.setenv("CXR_LAST_SAVE_S", "3600")

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, paths, tmp_path / "resumed", progress=True, on_epoch_end=interrupt)
    out = capsys.readouterr()
    assert not (tmp_path / "resumed" / "last.pth").exists()
    assert "expected: ~" in out.out + out.err and "every ~60 min" in out.out + out.err
    assert "3 epoch(s) x 4 steps of 2 images at 32 px" in out.out + out.err
    resumed = pretrain(cfg, paths, tmp_path / "resumed", resume=True, progress=False)
    assert load_checkpoint(resumed.last_path)["complete"]
    a, b = (load_checkpoint(r.last_path)["model"] for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_subset_is_read_from_a_cache_that_holds_it_even_without_the_files(catalog, tmp_path):
    """Notebook 01 caches the whole collection; later notebooks read their subsets from it, on
    another machine even when the image files are not there (matched by name)."""
    import os
    import shutil

    paths = catalog.image_paths()
    full = build_image_cache(paths, 32, tmp_path / "cache", progress=False)
    subset = paths[1:6:2]
    part = build_image_cache(subset, 32, tmp_path / "cache", progress=False)
    assert not part.rebuilt and part.paths == subset
    np.testing.assert_array_equal(part.array, np.asarray(full.array)[[1, 3, 5]])
    elsewhere = tmp_path / "not-fetched-yet"  # the same names, no files on this machine
    absent = [str(elsewhere / os.path.basename(p)) for p in subset]
    again = build_image_cache(absent, 32, tmp_path / "cache", progress=False)
    assert not again.rebuilt and again.paths == absent
    np.testing.assert_array_equal(again.array, part.array)
    changed = tmp_path / "changed"  # a file of that name with other bytes is not the cached one
    changed.mkdir()
    shutil.copy(paths[0], changed / os.path.basename(paths[1]))
    other = build_image_cache([str(changed / os.path.basename(paths[1]))], 32, tmp_path / "cache",
                              progress=False)
    assert other.rebuilt


