"""Report -> the model's text (helpers/text/reader.py)."""
from __future__ import annotations

import pytest

from helpers.text.sentences import split_sentences


def test_report_reader_reads_as_its_text_mode():
    from helpers.text.reader import ReportReader

    report = "Heart size is normal. No left effusion. Patchy opacity at the right upper lobe."
    positive, raw = ReportReader("positive"), ReportReader("raw")
    assert positive.model_text(report) == "Patchy opacity at the right upper lobe."
    assert raw.model_text(" " + report + "\n") == report
    assert positive.sentences(report).dropped == ["Heart size is normal.", "No left effusion."]
    assert raw.sentences(report).kept == split_sentences(report) and raw.sentences(report).dropped == []
    with pytest.raises(ValueError, match=r"raw, positive"):
        ReportReader("shuffled")
