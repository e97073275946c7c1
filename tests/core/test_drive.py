"""The run folder on Drive: flushed after notebook 01, checkpoints copied there at most every ~10
minutes from the machine's disk, the bytes written counted."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import colab
from helpers.core import drive
from helpers.core.checkpoint import load_checkpoint
from helpers.training.pretrain import pretrain


def test_flush_drive_is_a_no_op_off_colab_and_flushes_on_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert "nothing to flush" in colab.flush_drive()
    calls = []
    fake = types.ModuleType("google.colab")
    fake.drive = types.SimpleNamespace(flush_and_unmount=lambda: calls.append("flushed"))
    monkeypatch.setitem(sys.modules, "google.colab", fake)
    assert "flushed and unmounted" in colab.flush_drive() and calls == ["flushed"]


def test_the_work_folder_is_local_for_a_run_folder_on_drive(tmp_path, monkeypatch):
    monkeypatch.delenv(drive.WORK_ENV, raising=False)
    on_drive = Path("/content/drive/MyDrive/cxr-text-localization/runs/real/phase2")
    assert drive.local_work_dir(on_drive, colab=True) == \
        Path("/content/cxr-work/MyDrive/cxr-text-localization/runs/real/phase2")
    assert drive.local_work_dir(Path("/content/runs/real"), colab=True) is None  # not on Drive
    assert drive.local_work_dir(on_drive, colab=False) is None
    monkeypatch.setenv(drive.WORK_ENV, str(tmp_path / "local"))
    work = drive.local_work_dir(tmp_path / "run" / "phase1")
    assert work.parent == tmp_path / "local" and work.name.startswith("phase1-")
    assert drive.local_work_dir(work / "x") is None  # already on the local disk


def _replacements(folder: Path, names: list[str], seen: dict) -> None:
    for name in names:
        path = folder / name
        if path.is_file():
            st = path.stat()
            seen.setdefault(name, set()).add((st.st_ino, st.st_mtime_ns))


def test_n_epochs_write_each_checkpoint_to_the_run_folder_a_bounded_number_of_times(
        catalog, tmp_path, pretrain_cfg, monkeypatch):
    """With the interval longer than the training, the run folder (Drive) gets each file once, at
    the end, however many better epochs there were (the work folder got them all). The bytes
    copied are counted, in the process and in run.json."""
    monkeypatch.setenv(drive.WORK_ENV, str(tmp_path / "local"))
    monkeypatch.setenv("CXR_LAST_SAVE_S", "3600")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"mode": "smoke"}')
    out, names = run / "phase1" / "masked", ["my_pretrained_encoder.pth", "last.pth"]
    seen, local_best = {}, set()
    work = drive.local_work_dir(out)

    def watch(row):
        _replacements(out, names, seen)
        local_best.add((work / names[0]).stat().st_mtime_ns)

    before = drive.WRITTEN["checkpoints"]
    cfg = dataclasses.replace(pretrain_cfg, epochs=4, max_images=8, lr=1e-3)
    result = pretrain(cfg, catalog.image_paths(), out, progress=False, on_epoch_end=watch)
    _replacements(out, names, seen)
    assert result.best_path == out / names[0] and result.last_path == out / names[1]
    assert load_checkpoint(result.last_path)["complete"] and (out / "history_my_pretrained_encoder.csv").is_file()
    assert not (out / "text_embeddings.pt").exists() and not list(out.glob("*.tmp"))
    assert {name: len(versions) for name, versions in seen.items()} == {name: 1 for name in names}
    assert len(local_best) > 1  # better epochs were written, on the machine's disk only
    copied = drive.WRITTEN["checkpoints"] - before
    assert copied >= sum((out / n).stat().st_size for n in names)
    assert json.loads((run / "run.json").read_text())["bytes_written"]["checkpoints"] == copied


def test_a_cut_on_drive_loses_only_what_followed_the_last_copy(catalog, tmp_path, pretrain_cfg,
                                                               monkeypatch):
    """Interrupted after a copy, on a new machine (the local work folder gone), the run resumes
    from the run folder's last.pth and ends with the weights of an uninterrupted run."""
    cfg = dataclasses.replace(pretrain_cfg, objective="masked", max_images=8, batch_size=2)
    paths = catalog.image_paths()
    straight = pretrain(cfg, paths, tmp_path / "straight", progress=False)
    monkeypatch.setenv(drive.WORK_ENV, str(tmp_path / "local"))
    out = tmp_path / "drive" / "masked"

    def cut(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, paths, out, progress=False, on_epoch_end=cut)
    assert load_checkpoint(out / "last.pth")["epoch"] == 2  # copied before the cut
    shutil.rmtree(tmp_path / "local")  # the next notebook runs on another machine
    resumed = pretrain(cfg, paths, out, resume=True, progress=False)
    assert resumed.last_path == out / "last.pth" and load_checkpoint(resumed.last_path)["complete"]
    a, b = (load_checkpoint(p)["model"] for p in (straight.last_path, resumed.last_path))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_changed_setting_keeps_the_old_state_by_a_rename_on_drive(tmp_path, monkeypatch):
    monkeypatch.setenv(drive.WORK_ENV, str(tmp_path / "local"))
    out = tmp_path / "drive"
    out.mkdir()
    (out / "last.pth").write_bytes(b"old state")
    mirror = drive.Mirror.for_training(out, "best_model.pth", resume=True)
    (mirror.work / "last.pth").rename(mirror.work / "last.prev.pth")  # what fit does
    (mirror.work / "last.pth").write_bytes(b"new state")
    mirror.push()
    assert (out / "last.prev.pth").read_bytes() == b"old state"
    assert (out / "last.pth").read_bytes() == b"new state"
    assert mirror.pushes == {"last.pth": 1}


