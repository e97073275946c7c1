"""Keep only the report sentences that describe something present.

IU findings are mostly normal statements and negations ("No left pleural effusion."), and CLIP
reads 77 tokens and cuts the end, where the finding often is. This module splits a report into
sentences, labels each one

- "positive": describes a present (or possible) abnormality,
- "negated": what it mentions is negated ("No left pleural effusion."),
- "normal": a normal statement with no negation ("Lungs are clear."),

and keeps the positive ones. The rules are NegEx-style and data-driven: every behaviour is a
phrase list below, so a missed shape is fixed by adding a phrase, not code.

How a sentence is labelled:
1. Lower-case it, drop the `XXXX` anonymisation holes and a leading list number.
2. Rewrite pseudo-negations ("no change" -> "stable", "cannot be excluded" -> "possible"), so that
   they neither negate nor get lost.
3. Cut it into clauses at termination words ("but", "however", "although", ...) and before
   "there is/are": a negation never reaches past them.
4. In each clause, a pre-trigger ("no", "without", ...) negates the text after it, a post-trigger
   ("not seen", "resolved", ...) the text before it (or after it when nothing precedes it).
5. A clause is positive when the text outside every negation scope names a finding or an
   uncertainty; a clause with a negation is otherwise negated. A clause without negation is normal
   when it has a normal cue and no finding; unknown content counts as positive (dropping a real
   finding costs more than keeping a technique sentence).
6. A sentence is positive if any clause is, else negated if any clause is, else normal.

The module is pure Python and imports no other `helpers` module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

TEXT_MODES = ("raw", "positive")
# Raise when a change reads some report differently: an exported model records it, loading warns.
RULES_VERSION = 1
POSITIVE, NEGATED, NORMAL = "positive", "negated", "normal"

# --- Splitting ------------------------------------------------------------------------------------

# Candidate sentence ends: a run of . ! ? ; followed by whitespace, the end, or a capitalised word
# (reports glued as "effusion.No pneumothorax"), or a newline. A period inside a number ("1.2")
# is followed by a digit, so it never is a candidate.
_CANDIDATE_END = re.compile(r"[.!?;]+(?=\s|$|[A-Z][a-z])|\n")
# Words whose period is part of the word, not a sentence end (compared lower-case, no final period).
ABBREVIATIONS = frozenset({"e.g", "i.e", "approx", "vs", "dr", "cf", "fig", "mr", "mrs", "ms"})
_LIST_NUMBER = re.compile(r"\d{1,2}")  # "1. " ... "99. " opening a sentence
_DIGIT_AHEAD = re.compile(r"\s*\d")  # "No. 2"


def split_sentences(text: str) -> list[str]:
    """Splits report text into sentences, each keeping its final punctuation.

    Splits on . ! ? ; and newlines, but not inside decimals ("1.2 cm"), after an abbreviation of
    `ABBREVIATIONS`, after "No." before a digit, or after a list number ("1. Mild cardiomegaly."
    stays one sentence, number included). Whitespace runs become one space; pieces without a letter
    or digit (empty lines, a stray ".") are dropped.
    """
    sentences: list[str] = []
    start = 0
    for match in _CANDIDATE_END.finditer(text):
        if match.group() != "\n" and not _ends_sentence(text, start, match):
            continue
        _append_piece(sentences, text[start:match.end()])
        start = match.end()
    _append_piece(sentences, text[start:])
    return sentences


def _ends_sentence(text: str, start: int, match: re.Match[str]) -> bool:
    """Whether punctuation `match` ends the sentence that began at `start`."""
    if match.group() != ".":
        return True  # "?", "!", ";" and runs such as "..." always end a sentence
    before = text[start:match.start()]
    words = before.split()
    if not words:
        return True
    word = words[-1].lstrip("(").lower()
    if word in ABBREVIATIONS:
        return False
    if word == "no" and _DIGIT_AHEAD.match(text, match.end()):
        return False
    # A list number is the first word of its sentence; a number ending a sentence is not.
    return not (len(words) == 1 and _LIST_NUMBER.fullmatch(word))


def _append_piece(sentences: list[str], piece: str) -> None:
    piece = " ".join(piece.split())
    if any(char.isalnum() for char in piece):
        sentences.append(piece)


# --- Phrase lists -------------------------------------------------------------------------------
# Phrases are lower-case regular expressions matched on whole words.

# Rewritten before anything else. "No change in the opacity" asserts the opacity; "stable" keeps
# the statement normal when no finding follows ("No interval change."). "Cannot be excluded" is
# uncertainty, not negation.
PSEUDO_NEGATIONS: tuple[tuple[str, str], ...] = (
    (r"(?:no|without) (?:(?:significant|appreciable|interval|definite) )*"
     r"(?:change|increase|decrease|worsening)", "stable"),
    (r"not (?:significantly )?changed", "stable"),
    (r"(?:cannot|can not|could not|not) (?:be )?(?:excluded|ruled out)", "possible"),
    (r"(?:cannot|can not) (?:exclude|rule out)", "possible"),
    (r"not only", ""),
)

# Negate the words after them, up to the end of the clause. Phrases that "no" already covers
# ("no evidence of", "there is no") are listed to document what is handled.
PRE_TRIGGERS: tuple[str, ...] = (
    "no evidence of", "no definite", "no", "without", "negative for", "free of", "clear of",
    "there is no", "there are no", "absence of", "resolution of", "rather than", "neither",
    "nor", "not", "never",
)
# Negate the words before them; at the start of a clause ("Resolved pneumonia.") the words after.
POST_TRIGGERS: tuple[str, ...] = (
    "not seen", "not identified", "not visualized", "not present", "not appreciated",
    "not demonstrated", "not evident", "not detected", "absent", "resolved", "cleared",
    "ruled out",
)
# End a negation scope: the conjunction is dropped and a new clause starts after it.
TERMINATION_WORDS: tuple[str, ...] = (
    "but", "however", "although", "though", "except", "aside from", "apart from", "yet",
    "whereas", "while", "nevertheless",
)
# Start a new clause (kept in it): "No effusion, there is right basilar atelectasis."
CLAUSE_STARTS: tuple[str, ...] = ("there is", "there are", "there has been", "there have been")

# A hedged finding is still a finding.
UNCERTAINTY_CUES: tuple[str, ...] = (
    "possible", "possibly", "probable", "probably", "likely", "may represent", "may be",
    "could represent", "could be", "might represent", "suspicious for", "suspected",
    "concerning for", "suggestive of", "suggests", "questionable", "equivocal", "differential",
    "versus", "vs",
)
# Word starts of abnormal findings (and devices/postsurgical change, which are present too).
FINDING_STEMS: tuple[str, ...] = (
    "opaci", "density", "densities", "consolidat", "infiltra", "pneumoni", "atelecta", "edema",
    "congest", "effusion", "pneumothora", "nodul", "mass", "lesion", "granulom", "calcif",
    "scar", "fibro", "emphysem", "copd", "hyperinfl", "hyperexpan", "hyperlucen", "flatten",
    "cardiomegal", "enlarg", "tortu", "ectat", "ectasi", "aneurysm", "fractur", "deformit",
    "degenerat", "spondyl", "osteophyt", "kyphos", "kyphot", "scolio", "hernia", "collaps",
    "cavit", "cyst", "bulla", "bleb", "thicken", "blunt", "elevat", "promin", "widen",
    "increased", "decreased", "interstitial", "airspace", "reticul", "streak", "patchy", "hazy",
    "haziness", "abnormal", "disease", "adenopath", "lymphadenopath", "metasta", "tumor",
    "shift", "sternotomy", "catheter", "tube", "pacemaker", "wire", "clip", "low lung volume",
    "volume loss",
)
# Normal statements (and non-findings such as the comparison or the views).
NORMAL_CUES: tuple[str, ...] = (
    "normal", "normally", "unremarkable", "clear", "intact", "within normal limits", "stable",
    "unchanged", "well expanded", "well-expanded", "well aerated", "well-aerated",
    "well inflated", "well-inflated", "midline", "negative", "preserved", "maintained",
    "satisfactory", "appropriate", "comparison", "views? of the chest",
    "radiographs? of the chest", "sharp", "well defined", "well-defined",
)
# Word starts of the findings a mask outlines in the lung fields (FINDING_STEMS also holds the
# heart, the bones, devices, ...): a sentence that names none ("Mild cardiomegaly.", "Sternotomy
# wires are intact.") describes no lesion such a mask marks.
LESION_STEMS: tuple[str, ...] = (
    "opaci", "density", "densities", "consolidat", "infiltra", "pneumoni", "atelecta", "edema",
    "effusion", "pneumothora", "nodul", "mass", "lesion", "granulom", "scar", "fibro", "cavit",
    "airspace", "reticul", "streak", "patchy", "hazy", "haziness", "bulla", "bleb", "collaps",
    "abscess", "tumor", "metasta", "blunt", "thicken",
)
# Words that carry no content: a clause made only of them says nothing.
FILLER_WORDS = frozenset(
    "a an the is are was were be been being of in on at to and or with for there this that it "
    "its has have had also seen noted identified again otherwise".split())


def _alternation(phrases: tuple[str, ...], prefix: bool = False) -> str:
    """One regex alternative per phrase, longest first so that "not seen" beats "not"."""
    ordered = sorted(phrases, key=len, reverse=True)
    tail = r"\w*" if prefix else r"\b"
    return r"\b(?:" + "|".join(ordered) + ")" + tail


_PSEUDO = [(re.compile(rf"\b{pattern}\b"), replacement)
           for pattern, replacement in PSEUDO_NEGATIONS]
# Post-triggers first: at one position "not seen" must win over the pre-trigger "not".
_TRIGGER = re.compile(rf"(?P<post>{_alternation(POST_TRIGGERS)})"
                      rf"|(?P<pre>{_alternation(PRE_TRIGGERS)})")
_CLAUSE_BREAK = re.compile(rf"{_alternation(TERMINATION_WORDS)}|(?={_alternation(CLAUSE_STARTS)})")
_UNCERTAIN = re.compile(_alternation(UNCERTAINTY_CUES))
_FINDING = re.compile(_alternation(FINDING_STEMS, prefix=True))
_NORMAL = re.compile(_alternation(NORMAL_CUES))
_LESION = re.compile(_alternation(LESION_STEMS, prefix=True))
_HOLE = re.compile(r"\bx{2,}\b")  # anonymisation holes ("XXXX")
_LEADING_NUMBER = re.compile(r"^\s*\d{1,2}\.\s+")
_NUMBER_ABBREVIATION = re.compile(r"\bno\.\s*(?=\d)")  # "No. 2" is a number, not a negation
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


# --- Labelling ------------------------------------------------------------------------------------

def sentence_status(sentence: str) -> str:
    """Labels one sentence "positive", "negated" or "normal" (see the module docstring)."""
    statuses = [_clause_status(clause) for clause in _clauses(_normalise(sentence))]
    if POSITIVE in statuses:
        return POSITIVE
    if NEGATED in statuses:
        return NEGATED
    return NORMAL


def _normalise(sentence: str) -> str:
    text = _LEADING_NUMBER.sub("", sentence.lower())
    text = _NUMBER_ABBREVIATION.sub("number ", text)
    text = _HOLE.sub(" ", text)
    for pattern, replacement in _PSEUDO:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def _clauses(text: str) -> list[str]:
    return [clause.strip() for clause in _CLAUSE_BREAK.split(text) if clause.strip()]


def _clause_status(clause: str) -> str | None:
    """"positive", "negated", "normal", or None for a clause without content."""
    triggers = list(_TRIGGER.finditer(clause))
    outside = _outside_negation(clause, triggers)
    if _UNCERTAIN.search(outside) or _FINDING.search(outside):
        return POSITIVE
    if triggers:
        return NEGATED
    if _NORMAL.search(clause):
        return NORMAL
    return POSITIVE if _has_content(clause) else None


def _outside_negation(clause: str, triggers: list[re.Match[str]]) -> str:
    """The clause with every trigger and the text it negates blanked out."""
    negated = [False] * len(clause)
    for trigger in triggers:
        is_post = trigger.group("post") is not None
        if is_post and _has_content(clause[:trigger.start()]):
            scope = range(0, trigger.end())
        else:  # a pre-trigger, or a post-trigger opening the clause ("Resolved pneumonia.")
            scope = range(trigger.start(), len(clause))
        for index in scope:
            negated[index] = True
    return "".join(" " if gone else char for char, gone in zip(clause, negated))


def names_lesion(sentence: str) -> bool:
    """Whether `sentence` names a lung lesion (`LESION_STEMS`) outside any negation."""
    return any(_LESION.search(_outside_negation(clause, list(_TRIGGER.finditer(clause))))
               for clause in _clauses(_normalise(sentence)))


# Every finding term a sentence may name: the findings, then the lesion words they lack.
FINDING_TERMS: tuple[str, ...] = tuple(dict.fromkeys(FINDING_STEMS + LESION_STEMS))
_TERM = re.compile(_alternation(FINDING_TERMS, prefix=True))
_BY_LENGTH = sorted(FINDING_TERMS, key=len, reverse=True)


def finding_terms(sentence: str) -> list[str]:
    """The `FINDING_TERMS` that `sentence` names outside any negation, each once, in order:
    "Patchy opacity at the left base, no effusion." -> ["patchy", "opaci"]."""
    found = [next(t for t in _BY_LENGTH if match.group().startswith(t)) for clause in _clauses(_normalise(sentence))
             for match in _TERM.finditer(_outside_negation(clause, list(_TRIGGER.finditer(clause))))]
    return list(dict.fromkeys(found))


def _has_content(text: str) -> bool:
    return any(word not in FILLER_WORDS for word in _WORD.findall(text))


# --- Selection ------------------------------------------------------------------------------------

@dataclass
class SentenceSelection:
    """The sentences given to the model (`kept`) and the others (`dropped`).

    `fallback` is True when no sentence was positive and all of them were kept instead.
    """
    kept: list[str]
    dropped: list[str] = field(default_factory=list)
    fallback: bool = False

    @property
    def text(self) -> str:
        return " ".join(self.kept)


def select_sentences(text: str) -> SentenceSelection:
    """Keeps the positive sentences of `text`.

    When none is positive (an all-normal report), every sentence is kept and `fallback` is set:
    the model must never get an empty string, and a normal report is best described by its own
    words. Only an input without any sentence gives an empty selection.
    """
    kept: list[str] = []
    dropped: list[str] = []
    for sentence in split_sentences(text):
        (kept if sentence_status(sentence) == POSITIVE else dropped).append(sentence)
    if not kept:
        return SentenceSelection(kept=dropped, dropped=[], fallback=True)
    return SentenceSelection(kept=kept, dropped=dropped, fallback=False)


def label_sentences(text: str) -> list[tuple[str, str]]:
    """Every sentence of `text` with its label, in order: (sentence, "positive" | "negated" |
    "normal"). Unlike `select_sentences` there is no fallback: an all-normal report has no
    positive sentence."""
    return [(sentence, sentence_status(sentence)) for sentence in split_sentences(text)]


def select_text(text: str, mode: str = "raw") -> str:
    """The text given to the encoder: "raw" (whitespace normalised) or "positive" sentences."""
    if mode == "raw":
        return " ".join(text.split())
    if mode == "positive":
        return select_sentences(text).text
    raise ValueError(f"unknown text mode {mode!r}; valid modes: {', '.join(TEXT_MODES)}")


NOTHING_DESCRIBED = "No acute cardiopulmonary abnormality."
NO_FINDING_NOTE = "no abnormal finding described"  # shown beside a mask whose report has none


def describes_finding(text: str) -> bool:
    """Whether `text` has a positive sentence: something present for the model to locate."""
    selection = select_sentences(text)
    return bool(selection.kept) and not selection.fallback


def split_by_lesion(text: str) -> tuple[str, str] | None:
    """(the sentence that names the lesion, the other positive sentences joined) of `text`, when
    exactly one positive sentence names a lung lesion (`names_lesion`) and at least one other is
    positive: "Mild cardiomegaly. Patchy opacity at the left base." -> ("Patchy opacity at the
    left base.", "Mild cardiomegaly."). None otherwise: which sentence a mask belongs to is then
    not known from the words."""
    positive = [s for s, label in label_sentences(text) if label == POSITIVE]
    lesions = [s for s in positive if names_lesion(s)]
    if len(lesions) != 1 or len(positive) < 2:
        return None
    return lesions[0], " ".join(s for s in positive if s != lesions[0])


def null_text(text: str) -> str:
    """A report that describes nothing present, made from `text`: its normal and negated sentences
    (`NOTHING_DESCRIBED` when it has none). Training pairs it with an empty mask, so that a normal
    report gives an empty mask."""
    selection = select_sentences(text)
    dropped = selection.kept if selection.fallback else selection.dropped
    return " ".join(dropped) or NOTHING_DESCRIBED
