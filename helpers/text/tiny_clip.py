"""The tiny offline CLIP text model: random weights, a BPE tokenizer trained on radiology words.

Without the model hub (CI, offline demo) `make_tiny_clip` builds it and saves it with
`save_pretrained`, so that it loads through the same `from_pretrained` path as the real
`openai/clip-vit-base-patch32`. It can show that a model reads a text, never how well the real
encoder works: it has not learned that "basilar" is near "base".
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import tokenizers
import torch
import transformers
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizerFast
from transformers.utils import logging as hf_logging

CLIP_MAX_LENGTH = 77
BOS, EOS, END_OF_WORD = "<|startoftext|>", "<|endoftext|>", "</w>"
TINY_MARKER = "tiny_clip.json"

# CLIP's word splitting (transformers' CLIPTokenizer): specials, contractions, letters, single
# digits, punctuation runs.
_CLIP_SPLIT = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
               r"|[^\s\p{L}\p{N}]+")

# Words of chest X-ray reports, so that each is one token of the tiny tokenizer.
RADIOLOGY_WORDS = """
left right upper middle lower lobe lobes lung lungs base bases apex apical basilar basal lingula
hilum hilar perihilar mediastinum mediastinal cardiomediastinal silhouette contour contours heart
cardiac size normal abnormal enlarged enlargement mild mildly moderate moderately severe small
large tiny stable unchanged new old prior previous interval improved worsened increased decreased
nodule nodules mass masses opacity opacities opacification consolidation consolidations
infiltrate infiltrates effusion effusions pleural pleura pneumothorax pneumonia atelectasis
atelectatic cardiomegaly edema congestion vascular vasculature pulmonary granuloma granulomas
granulomatous calcified calcification calcifications scarring scar fibrosis fibrotic emphysema
hyperinflation hyperinflated hyperexpanded interstitial airspace disease process focal diffuse
patchy streaky linear bibasilar bilateral bilaterally unilateral lateral frontal view views chest
pa ap thoracic spine vertebral osseous structures bony bones rib ribs fracture fractures
degenerative changes change spondylosis osteophytes sternotomy wires clips surgical postsurgical
aorta aortic arch tortuous tortuosity ectatic knob diaphragm hemidiaphragm
hemidiaphragms costophrenic angle angles blunting blunted trachea midline shift deviation
zone zones region regions field fields side sides segment segmental adjacent overlying
projecting projects within limits clear clearing well expanded aerated inflated acute
cardiopulmonary abnormality abnormalities finding findings evidence suspicious concerning
consistent compatible suggestive likely possible possibly probable may represent suggest
suggests noted seen identified visualized demonstrated present absent again redemonstrated
there is are was were no not without with and or of in the a an at to on by for from this
these that which also but as be been has have otherwise minimal minimally slight slightly
borderline top upper-normal low volumes volume lucency density densities shadow shadows
catheter tube line pacemaker device leads port tip terminates cavoatrial junction
superior vena cava atrium ventricle subsegmental bronchovascular crowding markings marking
thickening thickened peribronchial bronchial bronchiectasis airway airways nodular reticular
reticulonodular miliary hazy haziness ill-defined well-defined rounded round oval lesion
lesions cm mm measuring measures approximately about quadrant axillary retrocardiac
paratracheal subcarinal lymph node nodes lymphadenopathy adenopathy soft tissue tissues
abdomen upper-abdomen gas free subdiaphragmatic hernia hiatal elevated elevation
eventration obscured obscuring silhouetting infection inflammatory malignancy neoplasm
recommend recommended follow-up followup ct comparison compared dated exam examination
radiograph radiographs film films portable upright supine technique rotation rotated
patient bone normally show shows demonstrates appear appears appearance unremarkable intact
negative grossly chronic healed status post cholecystectomy vascularity definite since
""".split()



@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars for a while: loading CLIP's text half
    from a full CLIP checkpoint lists every unused vision weight."""
    verbosity = hf_logging.get_verbosity()
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()


def make_tiny_clip(dest: str | Path, corpus: Sequence[str] | None = None, *,
                   hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                   projection_dim: int = 128, vocab_size: int = 2000, seed: int = 0) -> Path:
    """Build a tiny random-weight CLIP text model and its tokenizer in `dest`, offline.

    The tokenizer is a CLIP byte-level BPE (lowercase, `</w>` word ends, `<|startoftext|>` and
    `<|endoftext|>`) trained on `corpus` and `RADIOLOGY_WORDS`, so report words are mostly single
    tokens. Both are written with `save_pretrained` and load with `AutoTokenizer` and
    `CLIPTextModelWithProjection.from_pretrained(dest)`. Nothing is rebuilt when `dest` already
    holds a model made with the same arguments, corpus and library versions (recorded in
    `tiny_clip.json`, written last).

    Returns:
        `dest` as a Path.
    """
    dest = Path(dest)
    corpus = list(corpus or [])
    spec = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
            "projection_dim": projection_dim, "vocab_size": vocab_size, "seed": seed,
            "corpus_sha1": hashlib.sha1("\n".join(corpus).encode()).hexdigest(),
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    marker = dest / TINY_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # until the new model is complete
    (dest / "tokenizer.json").unlink(missing_ok=True)  # would be read instead of the new vocab

    vocab, merges = _train_clip_bpe(corpus + RADIOLOGY_WORDS, vocab_size)
    (dest / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                     encoding="utf-8")
    with quiet_transformers():
        tokenizer = CLIPTokenizerFast.from_pretrained(dest, model_max_length=CLIP_MAX_LENGTH)
        tokenizer.save_pretrained(dest)

    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=projection_dim,
        # pooling reads the hidden state at the first eos_token_id (any id but the legacy 2)
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    with torch.random.fork_rng(devices=[]), quiet_transformers():  # the caller's draws stay its own
        torch.manual_seed(seed)
        CLIPTextModelWithProjection(config).save_pretrained(dest)
    marker.write_text(json.dumps(spec, indent=1))
    return dest


def _train_clip_bpe(texts: Sequence[str], vocab_size: int) -> tuple[dict[str, int], list[str]]:
    """Train byte-level BPE merges the way CLIP splits words; return CLIP's vocab layout.

    The vocab holds every byte symbol alone and with `</w>` (no text maps to an unknown token,
    which in CLIP is the end token and would end the sequence), then the merges in order, then
    `<|startoftext|>` and `<|endoftext|>`.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    base = alphabet + [c + END_OF_WORD for c in alphabet]
    n_merges = vocab_size - len(base) - 2
    if n_merges < 1:
        raise ValueError(f"vocab_size must exceed {len(base) + 2} (the byte symbols and the two "
                         f"special tokens), got {vocab_size}")
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(),
                                           normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=len(base) + n_merges, initial_alphabet=alphabet,
                                  end_of_word_suffix=END_OF_WORD, show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    merges = [m if isinstance(m, str) else " ".join(m)  # tokenizers < 0.20 stores "a b" strings
              for m in json.loads(bpe.to_str())["model"]["merges"]][:n_merges]
    tokens = list(dict.fromkeys(base + [m.replace(" ", "") for m in merges] + [BOS, EOS]))
    return {token: i for i, token in enumerate(tokens)}, merges