def test_the_ablation_keeps_its_scores_in_the_run_folder_not_its_weights(cases, tmp_path, finetune_cfg,
                                                                          text_dir, monkeypatch):
    """On Drive each ablation model trains on the machine's disk: the run folder gets its history
    and scores; a second run (a new machine after a cut) reads the kept scores, trains nothing."""
    from helpers.core.settings import AblationConfig
    from helpers.evaluation import ablation

    monkeypatch.setenv(drive.WORK_ENV, str(tmp_path / "local"))
    settings = AblationConfig(seeds=(0,), fusions=(), with_upsampling=False, with_init=False,
                              with_place=False, bootstrap=20)
    base = dataclasses.replace(finetune_cfg, epochs=1, place_prior=False)
    out = tmp_path / "drive" / "ablations"
    table, runs = ablation.run_ablations(cases, out, base, settings, text_cache_dir=text_dir,
                                         progress=False)
    assert list(runs["variant"]) == [v.name for v in ablation.ablation_variants(base, settings)]
    assert not list(out.rglob("*.pth")) and len(list(out.rglob("history_best_model.csv"))) == 2
    assert len(list(out.rglob(ablation.SCORES_FILE))) == len(runs)
    assert runs["dice_alone"].tolist() == pytest.approx(runs["dice"].tolist())  # no image said to show another lesion
    crowded = set(cases.loc[cases["split"] == "test", "image_path"][:2])
    per_case = pd.read_csv(out / ablation.CASES_FILE)
    assert per_case["alone"].all()
    shutil.rmtree(tmp_path / "local")
    monkeypatch.setattr(ablation, "finetune", lambda *a, **k: pytest.fail("trained again"))
    _, again = ablation.run_ablations(cases, out, base, settings, text_cache_dir=text_dir,
                                      progress=False)
    pd.testing.assert_frame_equal(again, runs)
    _, crowd = ablation.run_ablations(cases, out, base, settings, text_cache_dir=text_dir,
                                      crowded=crowded, progress=False)
    alone = pd.read_csv(out / ablation.CASES_FILE).query("alone")
    assert len(alone) == len(per_case) - 2 * len(runs)
    assert crowd["dice_alone"].tolist() == pytest.approx(alone.groupby("variant", sort=False)["dice"].mean().tolist())
