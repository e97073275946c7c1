"""A trained model shared as a folder (config.json, model.safetensors, model card), loaded from a
folder or the model hub (faked offline), the figures it carries and the export command."""
from __future__ import annotations

import json
import pickle
import re
import shutil
import warnings

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from helpers.__main__ import main
from helpers.core.checkpoint import CheckpointError
from helpers.core.layout import (EVALUATION_FILE, MODEL_CARD_FILE, MODEL_CONFIG_FILE, MODEL_TEXT_ENCODER_DIR,
                                 MODEL_WEIGHTS_FILE)
from helpers.data.split import case_keys, model_split, split_keys
from helpers.evaluation.scores import counterfactual_sides, evaluate, mirror_probe, save_evaluation
from helpers.inference import pretrained
from helpers.inference.card import figure_rows, wilson
from helpers.inference.pretrained import PretrainedError, text_encoder_source
from helpers.inference.results import load_results
from helpers.inference.segmenter import Segmenter

TEXTS = ["Nodule in the right upper lobe.", "Large left pleural effusion. No pneumothorax.",
         "The heart is normal in size. The lungs are clear."]


@pytest.fixture(scope="module")
def run(checkpoint, cases, text_dir, tmp_path_factory):
    """A copy of the shared smoke checkpoint (conftest), scored on its test split (evaluation.json beside
    it), exported once: (checkpoint, segmenter, saved summary, exported folder)."""
    ckpt = tmp_path_factory.mktemp("run") / "best_model.pth"
    shutil.copy(checkpoint, ckpt)
    seg = Segmenter.from_checkpoint(ckpt, device="cpu", text_cache_dir=text_dir)
    test = cases[cases["split"] == "test"].reset_index(drop=True)
    _, summary = evaluate(seg, test)
    path = save_evaluation(ckpt, summary, counterfactual=counterfactual_sides(seg, test)[1],
                           mirror_probe=mirror_probe(seg, test)[1], two_lesion_probe=None)
    folder = seg.save_pretrained(ckpt.parent / "export", data={"data_source": "demo:forced"})
    return ckpt, seg, json.loads(path.read_text())["results"]["test"], folder


def _no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loading an exported model unpickled something")
    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)


def test_round_trip_gives_identical_probabilities_and_never_unpickles(run, catalog, monkeypatch):
    _, seg, _, folder = run
    assert {p.name for p in folder.iterdir()} == {MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE, MODEL_CARD_FILE,
                                                  EVALUATION_FILE, MODEL_TEXT_ENCODER_DIR}
    with monkeypatch.context() as m:
        _no_unpickling(m)
        loaded = Segmenter.from_pretrained(folder, device="cpu")
        with pytest.raises(CheckpointError):  # the guard holds: a .pth checkpoint is a pickle
            Segmenter.from_checkpoint(run[0], device="cpu")
    image = catalog.cases["image_path"].iloc[0]
    for text in TEXTS:
        np.testing.assert_array_equal(loaded.predict(image, text), seg.predict(image, text))
    assert (loaded.threshold, loaded.image_size, loaded.text_mode) == (seg.threshold, seg.image_size, seg.text_mode)
    assert loaded.record.patients == seg.record.patients and loaded.record.patients["train"]
    # the tiny text encoder was a local folder: it travels inside the export
    assert loaded.text_encoder.name == str(folder / MODEL_TEXT_ENCODER_DIR) and loaded.text_encoder.is_tiny
    assert "text_encoder/ (copied with the model)" in loaded.describe()
    config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    assert config["text_encoder"]["copied"] and config["record"]["text_model"] == MODEL_TEXT_ENCODER_DIR
    assert config["reader"] == {"text_mode": seg.text_mode, "sentence_rules_version": 1, "place_words_version": 1}


