"""Exact resume: a run interrupted and resumed ends with the weights of an uninterrupted one, with
loader workers too, and the CUDA random state travels in last.pth."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.core.checkpoint import load_checkpoint, save_checkpoint
from helpers.training import rng
from helpers.training.finetune import finetune


def _interrupt_at(epoch: int):
    def stop(row):
        if row["epoch"] == epoch:
            raise KeyboardInterrupt
    return stop


def _same_weights(a_path, b_path) -> None:
    a, b = load_checkpoint(a_path)["model"], load_checkpoint(b_path)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_place_items_drawn_by_two_workers_resume_exactly(cases, tmp_path, finetune_cfg, text_dir):
    """Phase 2's place items, augmentations and flips drawn in two worker processes: the
    persistent workers of the resumed run start at epoch 1, those of the other at epoch 0; both
    draw epoch 1 alike, and the weights end the same."""
    cfg = dataclasses.replace(finetune_cfg, epochs=2, num_workers=2, augment=True, paste_prob=0.4,
                              swap_prob=0.2, null_rate=0.2, concordant_flip=0.5)
    straight = finetune(cfg, cases, tmp_path / "straight", text_cache_dir=text_dir, progress=False)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, cases, tmp_path / "resumed", text_cache_dir=text_dir, progress=False,
                 on_epoch_end=_interrupt_at(1))
    resumed = finetune(cfg, cases, tmp_path / "resumed", text_cache_dir=text_dir, resume=True,
                       progress=False)
    _same_weights(straight.last_path, resumed.last_path)


def test_epoch_sampler_draws_each_epoch_from_seed_and_epoch_alone():
    a, b = rng.EpochSampler(12, seed=5), rng.EpochSampler(12, seed=5)
    a.set_epoch(0)
    list(a)  # a's earlier epoch changes nothing for the next
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) and {e for e, _ in a} == {3} and sorted(i for _, i in a) == list(range(12))
    b.set_epoch(4)
    assert [i for _, i in a] != [i for _, i in b]


def test_cuda_random_state_is_saved_and_restored_when_cuda_is_present(monkeypatch, tmp_path):
    """No GPU here: CUDA's state functions are faked; the state goes through last.pth's loader
    (weights_only) and back to `set_rng_state_all`."""
    states = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    generator = torch.Generator().manual_seed(1)
    save_checkpoint({"rng": rng.rng_state(generator)}, tmp_path / "last.pth")
    saved = load_checkpoint(tmp_path / "last.pth")["rng"]
    expected = torch.rand(3, generator=generator)
    rng.restore_rng(saved, generator)
    assert len(restored) == 1 and all(torch.equal(x, y) for x, y in zip(restored[0], states))
    assert torch.equal(torch.rand(3, generator=generator), expected)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "cuda" not in rng.rng_state(generator)
    rng.restore_rng(saved, generator)  # a state from a GPU machine resumes on a CPU
    assert len(restored) == 1
