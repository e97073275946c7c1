"""The checkpoint records (helpers/model/record.py): the Phase-1 encoder file, the training state
(`last.pth`) and the check that a Phase-1 encoder never saw a validation or test patient."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from helpers.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from helpers.core.layout import DatasetError
from helpers.model.encoders import build_autoencoder, build_encoder
from helpers.model.record import VERSION, EncoderRecord, ModelRecord, TrainingState, check_encoder_patients
from helpers.model.unet import MultimodalUnet, from_config
from tests.model import ENCODER, D, make_model, same_image_two_texts

CASES = pd.DataFrame({"uid": [1, 2, 3, 4], "split": ["train", "val", "test", "train"]})


def encoder_file(path, patients=None, **entries):
    """A hand-written Phase-1 encoder record (resnet18) that saw `patients`."""
    torch.manual_seed(0)
    config = {"phase": 1, "patients": patients} if patients is not None else {}
    return EncoderRecord(build_encoder("resnet18").state_dict(), "resnet18", config=config,
                         **entries).save(path)


def test_encoder_record_round_trip_and_versions(tmp_path):
    path = encoder_file(tmp_path / "enc.pth", patients=[1, 4], epoch=3, val_loss=0.25)
    raw = load_checkpoint(path)
    assert raw["version"] == VERSION and raw["encoder_name"] == "resnet18" and raw["epoch"] == 3
    record = EncoderRecord.load(path)
    assert record.patients == [1, 4] and record.val_loss == 0.25 and record.in_channels == 1
    assert all(torch.equal(v, raw["encoder"][k]) for k, v in record.state_dict.items())
    assert record.info() == {"encoder_name": "resnet18", "in_channels": 1, "epoch": 3, "val_loss": 0.25,
                             "config": {"phase": 1, "patients": [1, 4]}}
    old = {k: v for k, v in raw.items() if k != "version"}  # written before the record
    assert EncoderRecord.from_payload(old).version == 1
    with pytest.raises(CheckpointError, match="newer.pth was written by a newer version"):
        EncoderRecord.load(save_checkpoint({**raw, "version": VERSION + 1}, tmp_path / "newer.pth"))
    with pytest.raises(CheckpointError, match="best.pth holds no 'encoder'"):
        EncoderRecord.load(save_checkpoint({"model": {}}, tmp_path / "best.pth"))


def test_an_encoder_that_saw_validation_or_test_patients_is_refused(tmp_path, capsys):
    leaky = encoder_file(tmp_path / "leaky.pth", patients=[1, 2, 3])
    with pytest.raises(DatasetError, match=r"saw 2 of the 2 validation/test patients.*uid 2, 3.*"
                                           r"ALLOW_SEEN_PATIENTS"):
        check_encoder_patients(leaky, CASES)
    check_encoder_patients(leaky, CASES, allow_seen=True)
    assert "used anyway" in capsys.readouterr().out
    check_encoder_patients(encoder_file(tmp_path / "clean.pth", patients=[1, 4]), CASES)
    assert capsys.readouterr().out == ""
    check_encoder_patients(encoder_file(tmp_path / "silent.pth"), CASES)
    assert "does not record which patients" in capsys.readouterr().out
    for nothing in (None, "imagenet", str(tmp_path / "missing.pth")):
        check_encoder_patients(nothing, CASES)
    assert capsys.readouterr().out == ""


def test_finetune_refuses_a_leaky_encoder_before_writing_anything(cases, tmp_path, finetune_cfg):
    import dataclasses

    from helpers.training.finetune import finetune

    seen = sorted(cases["uid"].astype(int))
    cfg = dataclasses.replace(finetune_cfg, encoder="resnet18",
                              pretrained_encoder=str(encoder_file(tmp_path / "enc.pth", seen)))
    with pytest.raises(DatasetError, match="ALLOW_SEEN_PATIENTS"):
        finetune(cfg, cases, tmp_path / "p2", progress=False)
    assert not (tmp_path / "p2").exists()


def test_training_state_round_trip_full_and_slim(tmp_path):
    weights = {"w": torch.arange(3.0)}
    full = TrainingState(weights, 2, [{"epoch": 1}, {"epoch": 2}], 0.5, 1, {"phase": 1}, {"state": {}},
                         {"last_epoch": 4}, {}, rng={"torch": torch.get_rng_state()})
    loaded = TrainingState.load(full.save(tmp_path / "last.pth"))
    assert not loaded.complete and loaded.epoch == 2 and loaded.optimizer == {"state": {}}
    assert torch.equal(loaded.rng["torch"], full.rng["torch"]) and torch.equal(loaded.model["w"], weights["w"])
    slim = TrainingState(weights, 2, full.history, 0.5, 1, {"phase": 1}, complete=True)
    raw = load_checkpoint(slim.save(tmp_path / "last.pth"))
    assert raw["complete"] and "optimizer" not in raw and "rng" not in raw
    assert TrainingState.load(tmp_path / "last.pth").complete
    with pytest.raises(CheckpointError, match="other.pth is not a training state"):
        TrainingState.load(save_checkpoint({"model": weights, "epoch": 1, "history": [], "config": {}},
                                           tmp_path / "other.pth"))


def make_record(model: MultimodalUnet) -> ModelRecord:
    return ModelRecord(model.state_dict(), model.config(), image_size=64, text_model="tiny-clip",
                       text_dim=D, threshold=0.35, text_model_requested="openai/clip-vit-base-patch32",
                       text_model_is_tiny=True, text_mode="positive",
                       text_report={"text_mode": "positive", "sentences_kept": 3},
                       finetune={"phase": 2, "fusion": "concat"}, epoch=4, metrics={"val_dice": 0.5})


def test_record_round_trip_is_weights_only_and_rebuilds_the_model(tmp_path):
    model = make_model()
    path = make_record(model).save(tmp_path / "best_model.pth")
    raw = torch.load(path, weights_only=True)  # plain values and tensors only
    assert raw["version"] == VERSION and raw["config"]["threshold"] == 0.35
    assert raw["config"]["text_mode"] == "positive" and raw["metrics"] == {"val_dice": 0.5}
    loaded = ModelRecord.load(path)
    assert loaded.config() == make_record(model).config() and loaded.epoch == 4
    rebuilt = from_config(loaded.model_config)
    rebuilt.load_state_dict(loaded.state_dict)
    image, emb = same_image_two_texts()
    torch.testing.assert_close(rebuilt.eval()(image, emb), model(image, emb))


def test_record_written_before_versions_loads_as_version_1(tmp_path):
    """A best_model.pth from before the record: no version, no text_report/finetune, an entry this
    version does not know (kept as it is)."""
    model = make_model()
    old = {"model": model.state_dict(), "epoch": 2, "metrics": {"val_dice": 0.4},
           "config": {"model": model.config(), "image_size": 64, "text_model": "tiny-clip",
                      "text_model_is_tiny": True, "text_dim": D, "text_mode": "positive",
                      "threshold": 0.45, "note": "kept"}}
    record = ModelRecord.load(save_checkpoint(old, tmp_path / "old.pth"))
    assert (record.version, record.threshold, record.text_mode, record.epoch) == (1, 0.45, "positive", 2)
    assert record.text_report == {} and record.extra == {"note": "kept"}
    assert record.config()["note"] == "kept"


def test_record_refuses_other_files_and_newer_versions(tmp_path):
    model = make_model()
    newer = make_record(model).to_payload() | {"version": VERSION + 1}
    with pytest.raises(CheckpointError, match=f"newer.pth was written by a newer version.*{VERSION + 1}"):
        ModelRecord.load(save_checkpoint(newer, tmp_path / "newer.pth"))
    encoder = EncoderRecord(build_autoencoder(ENCODER).encoder.state_dict(), ENCODER).save(tmp_path / "enc.pth")
    with pytest.raises(CheckpointError, match="Phase-1 encoder.*not a Phase-2 checkpoint"):
        ModelRecord.load(encoder)
    last = save_checkpoint({"model": model.state_dict(), "optimizer": {}, "config": {"phase": 2}},
                           tmp_path / "last.pth")
    with pytest.raises(CheckpointError, match="training state.*best_model.pth"):
        ModelRecord.load(last)
    partial = make_record(model).to_payload()
    del partial["config"]["text_dim"]
    with pytest.raises(CheckpointError, match="lacks text_dim"):
        ModelRecord.load(save_checkpoint(partial, tmp_path / "partial.pth"))


def test_imagenet_starts_pass_the_leak_check_silently(rgb_weights, capsys):
    """ImageNet weights saw no patient of this collection: nothing to check, nothing to warn."""
    import pandas as pd

    from helpers.model.record import check_encoder_patients

    cases = pd.DataFrame({"uid": [1, 2], "split": ["val", "test"]})
    for start in ("imagenet", str(rgb_weights[0])):
        check_encoder_patients(start, cases)
    assert capsys.readouterr().out == ""
