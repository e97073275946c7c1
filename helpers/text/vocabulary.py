"""What the masks draw, learned from the labeled cases: the masks' vocabulary.

Which findings a dataset's masks outline is not documented (lung lesions only? the heart for
cardiomegaly?), so it is read off the training cases. For each finding term of the positive report
sentences (`sentences.FINDING_TERMS`) two kinds of evidence count:

- **alone**: the report's positive sentences all name the term; the mask is non-empty (drawn) or
  empty (not drawn);
- **placed**: the sentence that names the term points to a place (`sentence_place`: the heart, or
  a side and level of the lungs); no pixel of the mask there says "not drawn", a connected part of
  the mask whose centroid lies there and in no other sentence's place says "drawn".

A term with `MIN_EVIDENCE` cases or more, at least `DRAWN_SHARE` of them one way, is "drawn" or
"not drawn"; any other falls back to the rule the demo was built on (`sentences.LESION_STEMS`: the
lung lesions drawn, everything else not) and says so. A sentence describes a drawn finding when it
names a drawn term (`MaskVocabulary.describes_drawn`). Places: `regions`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..data.io import load_masks
from .regions import components, sentence_place
from .sentences import LESION_STEMS, POSITIVE, finding_terms, label_sentences

MIN_EVIDENCE = 3  # cases a term needs before the data decides it
DRAWN_SHARE = 0.8  # share of them that must agree
DRAWN, NOT_DRAWN = "drawn", "not drawn"
NOT_DRAWN_NOTE = "not drawn by this dataset's masks"  # beside a sentence whose finding is not drawn
CENTRAL = 0.12  # a mean centroid this close to the midline (share of the width) is central


@dataclass
class TermEvidence:
    """What the training cases say of one finding term (see the module docstring)."""

    term: str
    n_sentences: int = 0  # positive training sentences that name it
    n_alone: int = 0  # reports whose positive sentences all name it
    n_alone_drawn: int = 0  # ... with a non-empty mask
    n_placed: int = 0  # other reports where its sentence's place could be checked
    n_placed_drawn: int = 0  # ... where a part of the mask lies there, explained by no other
    area: float | None = None  # mean share of the image of what it draws
    off_centre: float | None = None  # mean distance of its centroid from the midline (of the width)
    y: float | None = None  # mean height of its centroid (0 top, 1 bottom)
    status: str = NOT_DRAWN  # DRAWN or NOT_DRAWN
    fallback: str = ""  # why the rule decided, not the data ("" when the data did)

    @property
    def n_evidence(self) -> int:
        return self.n_alone + self.n_placed

    @property
    def drawn_share(self) -> float:
        return (self.n_alone_drawn + self.n_placed_drawn) / self.n_evidence if self.n_evidence else float("nan")


def fallback_status(term: str) -> str:
    """The rule the demo was built on: the lung lesions (`sentences.LESION_STEMS`) are drawn."""
    return DRAWN if term in LESION_STEMS else NOT_DRAWN


@dataclass
class MaskVocabulary:
    """Which finding terms the masks draw. Terms the training reports never name follow
    `fallback_status`. `MaskVocabulary()` is the fallback alone (a checkpoint without one)."""

    terms: dict[str, TermEvidence] = field(default_factory=dict)
    n_cases: int = 0  # labeled training cases it was learned from
    n_empty: int = 0  # ... whose mask is empty

    def status(self, term: str) -> str:
        evidence = self.terms.get(term)
        return evidence.status if evidence is not None else fallback_status(term)

    def describes_drawn(self, sentence: str) -> bool:
        """Whether `sentence` names a finding the masks draw."""
        return any(self.status(t) == DRAWN for t in finding_terms(sentence))

    def drawn_terms(self) -> list[str]:
        """The terms seen in training whose status is drawn."""
        return [t for t, e in self.terms.items() if e.status == DRAWN]

    @property
    def learned(self) -> bool:
        return self.n_cases > 0

    def problem(self) -> str:
        """Why a model trained on these masks would locate nothing ("" when it would)."""
        if self.learned and self.n_empty == self.n_cases:
            return (f"all {self.n_cases} training masks are empty: check that the mask files hold "
                    "the pathology (non-zero pixels) and pair with the right images")
        if self.learned and not self.drawn_terms():
            return ("no finding term of the training reports is drawn by the masks: the reports "
                    "and the masks do not match (check the pairing of masks and images, or masks.csv)")
        return ""

    def summary(self) -> str:
        """One line: the terms the masks draw and the ones they do not, by the data."""
        if not self.learned:
            return "masks' vocabulary: none stored (lung lesions drawn, other findings not)"
        by_data = {DRAWN: [], NOT_DRAWN: []}
        for e in sorted(self.terms.values(), key=lambda e: -e.n_evidence):
            if not e.fallback:
                by_data[e.status].append(e.term)
        n_rule = sum(bool(e.fallback) for e in self.terms.values())
        return (f"masks' vocabulary from {self.n_cases} training cases: drawn "
                f"{', '.join(by_data[DRAWN]) or 'none'}; not drawn {', '.join(by_data[NOT_DRAWN]) or 'none'}"
                f" ({n_rule} other terms by the rule: lung lesions drawn, others not)")

    def to_dict(self) -> dict:
        """Plain Python values (for the checkpoint record)."""
        return {"n_cases": self.n_cases, "n_empty": self.n_empty,
                "terms": [asdict(e) for e in self.terms.values()]}

    @classmethod
    def from_dict(cls, data: dict | None) -> "MaskVocabulary":
        """The vocabulary of `to_dict`; None or {} (a record written before it): the fallback."""
        data = data or {}
        terms = [TermEvidence(**e) for e in data.get("terms", [])]
        return cls({e.term: e for e in terms}, int(data.get("n_cases", 0)), int(data.get("n_empty", 0)))

    def rows(self) -> list[dict]:
        """One row per term seen in training, drawn first, then by evidence."""
        order = sorted(self.terms.values(), key=lambda e: (e.status != DRAWN, -e.n_evidence, e.term))
        return [{"term": e.term, "status": e.status, "decided by": e.fallback or "data",
                 "sentences": e.n_sentences, "alone (mask)": f"{e.n_alone} ({e.n_alone_drawn})",
                 "placed (there)": f"{e.n_placed} ({e.n_placed_drawn})",
                 "area": "" if e.area is None else f"{e.area:.1%}",
                 "where": "" if e.y is None else _where(e.off_centre, e.y)} for e in order]

    def describe(self) -> str:
        """A readable table: one line per term seen in training."""
        if not self.learned:
            return ("masks' vocabulary: none learned (a checkpoint from before it): lung lesions "
                    "drawn, other findings not")
        rows = self.rows()
        head = (f"masks' vocabulary from {self.n_cases} labeled training cases ({self.n_empty} with "
                f"an empty mask); terms not seen: lung lesions drawn, others not")
        if not rows:
            return head
        keys = list(rows[0])
        width = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
        lines = [list(keys)] + [[str(r[k]) for k in keys] for r in rows]
        return "\n".join([head] + ["  ".join(f"{v:<{width[k]}}" for k, v in zip(keys, line)).rstrip()
                                    for line in lines])


def _where(off_centre: float, y: float) -> str:
    """Words for a mean centroid: "central, lower", "lateral, upper", ..."""
    across = "central" if off_centre < CENTRAL else "lateral"
    return f"{across}, {'upper' if y < 0.4 else 'middle' if y < 0.6 else 'lower'}"


def _decide(evidence: TermEvidence) -> None:
    share = evidence.drawn_share
    if evidence.n_evidence < MIN_EVIDENCE:
        evidence.status, evidence.fallback = fallback_status(evidence.term), "fallback: too few cases"
    elif share >= DRAWN_SHARE or share <= 1 - DRAWN_SHARE:
        evidence.status, evidence.fallback = (DRAWN if share >= DRAWN_SHARE else NOT_DRAWN), ""
    else:
        evidence.status, evidence.fallback = fallback_status(evidence.term), "fallback: mixed evidence"


def learn_vocabulary(texts: Sequence[str], masks: np.ndarray) -> MaskVocabulary:
    """The masks' vocabulary of labeled training cases: report texts [N] and their masks, uint8
    or bool [N, H, W] (any size; nonzero = drawn)."""
    masks = np.asarray(masks)
    if len(texts) != len(masks):
        raise ValueError(f"got {len(texts)} texts but {len(masks)} masks")
    terms: dict[str, TermEvidence] = {}
    sums: dict[str, list[float]] = {}  # term -> [area, x, y, n] of what it draws
    n_empty = 0
    for text, mask in zip(texts, masks):
        positives = [s for s, label in label_sentences(str(text)) if label == POSITIVE]
        named = [finding_terms(s) for s in positives]
        places = [sentence_place(s) for s in positives]
        parts = components(mask)
        n_empty += not parts
        every = set.intersection(*map(set, named)) if named else set()
        for i, sentence_terms in enumerate(named):
            for term in sentence_terms:
                e = terms.setdefault(term, TermEvidence(term))
                e.n_sentences += 1
                drawn = None
                if term in every:
                    if i == 0:  # every sentence names it: count the report once
                        e.n_alone += 1
                        e.n_alone_drawn += bool(parts)
                        drawn = [p for p, _, _ in parts]
                elif places[i] is not None:
                    others = [q for k, q in enumerate(places) if k != i]
                    unexplained = [p for p, x, y in parts if places[i].contains(x, y)
                                   and not any(q is None or q.contains(x, y) for q in others)]
                    missed = not (places[i].region(mask.shape) & (mask > 0)).any()
                    if missed or unexplained:  # no part of the mask there, or one only it explains
                        e.n_placed += 1
                        e.n_placed_drawn += bool(unexplained)
                        drawn = unexplained
                if drawn:
                    _add(sums.setdefault(term, [0.0, 0.0, 0.0, 0]), drawn)
    for term, e in terms.items():
        if term in sums and sums[term][3]:
            area, off, y, n = sums[term]
            e.area, e.off_centre, e.y = area / n, off / n, y / n
        _decide(e)
    return MaskVocabulary(terms, len(texts), n_empty)


VOCABULARY_SIZE = 128  # px: the masks' side when the vocabulary is learned outside training


def vocabulary_of_cases(cases, size: int = VOCABULARY_SIZE) -> MaskVocabulary:
    """The masks' vocabulary of a table of labeled cases (columns `text`, `mask_path` and
    `split`): its training split, or all of it without one (e.g. before the split), the masks
    read at `size` px. What notebook 01 and `pipeline.prepare` show before any training."""
    if "split" in cases and (cases["split"] == "train").any():
        cases = cases[cases["split"] == "train"]
    return learn_vocabulary(list(cases["text"]), load_masks(list(cases["mask_path"]), size))


def _add(total: list[float], parts: list[np.ndarray]) -> None:
    union = np.any(parts, axis=0)
    ys, xs = np.nonzero(union)
    h, w = union.shape
    total[0] += float(union.mean())
    total[1] += float(abs((xs.mean() + 0.5) / w - 0.5))
    total[2] += float((ys.mean() + 0.5) / h)
    total[3] += 1


def sentence_targets(sentences: Sequence[str], mask: np.ndarray, vocabulary: MaskVocabulary
                     ) -> list[np.ndarray] | None:
    """Each positive sentence's own part of a report's mask, when the parts can be told apart.

    sentences: the report's positive sentences; mask [H, W] (nonzero = drawn) -> one bool [H, W]
    per sentence, empty for a sentence whose finding the masks do not draw; or None when which
    part belongs to which sentence is not known (then the whole report is asked with the mask).
    One drawn sentence takes the whole mask. With several, each connected part of the mask goes
    to the one drawn sentence whose place (`sentence_place`: the heart by its position, the
    lungs by side and level words) holds its centroid; a part that no sentence or two sentences
    claim, or a drawn sentence left without a part, gives None.
    """
    mask = np.asarray(mask) > 0
    empty = np.zeros_like(mask)
    drawn = [i for i, s in enumerate(sentences) if vocabulary.describes_drawn(s)]
    targets = [empty.copy() for _ in sentences]
    if not drawn:
        return None if mask.any() else targets
    if len(drawn) == 1:
        targets[drawn[0]] = mask.copy()
        return targets
    places = {i: sentence_place(sentences[i]) for i in drawn}
    for part, x, y in components(mask):
        claims = [i for i in drawn if places[i] is None or places[i].contains(x, y)]
        if len(claims) != 1:
            return None
        targets[claims[0]] |= part
    return targets if all(targets[i].any() for i in drawn) else None


def split_by_finding(text: str, mask: np.ndarray, vocabulary: MaskVocabulary
                     ) -> tuple[str, str, np.ndarray, np.ndarray] | None:
    """`sentences.split_by_lesion` that asks the masks' vocabulary: (the first positive sentence
    with its own part of `mask` [H, W], the other positive sentences joined, that part, the rest
    of the mask: bool [H, W] each), when the report has two or more positive sentences and
    `sentence_targets` can tell the parts apart; None otherwise (the whole report is asked).
    "Mild cardiomegaly. Patchy opacity at the left base." on masks that draw the heart gives the
    opacity its own part and "Mild cardiomegaly." the heart's."""
    positive = [s for s, label in label_sentences(text) if label == POSITIVE]
    targets = sentence_targets(positive, mask, vocabulary) if len(positive) >= 2 else None
    own = next((i for i, t in enumerate(targets or []) if t.any()), None)
    if own is None:
        return None
    rest = np.logical_or.reduce([t for i, t in enumerate(targets) if i != own])
    return positive[own], " ".join(s for i, s in enumerate(positive) if i != own), targets[own], rest


def staying_parts(text: str, mask: np.ndarray, vocabulary: MaskVocabulary,
                  swap: Callable[[str], str]) -> np.ndarray | None:
    """What of a report's mask [H, W] stays where it is when `swap` (`places.swap_sides`,
    `places.swap_levels`) changes the report's place words: the parts of the sentences it leaves as
    they are (the heart of "Mild cardiomegaly." under a side swap); the rest moves with the words.
    bool [H, W] (empty: the whole mask moves); None where moving and staying sentences both
    describe drawn findings and `sentence_targets` cannot tell their parts apart. A mask whose
    report describes no drawn finding moves whole (the rule: it draws the described lesion)."""
    mask = np.asarray(mask) > 0
    positive = [s for s, label in label_sentences(text) if label == POSITIVE]
    stays = [swap(s) == s for s in positive]
    targets = sentence_targets(positive, mask, vocabulary)
    if targets is None:
        drawn = [stay for s, stay in zip(positive, stays) if vocabulary.describes_drawn(s)]
        if not any(drawn):
            return np.zeros_like(mask)
        return mask.copy() if all(drawn) else None
    return np.any([t for t, stay in zip(targets, stays) if stay] or [np.zeros_like(mask)], axis=0)
