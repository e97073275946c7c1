"""Report -> the text the model reads: one home, used by training and inference alike.

`ReportReader(text_mode)` turns a report (a findings text) into the model's text: "raw" keeps it as
written (whitespace normalised), "positive" keeps only the sentences that describe something
present (`text.sentences`). Training asks with more texts made from the model texts (the text
methods, `training.methods`) and records the statistics of `text_report` in `best_model.pth`. The
text mode is saved in the checkpoint, so a `Segmenter` reads a report exactly as training did.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .sentences import (TEXT_MODES, SentenceSelection, label_sentences, select_sentences, select_text,
                        split_sentences)
from .encoders import TextEncoder


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
