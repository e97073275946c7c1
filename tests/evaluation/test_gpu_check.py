"""The GPU check: nothing to do without a GPU (exit 0); its decisions for a GPU, from faked device
properties; every step of it on the CPU at smoke sizes, so that it is ready when a GPU is."""
from __future__ import annotations

import json

import torch

from helpers.__main__ import main
from helpers.evaluation import gpu_check


def test_without_a_gpu_it_says_so_and_exits_0(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check", "--out", str(tmp_path / "check.json")]) == 0
    assert "No GPU on this machine" in capsys.readouterr().out
    assert not (tmp_path / "check.json").exists()


def test_the_plan_follows_the_gpu(monkeypatch):
    """A T4 (compute capability 7.5) gets fp16 with a grad scaler, an A100 (8.0) bf16; both
    channels_last, the real preset's batches at 256 px, loader workers."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    monkeypatch.setattr(gpu_check.os, "cpu_count", lambda: 2, raising=False)
    t4 = gpu_check.plan(torch.device("cuda"))
    assert (t4["dtype"], t4["grad_scaler"], t4["channels_last"]) == ("float16", True, True)
    assert (t4["image_size"], t4["pretrain_batch"], t4["finetune_batch"]) == (256, 32, 8)
    assert t4["workers"] >= 1 and "Tesla T4" in t4["precision"]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    a100 = gpu_check.plan(torch.device("cuda"))
    assert (a100["dtype"], a100["grad_scaler"]) == ("bfloat16", False)
    assert gpu_check.plan(torch.device("cpu"))["dtype"] == "float32"


def test_every_step_runs_on_the_cpu_at_smoke_sizes(tmp_path):
    report = gpu_check.run_gpu_check(tmp_path / "check.json", device="cpu", workdir=tmp_path / "work")
    stored = json.loads((tmp_path / "check.json").read_text())
    assert stored["pass"] and list(stored["steps"]) == ["data", "phase1", "resume", "phase2", "loader",
                                                        "model_alone", "inference"]
    assert all(s["pass"] for s in stored["steps"].values()), stored["steps"]
    assert set(stored["images_per_s"]) == {"phase1", "phase2", "loader", "model_alone"}
    assert all(v > 0 for v in stored["images_per_s"].values())
    assert stored["steps"]["resume"]["identical"]  # on the CPU exactly the same weights
    assert report["plan"]["image_size"] == 64 and stored["steps"]["inference"]["sentences"] >= 1