def test_the_card_holds_the_runs_figures_and_its_header_parses(run):
    _, _, summary, folder = run
    card = (folder / MODEL_CARD_FILE).read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "cxr-text-localization" and header["pipeline_tag"] == "image-segmentation"
    assert header["license"] == "cc-by-nc-nd-4.0" and "chest-x-ray" in header["tags"]
    assert ModelCard.load(folder / MODEL_CARD_FILE).data.license == header["license"]
    rows = {m[0]: m[1:] for m in re.findall(r"^\| ([^|]+?) \| ([\d.]+) \| ([\d.]+) – ([\d.]+) \| (\d+) \|$",
                                            card, re.M)}
    dice = rows["Dice (per image, at the threshold)"]
    assert [float(x) for x in dice[:3]] == pytest.approx([summary["dice"], summary["dice_lo"], summary["dice_hi"]],
                                                         abs=5e-4)
    assert int(dice[3]) == summary["n"] == 3
    swap = rows["Left/right swapped: mask moves or empties"]
    assert float(swap[0]) == pytest.approx(summary["counterfactual"]["follows_share"], abs=5e-4)
    assert int(swap[3]) == summary["counterfactual"]["n_sided"]
    assert "Scored on the **test** split: 3 images of 3 patients (the model's own test patients)" in card
    assert "demo:forced" in card and "synthetic" in card and "Not a medical" in card
    assert "at most 77 tokens" in card and "random" in card  # the tiny text encoder is named as such


def test_exporting_a_loaded_model_again_keeps_its_figures(run, tmp_path):
    loaded = Segmenter.from_pretrained(run[3], device="cpu")
    assert loaded.results["test"]["dice"] == run[2]["dice"]
    loaded.threshold = 0.123
    card = (loaded.save_pretrained(tmp_path / "again") / MODEL_CARD_FILE).read_text()
    assert "| Dice (per image, at the threshold) | " in card
    assert f"threshold {run[2]['threshold']:.3f} (the model's threshold is now 0.123)" in card
    assert Segmenter.from_pretrained(tmp_path / "again", device="cpu").threshold == 0.123


def test_figure_rows_and_share_intervals():
    rows = figure_rows({"dice": 0.5, "dice_lo": 0.4, "dice_hi": 0.6, "n": 10,
                        "normal_reports": {"empty_share": 0.9, "n": 20}, "mirror_probe": {"n_cases": 0}})
    assert rows[0] == ["Dice (per image, at the threshold)", 0.5, 0.4, 0.6, 10]
    assert rows[1][0] == "Normal report: empty mask" and rows[1][2] < 0.9 < rows[1][3]
    assert len(rows) == 2  # what was not measured is left out, never shown as a placeholder
    low, high = wilson(0.5, 100)
    assert low == pytest.approx(0.404, abs=1e-3) and high == pytest.approx(0.596, abs=1e-3)
    assert wilson(0.5, 0) is None


