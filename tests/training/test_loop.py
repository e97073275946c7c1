"""The training loop (helpers/training/loop.py): resume, last.pth, mixed precision."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from helpers.core.checkpoint import load_checkpoint
from helpers.training.pretrain import pretrain


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
