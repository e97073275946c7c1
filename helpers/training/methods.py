"""The training-text methods: one registry of the ways a training item is asked with another text
than its report (and, for some, shown another picture).

Each method (`TextMethod`) declares
- its setting: the `FinetuneConfig` field that holds its share of the training items;
- what it needs from a report: the texts it asks with (kinds of `TEXTS`, one text per case, all
  encoded once into the task's text table) and, given the training set as a whole
  (`MethodContext`), what it can do with each case (`plan`: e.g. the free places a lesion may be
  copied to; None where it cannot, and the item then stays as it is);
- how it turns an item (image, mask, text) into a training item (`apply`).

`LabeledCases` draws, per item, at most one of the methods that share the items (`exclusive`), in
the registry's order; the concordant flip is drawn on its own, after the augmentation, for the
items that no other method changed. `SegmentationTask` builds its one text table from the active
methods' texts, and the ablation's and the bench's rows come from the registry. A new method is
one `register(...)` entry (with a `TEXTS` entry when it asks with a new kind of text), its
settings field in `core/settings.py`, and its test.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.anatomy import SIDES
from ..text.places import names_level, names_side, swap_levels, swap_sides
from ..text.reader import ReportReader
from ..text.sentences import null_text, split_by_lesion
from ..text.vocabulary import split_by_finding, staying_parts
from .paste import copy_is_free, level_shift, paste_copy


@dataclass
class MethodContext:
    """What the training set as a whole tells a method: its cases' reports, their model texts and
    masks, and what is known of what the masks draw (the dataset's vocabulary, when given)."""

    reports: list[str]  # the training cases' reports, as written
    texts: list[str]  # each as the model reads it (`reader.model_text`)
    masks: np.ndarray  # uint8 [N, S, S] in {0, 1}
    reader: ReportReader
    vocabulary: Any = None  # which findings the masks draw, for methods that ask it


@dataclass
class Item:
    """A training item on its way: image uint8 [1, S, S], target [1, S, S] (1 on the described
    lesion, `hard` on a lesion the text does not describe), and its text's row in the table."""

    image: torch.Tensor
    mask: torch.Tensor
    text: int
    hard: int  # the target of an undescribed lesion: `losses.UNDESCRIBED`, or 0

    def emptied(self, text: int) -> Item:
        """The same picture asked with `text`, which describes nothing there: an empty target (the
        lesion marked `hard`)."""
        return Item(self.image, self.mask * self.hard, text, self.hard)


class TextMethod:
    """One entry of the registry (see the module docstring); subclasses set the class attributes
    and implement `plan` and `apply`."""

    name: str = ""  # short name ("paste")
    setting: str = ""  # the FinetuneConfig field of its share of the training items
    texts: tuple[str, ...] = ()  # the kinds of `TEXTS` it asks with
    exclusive: bool = True  # shares the items with the other exclusive methods, one per item
    group: str | None = None  # "place": part of the place training (ablation rows)

    def plan(self, ctx: MethodContext, rows: Mapping[str, list[int]]) -> list:
        """Per training case, what `apply` needs, or None where the method does not apply.
        `rows[kind][i]`: the table row of case i's text of that kind (`rows["report"]`: its own)."""
        raise NotImplementedError

    def apply(self, item: Item, plan: Any) -> Item:
        """The training item made from `item` with the case's `plan` (random draws: torch's)."""
        raise NotImplementedError


METHODS: dict[str, TextMethod] = {}  # by name, in the order one draw picks among them


def register(method: type[TextMethod]) -> type[TextMethod]:
    """Class decorator: add an instance of `method` to `METHODS`."""
    if method.name in METHODS or not method.name or not method.setting:
        raise ValueError(f"a text method needs a new name and a setting, got {method.name!r}")
    METHODS[method.name] = method()
    return method


def _sentence_splits(ctx: MethodContext) -> list[tuple | None]:
    """Per case, (the sentence with its own part of the mask, the other positive sentences, that
    part, the rest: bool [S, S] each, or None for the whole mask and an empty rest) or None where
    the words do not tell: by the masks' vocabulary when the context has one, else by the rule that
    a mask draws the one sentence naming a lung lesion."""
    if ctx.vocabulary is None:
        return [(*s, None, None) if s else None for s in map(split_by_lesion, ctx.reports)]
    return [split_by_finding(r, m, ctx.vocabulary) for r, m in zip(ctx.reports, ctx.masks)]


def _staying(ctx: MethodContext, swap: Callable[[str], str]) -> list[np.ndarray | None | bool]:
    """Per case, what of its mask stays where it is when `swap` changes the text's place words
    (`text.vocabulary.staying_parts`: the heart of "Mild cardiomegaly." where the masks draw it):
    None when the whole mask moves (always, without the masks' vocabulary), bool [S, S], or False
    where the parts cannot be told apart (the case gets no place-swapped item)."""
    if ctx.vocabulary is None:
        return [None] * len(ctx.reports)
    kept = [staying_parts(r, m, ctx.vocabulary, swap) for r, m in zip(ctx.reports, ctx.masks)]
    return [False if k is None else k if k.any() else None for k in kept]


def _with_staying(target: torch.Tensor, staying: np.ndarray | None) -> torch.Tensor:
    """`target` [1, S, S] with the parts that stay (`_staying`) asked for: 1 there."""
    if staying is None:
        return target
    return torch.where(torch.from_numpy(staying)[None], torch.ones_like(target), target)


def _lesion_and_beside(ctx: MethodContext) -> list[tuple[str, str]]:
    # a report whose sentences cannot be told apart asks with its own text (the sentence method
    # leaves it as it is)
    return [s[:2] if s else (own, own) for s, own in zip(_sentence_splits(ctx), ctx.texts)]


# The kinds of texts the methods ask with, one per training case, in the order the text table
# holds them.
TEXTS: dict[str, Callable[[MethodContext], list[str]]] = {
    "flipped": lambda ctx: [swap_sides(t) for t in ctx.texts],  # left and right exchanged
    "null": lambda ctx: [ctx.reader.model_text(null_text(r)) for r in ctx.reports],
    "leveled": lambda ctx: [swap_levels(t) for t in ctx.texts],  # upper and lower exchanged
    "lesion": lambda ctx: [lesion for lesion, _ in _lesion_and_beside(ctx)],
    "beside": lambda ctx: [beside for _, beside in _lesion_and_beside(ctx)],
}


@register
class ConcordantFlip(TextMethod):
    """Image and mask mirrored AND left and right swapped in the text, so the report still
    describes the picture (never a bare flip: the patient's right is the image's left)."""

    name, setting, texts, exclusive = "flip", "concordant_flip", ("flipped",), False

    def plan(self, ctx, rows):
        return rows["flipped"]

    def apply(self, item, plan):
        return Item(item.image.flip(-1), item.mask.flip(-1), plan, item.hard)


@register
class NullText(TextMethod):
    """The report's normal and negated sentences (`sentences.null_text`), with an empty target."""

    name, setting, texts, group = "null", "null_rate", ("null",), "place"

    def plan(self, ctx, rows):
        return rows["null"]

    def apply(self, item, plan):
        return item.emptied(plan)


@register
class Paste(TextMethod):
    """The lesion copied to its mirror place (a text that names one side) or to the other level of
    its lung (a text that names one), where that place is free; half the time to both when both
    are. Then the text as written asks for the original, or the place-swapped text for a copy,
    with equal chance: the lesions look alike, only the place in the words tells. Where the masks
    draw a finding whose words the swap leaves (the heart of "Mild cardiomegaly."), only the
    moving part is copied and the swapped text is asked with the copy and that finding."""

    name, setting, texts, group = "paste", "paste_prob", ("flipped", "leveled"), "place"

    def plan(self, ctx, rows):
        plans = []
        sided, leveled = _staying(ctx, swap_sides), _staying(ctx, swap_levels)
        for i, text in enumerate(ctx.texts):
            mask = torch.from_numpy(np.asarray(ctx.masks[i]))
            moves: list[tuple[str | int, int, np.ndarray | None]] = []
            for how, row, staying in (("mirror", rows["flipped"][i], sided[i]),
                                      (level_shift(names_level(text), mask.shape[-2]),
                                       rows["leveled"][i], leveled[i])):
                if staying is False or (how == "mirror" and names_side(text) not in SIDES):
                    continue
                stays = None if staying is None else torch.from_numpy(staying)
                moving = mask if stays is None else mask * ~stays
                if (stays is None or moving.any()) and copy_is_free(moving, how, avoid=stays):
                    moves.append((how, row, staying))  # a copy of nothing would be a swap
            plans.append(moves or None)
        return plans

    def apply(self, item, plan):
        """Copy the moving part to one of the planned places, or to all (half the time, when there
        are two that move the same part: three lesions alike, as in a layout where side and level
        both matter); then ask for one lesion by its text. The lesions not asked for are marked
        `hard`."""
        image, mask = item.image, item.mask
        alike = all(_same(staying, plan[0][2]) for _, _, staying in plan)
        chosen = plan if len(plan) > 1 and alike and torch.rand(()) < 0.5 else [plan[int(torch.randint(len(plan), ()))]]
        asked, lesions, pasted = [(mask, item.text)], [mask], image
        for how, other_text, staying in chosen:  # every copy is taken from the original picture
            moving = mask if staying is None else mask * torch.from_numpy(~staying)[None].to(mask.dtype)
            pasted, copy = paste_copy(image, moving, how, onto=pasted)
            lesions.append(copy)
            asked.append((_with_staying(copy, staying), other_text))
        target, text = asked[int(torch.randint(len(asked), ()))]
        out = target.clone()
        for lesion in lesions:
            out = torch.where((lesion > 0) & (target == 0), torch.full_like(out, item.hard), out)
        return Item(pasted, out, text, item.hard)


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is b or (a is not None and b is not None and np.array_equal(a, b))


@register
class SwapSides(TextMethod):
    """The text with its sides swapped: nothing lies where it points, so the target is empty but
    for the findings whose words name no side (the heart of "Mild cardiomegaly.", where the masks
    draw it)."""

    name, setting, texts, group = "swap", "swap_prob", ("flipped",), "place"

    def plan(self, ctx, rows):
        return [(row, staying) if names_side(t) in SIDES and staying is not False else None
                for t, row, staying in zip(ctx.texts, rows["flipped"], _staying(ctx, swap_sides))]

    def apply(self, item, plan):
        row, staying = plan
        empty = item.emptied(row)
        return Item(item.image, _with_staying(empty.mask, staying), row, item.hard)


def disjoint_cases(masks: np.ndarray) -> list[list[int]]:
    """For each mask of uint8 [N, S, S], the other cases whose mask does not touch it."""
    flat = torch.from_numpy(np.asarray(masks)).flatten(1).float()
    overlap = (flat @ flat.T) > 0
    return [[j for j in range(len(flat)) if j != i and not overlap[i, j]] for i in range(len(flat))]


@register
class Negative(TextMethod):
    """Another case's text whose lesion lies elsewhere (its mask does not touch this one), with an
    empty target: the model must check that the described finding is where it looks."""

    name, setting = "negative", "negative_rate"

    def plan(self, ctx, rows):
        return [[rows["report"][j] for j in others] or None for others in disjoint_cases(ctx.masks)]

    def apply(self, item, plan):
        return item.emptied(plan[int(torch.randint(len(plan), ()))])


@register
class Sentence(TextMethod):
    """One sentence of the report alone, as a report is read sentence by sentence: the one with its
    own part of the mask, or the report's other positive sentences ("Mild cardiomegaly.") with the
    rest (empty where the masks do not draw what they describe), half and half; the part asked
    about is 1, the other `hard`. Where the words do not tell which part a sentence owns
    (`_sentence_splits`: the masks' vocabulary, `text.vocabulary.split_by_finding`), the item
    stays as it is."""

    name, setting, texts, group = "sentence", "sentence_prob", ("lesion", "beside"), "sentence"

    def plan(self, ctx, rows):
        return [(a, b, s[2], s[3]) if s else None
                for s, a, b in zip(_sentence_splits(ctx), rows["lesion"], rows["beside"])]

    def apply(self, item, plan):
        lesion, beside, own, rest = plan
        asked_own = bool(torch.rand(()) < 0.5)
        if own is None:  # the whole mask is the sentence's, the rest describes nothing drawn
            return Item(item.image, item.mask, lesion, item.hard) if asked_own else item.emptied(beside)
        asked, other = (own, rest) if asked_own else (rest, own)
        asked, other = (torch.from_numpy(p)[None].to(item.mask.dtype) for p in (asked, other))
        return Item(item.image, asked + other * item.hard, lesion if asked_own else beside, item.hard)


# --- Which methods a training uses ------------------------------------------------------------

@dataclass
class MethodUse:
    """A method in one training set: its share of the items and its plan per case."""

    method: TextMethod
    share: float
    plan: list


def image_only(cfg):
    """`cfg` as training uses it: the image-only control (fusion "none") reads no text at all, so
    its place prior and every text method are off; other settings are returned as they are."""
    if cfg.fusion != "none":
        return cfg
    return dataclasses.replace(cfg, place_prior=False,
                               **{m.setting: 0.0 for m in METHODS.values() if hasattr(cfg, m.setting)})


def active_methods(cfg) -> list[tuple[TextMethod, float]]:
    """The registered methods with a share above 0 in the settings `cfg`, in registry order.
    ValueError when a share is outside [0, 1], the exclusive ones add up to more than 1, or a
    registered method has no settings field."""
    missing = [m.setting for m in METHODS.values() if not hasattr(cfg, m.setting)]
    if missing:
        raise ValueError(f"{type(cfg).__name__} has no setting {', '.join(missing)}: give each "
                         "registered text method its share field in helpers/core/settings.py")
    shares = [(m, float(getattr(cfg, m.setting))) for m in METHODS.values()]
    bad = [m.setting for m, share in shares if not 0 <= share <= 1]
    if bad:
        raise ValueError(f"{', '.join(bad)} must be shares between 0 and 1")
    exclusive = [m.setting for m, share in shares if m.exclusive and share > 0]
    if sum(share for m, share in shares if m.exclusive) > 1:
        raise ValueError(f"{' + '.join(exclusive)} must be <= 1 (one method per item)")
    return [(m, share) for m, share in shares if share > 0]


def method_texts(methods: Sequence[tuple[TextMethod, float]], ctx: MethodContext) -> dict[str, list[str]]:
    """The texts the methods ask with, by kind (in `TEXTS` order), one per training case."""
    wanted = {kind for method, _ in methods for kind in method.texts}
    unknown = wanted - set(TEXTS)
    if unknown:
        raise ValueError(f"unknown text kind(s) {sorted(unknown)}: add them to TEXTS")
    return {kind: make(ctx) for kind, make in TEXTS.items() if kind in wanted}


def method_uses(methods: Sequence[tuple[TextMethod, float]], ctx: MethodContext,
                rows: Mapping[str, list[int]]) -> list[MethodUse]:
    """Each method with its plan for the training cases (`rows`: see `TextMethod.plan`)."""
    uses = [MethodUse(method, share, method.plan(ctx, rows)) for method, share in methods]
    for use in uses:
        if len(use.plan) != len(ctx.texts):
            raise ValueError(f"the plan of {use.method.name} has {len(use.plan)} entries for "
                             f"{len(ctx.texts)} cases")
    return uses
