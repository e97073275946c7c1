"""Places: the words that name where a finding lies, and the place code the model reads.

The words: "left"/"right" (`swap_sides`, `names_side`: the patient's sides, `core.anatomy`) and the
levels of a lung ("upper"/"lower", "apex"/"base", ...: `swap_levels`, `names_level`). `place_code`
turns them into flags (right, left, upper, middle, lower) for the model's place prior
(`fusion.PlacePrior`); the model's text input is the text's embedding with that code at its end
(`text_input`, `split_text_input`: the one definition of that packing). The copies of a lesion at
another place, which these words ask for, are pixels: `training.paste`.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch

from ..core.anatomy import SIDES, other_side
from .sentences import names_lesion, split_sentences

# The version of the place words (`place_code` and the side and level words it reads): raise it when
# a change gives some text another code. An exported model records it; loading it under another warns.
RULES_VERSION = 1
_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_BOTH = re.compile(r"\b(bilateral(ly)?|both|bibasilar|bibasal|biapical)\b", re.IGNORECASE)


def _swap_word(match: re.Match) -> str:
    word = match.group(0)
    other = other_side(word.lower())
    if word.isupper():
        return other.upper()
    return other.capitalize() if word[0].isupper() else other


def swap_sides(text: str) -> str:
    """Exchange the words "left" and "right", keeping their case ("Left" -> "Right")."""
    return _SIDE.sub(_swap_word, text)


def names_side(text: str) -> str | None:
    """The side a text names: "left", "right", "both" (both words, or "bilateral"/"both"),
    or None."""
    sides = {m.lower() for m in _SIDE.findall(text)}
    if len(sides) == 2 or _BOTH.search(text):
        return "both"
    return sides.pop() if sides else None


# Levels: the words that place a finding high or low in a lung, each with its opposite. Words of
# the middle ("perihilar", "lingula") have none: a text that uses them names no swappable level.
_LEVEL_OPPOSITE = {"upper": "lower", "apex": "base", "apices": "bases", "apical": "basilar",
                   "suprahilar": "infrahilar", "biapical": "bibasilar"}
_UPPER_WORDS = frozenset(_LEVEL_OPPOSITE)
_LEVEL_OPPOSITE.update({low: high for high, low in list(_LEVEL_OPPOSITE.items())}, basal="apical",
                       bibasal="biapical")
_LEVEL = re.compile(rf"\b({'|'.join(sorted(_LEVEL_OPPOSITE, key=len, reverse=True))})\b", re.IGNORECASE)
_MIDDLE = re.compile(r"\b(middle|mid|midlung|mid-lung|perihilar|parahilar|hilar|hilum|lingula|lingular)\b",
                     re.IGNORECASE)


_LOW_ONLY = re.compile(r"\b(costophrenic|(hemi)?diaphragms?|retrocardiac)\b", re.IGNORECASE)


def _swap_level(match: re.Match) -> str:
    word = match.group(0)
    other = _LEVEL_OPPOSITE[word.lower()]
    if word.isupper():
        return other.upper()
    return other.capitalize() if word[0].isupper() else other


def swap_levels(text: str) -> str:
    """Exchange the words of the upper and the lower lung ("upper" <-> "lower", "apex" <-> "base",
    "apical" <-> "basilar", ...), keeping their case."""
    return _LEVEL.sub(_swap_level, text)


def names_level(text: str) -> str | None:
    """The level a text names: "upper", "lower", "mixed" (both, or a word of the middle), or None."""
    levels = {"upper" if w.lower() in _UPPER_WORDS else "lower" for w in _LEVEL.findall(text)}
    if len(levels) == 2 or (levels and _MIDDLE.search(text)):
        return "mixed"
    return levels.pop() if levels else None


# The place code: what a text says of where its finding lies, one flag per entry. Sides are the
# patient's (the radiological convention puts the patient's right on the image's left).
PLACE_CODE = (*SIDES, "upper", "middle", "lower")


def levels_named(text: str) -> set[str]:
    """The levels of a lung a text names: a subset of {"upper", "middle", "lower"}."""
    found = {"upper" if w.lower() in _UPPER_WORDS else "lower" for w in _LEVEL.findall(text)}
    if _MIDDLE.search(text):
        found.add("middle")
    if _LOW_ONLY.search(text):
        found.add("lower")
    return found


def place_code(texts: list[str], drawn: Callable[[str], bool] | None = None) -> torch.Tensor:
    """float32 [N, 5]: for each text, which of `PLACE_CODE` it names (1) or not (0). "Both sides"
    ("bilateral", "bibasilar", "left and right") sets both sides; a text naming no place is all 0.

    Only the sentences that describe a finding the masks draw count (`drawn`: the masks'
    vocabulary, `vocabulary.MaskVocabulary.describes_drawn`; None: the lung lesions,
    `sentences.names_lesion`): "Healed right rib fracture." names a side, but not of anything a
    mask marks, and a text made only of such sentences points nowhere."""
    drawn = drawn or names_lesion
    code = torch.zeros(len(texts), len(PLACE_CODE))
    for row, text in zip(code, texts):
        text = " ".join(s for s in split_sentences(text) if drawn(s))
        side, levels = names_side(text), levels_named(text)
        named = ({"right", "left"} if side == "both" else {side} if side else set()) | levels
        row[[i for i, name in enumerate(PLACE_CODE) if name in named]] = 1.0
    return code


# The model's text input: a text's embedding [D] and, for a model with a place prior, its place
# code [5] at the end. Built by `text.encoders.EmbeddingCache`, read by `model.unet.MultimodalUnet`.

def text_input_dim(text_dim: int, places: bool) -> int:
    """Width of the model's text input for embeddings of `text_dim` (with the place code or not)."""
    return text_dim + (len(PLACE_CODE) if places else 0)


def text_input(emb: torch.Tensor, texts: Sequence[str], places: bool,
               drawn: Callable[[str], bool] | None = None) -> torch.Tensor:
    """The model's text input: float32 [N, D] embeddings of `texts` -> [N, `text_input_dim`], each
    row the embedding, then (with `places`) the text's place code (`drawn`: see `place_code`)."""
    return torch.cat([emb, place_code(list(texts), drawn)], 1) if places else emb


def split_text_input(x: torch.Tensor, text_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, `text_input_dim`] -> (the embeddings [N, text_dim], the place codes [N, 5], or [N, 0]
    without them)."""
    return x[:, :text_dim], x[:, text_dim:]
