"""Report -> the text the model reads: one home, used by training and inference alike.

`ReportReader(text_mode)` turns a report (a findings text) into the model's text: "raw" keeps it as
written (whitespace normalised), "positive" keeps only the sentences that describe something
present (`helpers.sentences`). Training also builds, from the same reports, the texts of its place
training (`helpers.places`: sides or levels swapped, the report's normal and negated sentences) and
the statistics that `best_model.pth` records (`text_report`). The text mode is saved in the
checkpoint, so a `Segmenter` reads a report exactly as training did.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .places import swap_levels, swap_sides
from .sentences import (TEXT_MODES, SentenceSelection, label_sentences, null_text, select_sentences,
                        select_text, split_by_lesion, split_sentences)
from .encoders import TextEncoder


@dataclass
class TrainingTexts:
    """The model texts of the training reports, one per report in each list; a list is empty when
    its kind was not asked for."""

    texts: list[str]  # each report as the model reads it
    flipped: list[str] = field(default_factory=list)  # left and right exchanged (flip, paste, swap)
    nulls: list[str] = field(default_factory=list)  # what the report says besides its findings
    leveled: list[str] = field(default_factory=list)  # upper and lower exchanged (paste)
    # the sentence that names the report's lesion, and its other positive sentences ("" where
    # `sentences.split_by_lesion` cannot tell them apart)
    lesion: list[str] = field(default_factory=list)
    beside: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportReader:
    """How a report becomes the model's text (`text_mode`: one of `sentences.TEXT_MODES`)."""

    text_mode: str = "raw"

    def __post_init__(self) -> None:
        if self.text_mode not in TEXT_MODES:
            raise ValueError(f"unknown text mode {self.text_mode!r}; valid modes: {', '.join(TEXT_MODES)}")

    def model_text(self, report: str) -> str:
        """The text as the model reads it ("positive": the positive sentences only)."""
        return select_text(report, self.text_mode)

    def sentences(self, report: str) -> SentenceSelection:
        """Which sentences of `report` the model is given (kept) and which it is not (dropped)."""
        if self.text_mode == "raw":
            return SentenceSelection(kept=split_sentences(report), dropped=[])
        return select_sentences(report)

    def labeled_sentences(self, report: str) -> list[tuple[str, str]]:
        """Each sentence of `report` with its label (`sentences.POSITIVE`, "negated", "normal"),
        in order: the report read sentence by sentence, whatever the text mode (each positive
        sentence is a text of its own)."""
        return label_sentences(report)

    def training_texts(self, reports: Sequence[str], *, sides: bool = False, nulls: bool = False,
                       levels: bool = False, sentences: bool = False) -> TrainingTexts:
        """The model texts of `reports`, and those the place training asks with: `sides`, each with
        left and right swapped; `nulls`, each report's normal and negated sentences
        (`sentences.null_text`) as the model reads them; `levels`, upper and lower swapped;
        `sentences`, the sentence that names the lesion and the other positive ones, each a text
        of its own as `Segmenter.ground_report` reads them."""
        texts = [self.model_text(t) for t in reports]
        split = [split_by_lesion(t) or ("", "") for t in reports] if sentences else []
        return TrainingTexts(texts=texts,
                             flipped=[swap_sides(t) for t in texts] if sides else [],
                             nulls=[self.model_text(null_text(t)) for t in reports] if nulls else [],
                             leveled=[swap_levels(t) for t in texts] if levels else [],
                             lesion=[lesion for lesion, _ in split],
                             beside=[beside for _, beside in split])

    def text_report(self, reports: Sequence[str], texts: Sequence[str], encoder: TextEncoder) -> dict:
        """What the checkpoint says about the texts: the text mode, the encoder's pooling, how many
        of `texts` (model texts) it truncates and by how much, and how many sentences of `reports`
        the positive selection keeps and drops."""
        selections = [select_sentences(t) for t in reports]
        return {"text_mode": self.text_mode, "pooling": encoder.pooling,
                "truncation": encoder.truncation_report(texts),
                "sentences_kept": sum(len(x.kept) for x in selections),
                "sentences_dropped": sum(len(x.dropped) for x in selections),
                "texts_without_positive_sentence": sum(x.fallback for x in selections)}
