"""A trained model shared the way the model hub's libraries share one: a folder holding

    config.json         everything that rebuilds the model and reads a report (below)
    model.safetensors   the weights only
    README.md           the model card (`inference.card`)
    evaluation.json     the measured figures the card shows (`inference.results`), when there are any
    text_encoder/       only for a text encoder that was a local folder (the tiny CLIP, a download)

read from a local folder or from the hub by id ("owner/name", `huggingface_hub.snapshot_download`).
Nothing is unpickled: the weights are safetensors, the rest JSON. `Segmenter.save_pretrained` and
`Segmenter.from_pretrained` use this module; `python -m helpers export` writes and pushes a folder.

config.json:

    {"format": "cxr-text-localization", "format_version": 1, "license": "cc-by-nc-nd-4.0",
     "record_version": 1, "epoch": 7, "metrics": {"val_dice": ...},
     "record": ModelRecord.config() (model config, image size, threshold, text mode, settings,
               the patient split, ...; "text_model" as below),
     "text_encoder": {"name": hub name or "text_encoder", "revision": commit or null,
                      "copied": bool, "is_tiny": bool, "dim": 512, "max_length": 77},
     "reader": {"text_mode": ..., "sentence_rules_version": 1, "place_words_version": 1}}

A folder of a newer `format_version` is refused with a message that says to update the project.
"""
from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import create_repo, get_token, snapshot_download, upload_folder
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.checkpoint import CheckpointError, checked_version
from ..core.layout import (BEST_FILE, MODEL_CARD_FILE, MODEL_CONFIG_FILE, MODEL_TEXT_ENCODER_DIR,
                           MODEL_WEIGHTS_FILE)
from ..model.record import ModelRecord
from ..text import places, sentences
from .results import plain, write_exported

FORMAT = "cxr-text-localization"  # also the model card's library_name
FORMAT_VERSION = 1  # the folder layout this code writes and the newest it reads
DEFAULT_LICENSE = "cc-by-nc-nd-4.0"  # the model's licence unless one is given: the IU data's terms
# "owner/name" on the model hub; a path that exists is always read as a folder
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# a folder of the hub's download cache: models--<owner>--<name>/snapshots/<commit>
HUB_CACHE = re.compile(r"models--(?P<owner>[^/\\]+?)--(?P<name>[^/\\]+)[/\\]snapshots[/\\](?P<rev>[0-9a-f]{40})")
PICKLED_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
EXPORT_HELP = "export one with `python -m helpers export --checkpoint best_model.pth --out FOLDER`"


class PretrainedError(CheckpointError):
    """A model folder cannot be written or read; the message names the folder and what to do."""


@dataclass(frozen=True)
class TextEncoderSource:
    """How an exported model names its text encoder: a hub `name` (at `revision`), or a local
    `folder` copied into the export (then `name` is `MODEL_TEXT_ENCODER_DIR`)."""

    name: str
    revision: str | None = None
    folder: Path | None = None


def text_encoder_source(name: str, commit: str | None = None) -> TextEncoderSource:
    """Where an exported model finds the text encoder `name` (as loaded, `commit` its hub commit):
    a hub name stays a name, at its commit; a folder of the hub's download cache becomes its hub
    name and commit; another local folder is copied, unless it cannot be shared safely
    (`PretrainedError` with the reason)."""
    cached = HUB_CACHE.search(str(name))
    if cached:
        return TextEncoderSource(f"{cached['owner']}/{cached['name']}", cached["rev"])
    path = Path(name).expanduser()
    if not path.exists():
        if HUB_ID.match(str(name)) and not str(name).startswith((".", "~")):
            return TextEncoderSource(str(name), commit)
        raise PretrainedError(
            f"The text encoder {name!r} is a folder that is not on this machine, so it cannot be "
            "copied into the export: give the folder, or the hub name of the same model, as the text "
            "model (`--text-model`).")
    if not (path / "config.json").is_file():
        raise PretrainedError(f"The text encoder folder {path} holds no config.json: it is not a "
                              "`save_pretrained` folder, so the export cannot carry it.")
    pickled = [f for f in PICKLED_WEIGHTS if (path / f).is_file()]
    if pickled and not any(path.glob("*.safetensors")):
        raise PretrainedError(
            f"The text encoder folder {path} holds its weights as {pickled[0]}, a pickle: an exported "
            "model never unpickles. Re-save it with safetensors (`model.save_pretrained(folder)`, the "
            "default of transformers), or give the model's hub name.")
    return TextEncoderSource(MODEL_TEXT_ENCODER_DIR, None, path)


