"""Phase 1 (helpers/training/pretrain.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.core.checkpoint import load_checkpoint
from helpers.core.layout import DatasetError
from helpers.model.encoders import build_encoder
from helpers.model.record import EncoderRecord
from helpers.training.loop import OutputDirError
from helpers.training.pretrain import pretrain


def test_phase1_continues_from_imagenet_weights(rgb_weights, demo_root, tmp_path, monkeypatch):
    """`pretrain --encoder-weights FILE` starts Phase 1 from them, in its own folder, and says so."""
    from helpers.__main__ import main
    from helpers.core.checkpoint import load_checkpoint

    path, state = rgb_weights
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(demo_root), "--mode", "smoke", "--out", str(out),
                 "--encoder", "resnet18", "--encoder-weights", str(path), "--max-images", "8"]) == 0
    saved = load_checkpoint(out / "phase1" / "masked-imagenet" / "my_pretrained_encoder.pth")
    assert saved["config"]["encoder_weights"] == str(path)
    moved = saved["encoder"]["layer2.0.conv1.weight"] - state["layer2.0.conv1.weight"]
    assert moved.abs().max() < 0.1  # one short epoch from the ImageNet-style start, not random
    from helpers.core.layout import RunPaths

    assert set(RunPaths(out).phase1_encoders()) == {"masked-imagenet"}


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


def test_pretrain_bad_inputs(tmp_path, pretrain_cfg, catalog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputDirError, match="writable"):
        pretrain(pretrain_cfg, catalog.image_paths(), blocker / "out", progress=False)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="at least 2 readable images"):
        pretrain(pretrain_cfg, [str(junk)], tmp_path / "out", progress=False)
