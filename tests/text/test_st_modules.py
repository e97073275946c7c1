"""A sentence-transformers model is read whole: its Transformer files in a sub-folder, Dense layers
and Normalize after pooling, in order; a module that cannot be applied is refused with the reason.
The model folders are made up: a tiny BERT saved with transformers, the module files written by
hand as sentence-transformers writes them."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from helpers.text.encoders import TextEncoder, TextModelError
from tests.text.test_encoders import save_tiny_bert

TANH = "torch.nn.modules.activation.Tanh"


def _st_folder(root, *, subfolder: str = "", dense: bool = True, activation: str = TANH,
               extra: list[dict] | None = None):
    """A sentence-transformers folder: Transformer (in `subfolder`), mean Pooling, a Dense 16 -> 6
    with `activation`, Normalize. Returns (bert, tokenizer, linear)."""
    (root / subfolder).mkdir(parents=True, exist_ok=True)
    bert, tokenizer = save_tiny_bert(root / subfolder)
    modules = [{"idx": 0, "name": "0", "path": subfolder, "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16,
                                                                "pooling_mode_mean_tokens": True}))
    torch.manual_seed(1)
    linear = torch.nn.Linear(16, 6)
    if dense:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        (root / "2_Dense").mkdir()
        (root / "2_Dense" / "config.json").write_text(json.dumps(
            {"in_features": 16, "out_features": 6, "bias": True, "activation_function": activation}))
        save_file({f"linear.{k}": v.contiguous() for k, v in linear.state_dict().items()},
                  str(root / "2_Dense" / "model.safetensors"))
    modules.append({"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"})
    (root / "modules.json").write_text(json.dumps(modules + (extra or [])))
    return bert, tokenizer, linear


def _mean(bert, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return bert(**tokenizer([text], return_tensors="pt")).last_hidden_state[0].mean(0)


def test_dense_after_pooling_is_applied_then_normalize(tmp_path):
    bert, tokenizer, linear = _st_folder(tmp_path)
    enc = TextEncoder(tmp_path)
    assert enc.dim == 6 and enc.token_dim == 16 and enc.normalize and enc.pooling == "mean"
    with torch.no_grad():
        expected = F.normalize(torch.tanh(linear(_mean(bert, tokenizer, "left lung"))), dim=-1)
    torch.testing.assert_close(enc.encode(["left lung"])[0], expected, atol=1e-5, rtol=1e-4)
    pooled, tokens = enc.encode_tokens(["right nodule"])
    assert pooled.shape == (1, 6) and tokens[0].shape == (4, 16)  # tokens: the model's own width


def test_a_model_kept_in_a_sub_folder_loads(tmp_path):
    bert, tokenizer, _ = _st_folder(tmp_path, subfolder="0_Transformer", dense=False)
    assert not (tmp_path / "config.json").exists()
    enc = TextEncoder(tmp_path)
    assert enc.dim == 16
    expected = F.normalize(_mean(bert, tokenizer, "right lung"), dim=-1)
    torch.testing.assert_close(enc.encode(["right lung"])[0], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("change, message", [
    ({"activation": "my_package.Swish"}, r"activation my_package\.Swish, which this project does not build"),
    ({"extra": [{"idx": 4, "name": "4", "path": "4_LSTM", "type": "sentence_transformers.models.LSTM"}]},
     r"'LSTM' module.*does not apply.*Transformer, Pooling, Dense and Normalize"),
])
def test_a_module_that_cannot_be_applied_is_refused_with_the_reason(tmp_path, change, message):
    _st_folder(tmp_path, **change)
    with pytest.raises(TextModelError, match=message):
        TextEncoder(tmp_path)


def test_dense_without_weights_or_an_unknown_pooling_is_refused(tmp_path):
    _st_folder(tmp_path / "a")
    (tmp_path / "a" / "2_Dense" / "model.safetensors").unlink()
    with pytest.raises(TextModelError, match=r"Dense module \(2_Dense/\) without its weights"):
        TextEncoder(tmp_path / "a")
    _st_folder(tmp_path / "b", dense=False)
    (tmp_path / "b" / "1_Pooling" / "config.json").write_text('{"pooling_mode_lasttoken": true}')
    with pytest.raises(TextModelError, match="pools its tokens by lasttoken"):
        TextEncoder(tmp_path / "b")
