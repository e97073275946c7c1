"""What a sentence-transformers model adds to the Hugging Face model it wraps, read from its files
(a local folder or a hub name): `modules.json` lists the modules in order, the Transformer (whose
files may lie in a sub-folder, e.g. `0_Transformer/` in older models), Pooling (`1_Pooling/config.json`:
cls / mean / max / mean_sqrt_len), then `Dense` layers (a linear map and an activation, with their
own weights) and `Normalize` applied to the pooled vector; `sentence_bert_config.json` holds the
length limit. A module this project cannot apply is refused with the reason, never dropped: an
embedding without it would not be the model's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download

POOLING_MODES = {"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max",
                 "mean_sqrt_len_tokens": "mean_sqrt_len"}
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU", "LeakyReLU")


class TextModelError(RuntimeError):
    """The text model or its tokenizer could not be loaded."""


class Normalize(torch.nn.Module):
    """sentence-transformers' `Normalize`: unit length. [N, D] -> [N, D]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1)


@dataclass
class SentenceModules:
    """The sentence-transformers modules of a model; empty for a plain Hugging Face model."""

    subfolder: str = ""  # where the Transformer module's files are ("" : the top folder)
    pooling: str | None = None  # None: not declared (the encoder mean-pools)
    post: list[torch.nn.Module] = field(default_factory=list)  # Dense / Normalize, in order
    max_seq_length: int | None = None

    @property
    def normalize(self) -> bool:
        return any(isinstance(m, Normalize) for m in self.post)

    def out_features(self, hidden_size: int) -> int:
        """Width of the embedding: the last Dense layer's, else the model's hidden size."""
        dense = [m for m in self.post if isinstance(m, torch.nn.Sequential)]
        return dense[-1][0].out_features if dense else hidden_size


def model_file(name: str, filename: str) -> Path | None:
    """`filename` of a local model folder, or of the hub repository `name` (downloaded and cached
    by `huggingface_hub.hf_hub_download`, as transformers does); None when it does not exist or
    cannot be fetched."""
    if Path(name).is_dir():
        path = Path(name) / filename
        return path if path.is_file() else None
    try:
        return Path(hf_hub_download(name, filename))
    except Exception:  # not in the repository, offline, no such repository
        return None


def model_json(name: str, filename: str):
    path = model_file(name, filename)
    try:
        return json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None


def read_modules(name: str) -> SentenceModules:
    """The sentence-transformers modules of the model `name` (a folder or a hub name).

    Raises:
        TextModelError: a module this project does not apply (its type named), a pooling it
            does not know, or a Dense layer whose activation or weights cannot be read.
    """
    found = SentenceModules()
    modules = model_json(name, "modules.json")
    modules = modules if isinstance(modules, list) else []
    pooling_dir = "1_Pooling"
    for module in modules:
        kind, path = str(module.get("type", "")).rsplit(".", 1)[-1], str(module.get("path", ""))
        if kind == "Transformer":
            found.subfolder = path
        elif kind == "Pooling":
            pooling_dir = path or pooling_dir
        elif kind == "Dense":
            found.post.append(_dense(name, path))
        elif kind == "Normalize":
            found.post.append(Normalize())
        else:
            raise TextModelError(
                f"The text model {name!r} is a sentence-transformers model with a {kind!r} module "
                f"({module.get('type')}), which this project does not apply (it applies Transformer, "
                "Pooling, Dense and Normalize): its embeddings would not be the model's. Use "
                "another model, e.g. sentence-transformers/all-MiniLM-L6-v2.")
    flags = model_json(name, f"{pooling_dir}/config.json")
    if isinstance(flags, dict):
        modes = [m.removeprefix("pooling_mode_") for m, on in flags.items()
                 if m.startswith("pooling_mode_") and on is True]
        if len(modes) > 1 or (modes and modes[0] not in POOLING_MODES):
            raise TextModelError(f"The text model {name!r} pools its tokens by {' + '.join(modes)} "
                                 f"({pooling_dir}/config.json); this project pools by one of "
                                 f"{', '.join(POOLING_MODES)}.")
        found.pooling = POOLING_MODES[modes[0]] if modes else None
    config = model_json(name, "sentence_bert_config.json")
    if isinstance(config, dict) and config.get("max_seq_length"):
        found.max_seq_length = int(config["max_seq_length"])
    return found


def _dense(name: str, folder: str) -> torch.nn.Sequential:
    """A `Dense` module: Linear(in, out, bias) then its activation, with the module's weights
    (`model.safetensors`, else `pytorch_model.bin`: keys `linear.weight`, `linear.bias`)."""
    config = model_json(name, f"{folder}/config.json")
    if not isinstance(config, dict) or "in_features" not in config:
        raise TextModelError(f"The text model {name!r} has a Dense module in {folder}/ without its "
                             "config.json (in_features, out_features): it cannot be applied.")
    activation = str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
    cls = activation.rsplit(".", 1)[-1]
    if cls not in ACTIVATIONS:
        raise TextModelError(f"The text model {name!r} has a Dense module ({folder}/) with the "
                             f"activation {activation}, which this project does not build "
                             f"(it builds {', '.join(ACTIVATIONS)}).")
    linear = torch.nn.Linear(int(config["in_features"]), int(config["out_features"]),
                             bias=bool(config.get("bias", True)))
    state = None
    weights = model_file(name, f"{folder}/model.safetensors")
    if weights is not None:
        from safetensors.torch import load_file

        state = load_file(str(weights))
    elif (weights := model_file(name, f"{folder}/pytorch_model.bin")) is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    if state is None:
        raise TextModelError(f"The text model {name!r} has a Dense module ({folder}/) without its "
                             "weights (model.safetensors or pytorch_model.bin).")
    try:
        linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    except RuntimeError as err:
        raise TextModelError(f"The text model {name!r}: the weights of its Dense module "
                             f"({folder}/) do not fit its config.json ({err}).") from err
    return torch.nn.Sequential(linear, getattr(torch.nn, cls)())
