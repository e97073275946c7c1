"""Text encoders and the embedding cache (helpers/text/encoders.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizerFast,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
)

from helpers.core.settings import TINY_TEXT_MODEL
from helpers.text.encoders import (
    TINY_MARKER,
    EmbeddingCache,
    TextEncoder,
    TextModelError,
    load_text_encoder,
)
from tests.text import DIM, REPORT


def save_full_clip(tiny_dir, dest, projection_dim: int) -> CLIPModel:
    """A full CLIP checkpoint (model_type "clip", like openai/clip-vit-base-patch32)."""
    text = CLIPTextConfig.from_pretrained(tiny_dir).to_dict()
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 16}
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision,
                                 projection_dim=projection_dim)).eval()
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(dest)
    return model


def save_tiny_bert(dest) -> tuple[BertModel, BertTokenizerFast]:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "left", "right", "lung", "nodule"]
    (dest / "vocab.txt").write_text("\n".join(words))
    tokenizer = BertTokenizerFast(str(dest / "vocab.txt"))
    tokenizer.save_pretrained(dest)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=40)).eval()
    bert.save_pretrained(dest)
    return bert, tokenizer


def test_encode_shape_dtype_and_frozen(encoder):
    emb = encoder.encode(["right upper lobe nodule", "left pleural effusion", "normal chest"])
    assert emb.shape == (3, DIM) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert not emb.requires_grad
    assert not any(p.requires_grad for p in encoder.model.parameters())
    assert encoder.encode([]).shape == (0, DIM)
    assert encoder.is_tiny and encoder.dim == DIM and encoder.max_length == 77


def test_encoding_does_not_depend_on_batch_or_padding(tiny_dir):
    small_batches = TextEncoder(tiny_dir, batch_size=1)
    texts = ["nodule", REPORT, "left lower lobe opacity"]
    torch.testing.assert_close(small_batches.encode(texts), TextEncoder(tiny_dir).encode(texts))


def test_count_tokens_and_truncation(encoder):
    assert encoder.count_tokens(["nodule in the right upper lobe"]) == [8]  # + start and end
    assert encoder.count_tokens([REPORT])[0] <= 45  # a 30-word report fits CLIP's 77 easily
    long_text = " ".join(["small nodule"] * 60)
    assert encoder.count_tokens([long_text]) == [122]
    before = encoder.n_truncated
    emb = encoder.encode([long_text, "short"])
    assert encoder.n_truncated == before + 1
    assert emb.shape == (2, DIM) and torch.isfinite(emb).all()


def test_full_clip_checkpoint_gives_projected_text_embeds(tiny_dir, tmp_path):
    clip = save_full_clip(tiny_dir, tmp_path, projection_dim=DIM)
    enc = TextEncoder(tmp_path)
    assert enc.is_clip and not enc.is_tiny and enc.dim == DIM
    texts = ["left lung", "right upper lobe nodule"]
    inputs = enc.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = clip.text_projection(clip.text_model(**inputs).pooler_output)
    torch.testing.assert_close(enc.encode(texts), expected)


def test_bert_like_model_is_mean_pooled_over_real_tokens(tmp_path):
    bert, tokenizer = save_tiny_bert(tmp_path)
    enc = TextEncoder(tmp_path)
    assert not enc.is_clip and enc.dim == 16 and enc.max_length == 40 and enc.pooling == "mean"
    texts = ["left lung", "right nodule nodule"]  # 4 and 5 tokens: the first is padded
    with torch.no_grad():
        states = [bert(**tokenizer([t], return_tensors="pt")).last_hidden_state[0] for t in texts]
    expected = torch.stack([s.mean(0) for s in states])  # by hand, each text alone, no padding
    torch.testing.assert_close(enc.encode(texts), expected, atol=1e-5, rtol=1e-4)
    assert enc.count_tokens(texts) == [4, 5]
    pooled, tokens = enc.encode_tokens(texts)
    assert [t.shape for t in tokens] == [(4, 16), (5, 16)]
    torch.testing.assert_close(tokens[0], states[0], atol=1e-5, rtol=1e-4)


def test_sentence_transformers_config_is_honoured(tmp_path):
    bert, tokenizer = save_tiny_bert(tmp_path)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        '{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}')
    (tmp_path / "modules.json").write_text(
        '[{"idx": 0, "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 2, "type": "sentence_transformers.models.Normalize"}]')
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 4}')
    enc = TextEncoder(tmp_path)
    assert enc.pooling == "cls" and enc.normalize and enc.max_length == 4
    with torch.no_grad():
        cls = bert(**tokenizer(["left lung"], return_tensors="pt")).last_hidden_state[:, 0]
    torch.testing.assert_close(enc.encode(["left lung"]), F.normalize(cls, dim=-1), atol=1e-5,
                               rtol=1e-4)
    report = enc.truncation_report(["left lung", "right nodule nodule", "left left left left lung"])
    assert report["n_truncated"] == 2 and report["mean_tokens_lost"] == 2.0  # 5 -> 4, 7 -> 4


def test_unloadable_model_raises_text_model_error(tiny_dir, tmp_path):
    with pytest.raises(TextModelError, match="could not be loaded.*tiny"):
        TextEncoder(tmp_path)  # a folder without config.json
    save_full_clip(tiny_dir, tmp_path / "bad", projection_dim=DIM // 2)  # text half mismatches
    with pytest.raises(TextModelError, match="could not be loaded"):
        TextEncoder(tmp_path / "bad")


def test_load_text_encoder_builds_tiny_model(tmp_path):
    enc = load_text_encoder(TINY_TEXT_MODEL, cache_dir=tmp_path / "tiny")
    assert enc.is_tiny and (tmp_path / "tiny" / TINY_MARKER).is_file()
    assert enc.encode(["left"]).shape == (1, enc.dim)


def test_embedding_cache_encodes_each_text_once(encoder, tmp_path):
    path = tmp_path / "emb.pt"
    cache = EmbeddingCache(encoder, path)
    texts = ["left effusion", "right nodule", "left effusion", "normal", "right nodule"]
    emb = cache.get(texts)
    assert cache.n_encoded == 3
    torch.testing.assert_close(emb, encoder.encode(texts))
    table, index = cache.table(texts + ["new text"])
    assert cache.n_encoded == 4 and table.shape == (4, DIM)
    assert index == [0, 1, 0, 2, 1, 3]
    torch.testing.assert_close(table[index[:5]], emb)
    cache.save()

    reloaded = EmbeddingCache(encoder, path)
    torch.testing.assert_close(reloaded.get(texts), emb)
    assert reloaded.n_encoded == 0 and len(reloaded) == 4


def test_embedding_cache_ignores_other_models_file(encoder, tmp_path):
    path = tmp_path / "emb.pt"
    cache = EmbeddingCache(encoder, path)
    cache.get(["left"])
    cache.save()
    other = SimpleNamespace(name="other-model", dim=DIM, encode=lambda t: torch.zeros(len(t), DIM))
    other_cache = EmbeddingCache(other, path)
    assert len(other_cache) == 0
    assert other_cache.get(["left"]).abs().sum() == 0 and other_cache.n_encoded == 1


def test_embedding_cache_ignores_corrupt_file(encoder, tmp_path):
    path = tmp_path / "emb.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="corrupt"):
        cache = EmbeddingCache(encoder, path)
    assert len(cache) == 0
    with pytest.raises(ValueError, match="no file"):
        EmbeddingCache(encoder).save()


def test_demo_falls_back_to_the_tiny_model_when_the_hub_is_unreachable(tmp_path, monkeypatch, capsys):
    import helpers.text.encoders as text

    monkeypatch.setattr(text, "hub_reachable", lambda timeout=3.0: False)
    encoder = text.load_text_encoder("openai/clip-vit-base-patch32", cache_dir=tmp_path, fallback=True)
    assert encoder.is_tiny
    assert "tiny offline CLIP" in capsys.readouterr().out


def test_embedding_cache_keeps_tokens_padded_with_a_mask(encoder, tmp_path):
    path = tmp_path / "emb.pt"
    cache = EmbeddingCache(encoder, path, with_tokens=True)
    texts = ["nodule", "small nodule in the right upper lobe"]
    tokens, mask = cache.tokens(texts)
    lengths = encoder.count_tokens(texts)
    assert tokens.shape == (2, max(lengths), encoder.token_dim)
    assert mask.sum(1).tolist() == lengths and (tokens[0, lengths[0]:] == 0).all()
    cache.save()
    again = EmbeddingCache(encoder, path, with_tokens=True)
    torch.testing.assert_close(again.tokens(texts)[0], tokens)
    assert again.n_encoded == 0
    with pytest.raises(ValueError, match="with_tokens"):
        EmbeddingCache(encoder).tokens(texts)


def test_sentence_transformers_settings_are_read_for_a_hub_name(tmp_path, monkeypatch):
    """A hub name such as sentence-transformers/all-MiniLM-L6-v2 gets its pooling, normalisation
    and length from the repository's files, read through hf_hub_download (faked: the hub's files
    are served from a folder; the model itself loads from that folder)."""
    import helpers.text.encoders as text
    import helpers.text.st_modules as st_modules

    hub = tmp_path / "hub"
    hub.mkdir()
    bert, tokenizer = save_tiny_bert(hub)
    (hub / "1_Pooling").mkdir()
    (hub / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (hub / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},'
        ' {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]')
    (hub / "sentence_bert_config.json").write_text('{"max_seq_length": 5}')
    name = "sentence-transformers/all-MiniLM-L6-v2"
    asked = []

    def fake_download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        if not (hub / filename).is_file():
            raise FileNotFoundError(filename)  # the hub's EntryNotFoundError
        return str(hub / filename)

    real_load = text._load_pretrained
    monkeypatch.setattr(st_modules, "hf_hub_download", fake_download)
    monkeypatch.setattr(text, "_load_pretrained", lambda n, revision=None, sub="":
                        real_load(str(hub) if n == name else n, revision, sub))
    enc = TextEncoder(name)
    assert (enc.name, enc.pooling, enc.normalize, enc.max_length) == (name, "mean", True, 5)
    assert (name, "modules.json") in asked and (name, "1_Pooling/config.json") in asked
    out = enc.encode(["left lung", "right nodule"])
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    assert enc.truncation_report(["left left left left lung"])["n_truncated"] == 1


def test_a_model_that_needs_hub_code_fails_with_the_reason(tmp_path):
    """CXR-BERT's configuration needs trust_remote_code: no prompt, an error that says why."""
    (tmp_path / "config.json").write_text(
        '{"model_type": "cxr-bert", "architectures": ["CXRBertModel"], "auto_map": '
        '{"AutoConfig": "configuration_cxrbert.CXRBertConfig", "AutoModel": "modeling_cxrbert.CXRBertModel"}}')
    with pytest.raises(TextModelError, match=r"needs its own code.*trust_remote_code.*CXR-BERT.*"
                                             r"not a dataclass.*all-MiniLM-L6-v2"):
        TextEncoder(tmp_path)