def model_config(record: ModelRecord, text: TextEncoderSource, *, license: str, is_tiny: bool,
                 dim: int, max_length: int) -> dict:
    """The content of `config.json` (see the module docstring), plain JSON values."""
    cfg = dict(record.config(), text_model=text.name, text_model_is_tiny=is_tiny)
    return plain({"format": FORMAT, "format_version": FORMAT_VERSION, "license": license,
                  "record_version": record.version, "epoch": record.epoch, "metrics": record.metrics,
                  "record": cfg,
                  "text_encoder": {"name": text.name, "revision": text.revision,
                                   "copied": text.folder is not None, "is_tiny": is_tiny, "dim": dim,
                                   "max_length": max_length},
                  "reader": {"text_mode": record.text_mode,
                             "sentence_rules_version": sentences.RULES_VERSION,
                             "place_words_version": places.RULES_VERSION}})


def write_folder(folder: str | Path, config: dict, state_dict: dict[str, torch.Tensor],
                 text: TextEncoderSource, card: str, results: dict[str, dict]) -> Path:
    """Write an exported model to `folder` (created; files of a previous export replaced)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(weights, folder / MODEL_WEIGHTS_FILE, metadata={"format": "pt"})
        (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
        (folder / MODEL_CARD_FILE).write_text(card)
        write_exported(folder, results)
        copied = folder / MODEL_TEXT_ENCODER_DIR
        shutil.rmtree(copied, ignore_errors=True)
        if text.folder is not None:
            shutil.copytree(text.folder, copied, ignore=shutil.ignore_patterns(
                ".cache", ".git", "*.lock", *PICKLED_WEIGHTS))
    except OSError as err:
        raise PretrainedError(f"Could not write the model to {folder} ({err.strerror or err}): "
                              "choose a writable folder.") from err
    return folder


def resolve(source: str | Path, revision: str | None = None) -> Path:
    """The local folder of `source`: a folder as it is, or a hub id ("owner/name", at `revision`)
    downloaded (or found in the hub's cache) by `huggingface_hub.snapshot_download`."""
    path = Path(source).expanduser()
    if path.exists():
        if revision is not None:
            raise PretrainedError(f"{source} is a local folder: a revision ({revision!r}) applies to "
                                  "a hub id only.")
        return path
    if not HUB_ID.match(str(source)) or str(source).startswith((".", "~")):
        raise PretrainedError(f"{source} is neither a folder on this machine nor a hub id "
                              f"(owner/name): give an exported model's folder, or {EXPORT_HELP}.")
    try:
        return Path(snapshot_download(str(source), revision=revision, library_name=FORMAT))
    except Exception as err:  # offline, no such repository or revision, private without a token
        raise PretrainedError(
            f"{source} is not a folder here, and the model hub could not give it ({type(err).__name__}: "
            f"{err}). Check the id and the revision, the network, and for a private model the token "
            "(HF_TOKEN); or give the exported folder.") from err


def _not_a_model(folder: Path) -> str:
    if (folder / BEST_FILE).is_file() or (folder / "phase2" / BEST_FILE).is_file():
        return (f"{folder} holds a training checkpoint ({BEST_FILE}), not an exported model: load it "
                f"with `Segmenter.from_checkpoint`, or {EXPORT_HELP}.")
    return f"{folder} is not an exported model (it lacks {MODEL_CONFIG_FILE}): {EXPORT_HELP}."


def read_config(folder: Path) -> dict:
    """`config.json` of an exported model, checked; `PretrainedError` for a folder that is not
    one, of another library, or of a newer format."""
    if not folder.is_dir():
        raise PretrainedError(f"{folder} is a file, not an exported model's folder: {EXPORT_HELP}.")
    path = folder / MODEL_CONFIG_FILE
    if not path.is_file():
        raise PretrainedError(_not_a_model(folder))
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PretrainedError(f"{path} cannot be read as JSON ({err}): copy the folder again.") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PretrainedError(f"{path} is not the config of a model of this project (its format is "
                              f"{config.get('format') if isinstance(config, dict) else None!r}, expected "
                              f"{FORMAT!r}): {EXPORT_HELP}.")
    checked_version(config.get("format_version"), FORMAT_VERSION, path, "format_version",
                    "copy the folder again", PretrainedError)
    if not isinstance(config.get("record"), dict) or not isinstance(config.get("text_encoder"), dict):
        raise PretrainedError(f"{path} lacks its record or text_encoder entry: copy the folder again.")
    return config


def read_folder(folder: Path) -> tuple[ModelRecord, dict]:
    """(the model's record, weights included, and its config.json) from an exported folder;
    warns when the sentence rules or place words differ from those the model was trained with."""
    config = read_config(folder)
    weights = folder / MODEL_WEIGHTS_FILE
    if not weights.is_file():
        raise PretrainedError(f"{folder} lacks {MODEL_WEIGHTS_FILE}: copy the whole folder again.")
    try:
        state_dict = load_file(weights, device="cpu")
    except (SafetensorError, OSError) as err:
        raise PretrainedError(f"{weights} is truncated or corrupt ({err}): copy it again.") from err
    record = ModelRecord.from_payload({"version": config.get("record_version", 1), "model": state_dict,
                                       "epoch": config.get("epoch"), "metrics": config.get("metrics"),
                                       "config": config["record"]}, folder / MODEL_CONFIG_FILE)
    reader = config.get("reader") or {}
    for key, module, what in (("sentence_rules_version", sentences, "sentence rules"),
                              ("place_words_version", places, "place words")):
        if reader.get(key, module.RULES_VERSION) != module.RULES_VERSION:
            warnings.warn(f"{folder} was trained with {what} version {reader[key]}; this code has version "
                          f"{module.RULES_VERSION}: some reports may be read otherwise than in training.",
                          stacklevel=3)
    return record, config


def text_model_of(folder: Path, config: dict) -> tuple[str, str | None]:
    """(name or local path, revision) of the text encoder of an exported model in `folder`."""
    text = config["text_encoder"]
    if text.get("copied"):
        return str(folder / MODEL_TEXT_ENCODER_DIR), None
    return str(text["name"]), text.get("revision")


def push_folder(folder: str | Path, repo_id: str, *, private: bool | None = None,
                message: str = "Upload model") -> str:
    """Upload an exported folder to the model hub as `repo_id` (created when missing) and return
    its address. The token comes from `HF_TOKEN` (environment or Colab secret) or a saved login."""
    if not HUB_ID.match(repo_id):
        raise PretrainedError(f"{repo_id!r} is not a hub id: write owner/name.")
    read_config(Path(folder))  # push only what loads
    token = get_token()
    if not token:
        raise PretrainedError("No model hub token: create one with write access in your hub account "
                              "settings and set HF_TOKEN (on Colab: a secret named HF_TOKEN, the key "
                              "icon on the left, with notebook access on).")
    try:
        url = create_repo(repo_id, token=token, private=private, exist_ok=True)
        upload_folder(repo_id=repo_id, folder_path=str(folder), token=token, commit_message=message)
    except Exception as err:  # network, rights, quota: the hub's own message says which
        raise PretrainedError(f"Could not push {folder} to {repo_id} ({type(err).__name__}: {err}). "
                              "Check the token's write access and the network.") from err
    return str(url)