def test_the_hub_path_downloads_the_id_at_its_revision(run, monkeypatch):
    folder = run[3]
    calls = []

    def fake_download(repo_id, revision=None, **kwargs):
        calls.append((repo_id, revision))
        return str(folder)
    monkeypatch.setattr(pretrained, "snapshot_download", fake_download)
    loaded = Segmenter.from_pretrained("someone/cxr-model", revision="v1", device="cpu")
    assert calls == [("someone/cxr-model", "v1")] and loaded.image_size == run[1].image_size

    def offline(repo_id, revision=None, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(pretrained, "snapshot_download", offline)
    with pytest.raises(PretrainedError, match="someone/cxr-model.*no network"):
        Segmenter.from_pretrained("someone/cxr-model")
    with pytest.raises(PretrainedError, match="neither a folder on this machine nor a hub id"):
        Segmenter.from_pretrained("./no/such/folder")


def test_folders_that_are_not_such_a_model_are_clear_errors(run, tmp_path):
    ckpt, _, _, folder = run
    with pytest.raises(PretrainedError, match=f"{tmp_path}.*lacks config.json"):
        Segmenter.from_pretrained(tmp_path)
    (tmp_path / "phase2").mkdir()
    shutil.copy(ckpt, tmp_path / "phase2" / "best_model.pth")
    with pytest.raises(CheckpointError, match="training checkpoint.*from_checkpoint"):
        Segmenter.from_pretrained(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    config = json.loads((copy / MODEL_CONFIG_FILE).read_text())
    (copy / MODEL_CONFIG_FILE).write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(PretrainedError, match="newer version of this project.*git pull"):
        Segmenter.from_pretrained(copy)
    (copy / MODEL_CONFIG_FILE).write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(PretrainedError, match="not the config of a model of this project"):
        Segmenter.from_pretrained(copy)
    (copy / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    (copy / MODEL_WEIGHTS_FILE).write_bytes(b"truncated")
    with pytest.raises(PretrainedError, match="model.safetensors is truncated or corrupt"):
        Segmenter.from_pretrained(copy)
    config["reader"]["sentence_rules_version"] = 0
    (copy / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    shutil.copy(folder / MODEL_WEIGHTS_FILE, copy / MODEL_WEIGHTS_FILE)
    with pytest.warns(UserWarning, match="sentence rules version 0"):
        Segmenter.from_pretrained(copy, device="cpu")


def test_a_text_encoder_is_named_copied_or_refused(tmp_path, text_dir):
    hub = text_encoder_source("openai/clip-vit-base-patch32", "a" * 40)
    assert (hub.name, hub.revision, hub.folder) == ("openai/clip-vit-base-patch32", "a" * 40, None)
    cached = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / ("b" * 40)
    cached.mkdir(parents=True)
    got = text_encoder_source(str(cached))
    assert (got.name, got.revision, got.folder) == ("sentence-transformers/all-MiniLM-L6-v2", "b" * 40, None)
    tiny = next(p.parent for p in text_dir.rglob("tiny_clip.json"))
    assert text_encoder_source(str(tiny)).folder == tiny
    with pytest.raises(PretrainedError, match="not on this machine.*--text-model"):
        text_encoder_source(str(tmp_path / "gone" / "model"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(PretrainedError, match="pytorch_model.bin, a pickle"):
        text_encoder_source(str(pickled))


def test_the_split_a_model_carries_tells_its_cases_from_another_collections(cases):
    keys = split_keys(cases)
    assert set(keys) == {"train", "val", "test"}
    assert model_split(cases, keys).tolist() == cases["split"].tolist()
    other = cases.assign(text="Another collection's report of the same uid.")
    assert model_split(other, keys).isna().all()  # the same uids, other reports: not its patients
    assert case_keys(cases.iloc[:1])[0].startswith(f"{cases['uid'].iloc[0]}:")


def test_scoring_leaves_the_models_training_patients_out(run, cases):
    seg = run[1]
    relabeled = cases.assign(split="test")  # another split of the same collection
    with pytest.warns(UserWarning) as caught:
        per_case, summary = evaluate(seg, relabeled)
    said = " ".join(str(w.message) for w in caught)
    assert "trained on: left out" in said and "chosen on (its validation split)" in said
    n_train = int((cases["split"] == "train").sum())
    assert summary["n_left_out"] == n_train and summary["n"] == len(cases) - n_train
    assert set(per_case.index) == set(cases.index[cases["split"] != "train"])
    assert summary["model_split"] == "test+val"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own training split, asked for on purpose: kept
        _, train = evaluate(seg, cases[cases["split"] == "train"])
    assert train["n"] == n_train and train["n_left_out"] == 0 and train["split"] == "train"


def test_figures_of_other_weights_are_stale(run, tmp_path):
    ckpt = tmp_path / "best_model.pth"
    shutil.copy(run[0], ckpt)
    shutil.copy(run[0].with_name(EVALUATION_FILE), tmp_path / EVALUATION_FILE)
    assert load_results(ckpt)["test"]["n"] == 3
    with open(ckpt, "ab") as f:
        f.write(b"retrained")
    with pytest.warns(UserWarning, match="other weights"):
        assert load_results(ckpt) == {}


def test_cli_exports_and_pushes_with_a_faked_hub(run, tmp_path, monkeypatch, capsys, text_dir):
    ckpt = run[0]
    uploads = []
    monkeypatch.setattr(pretrained, "create_repo", lambda repo_id, **kw: f"hub/{repo_id}")
    monkeypatch.setattr(pretrained, "upload_folder", lambda **kw: uploads.append(kw))
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    out = tmp_path / "model"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--push", "someone/cxr-model",
                 "--license", "cc-by-nc-4.0"]) == 0
    assert [(u["repo_id"], u["folder_path"], u["token"]) for u in uploads] == \
        [("someone/cxr-model", str(out), "hf_fake")]
    card = (out / MODEL_CARD_FILE).read_text()
    assert 'Segmenter.from_pretrained("someone/cxr-model")' in card and "license: cc-by-nc-4.0" in card
    assert "pushed to hub/someone/cxr-model" in capsys.readouterr().out
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(pretrained, "get_token", lambda: None)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--push", "someone/cxr-model"]) == 1
    assert "No model hub token" in capsys.readouterr().err
