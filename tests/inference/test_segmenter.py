"""Inference (helpers/inference/segmenter.py): predict, and a report read sentence by sentence."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.core.checkpoint import CheckpointError
from helpers.core.layout import DatasetError
from helpers.data.io import load_gray
from helpers.inference.segmenter import EMPTY_AREA, Segmenter
from helpers.text.regions import sentence_place
from helpers.text.sentences import split_sentences
from tests import POSITIVES, REPORT


def test_ground_report_reads_each_positive_sentence_alone(reading_segmenter, catalog):
    image = load_gray(catalog.cases["image_path"].iloc[0])
    grounding = reading_segmenter.ground_report(image, REPORT)
    assert [m.text for m in grounding.sentences] == POSITIVES
    assert grounding.dropped == [("Heart size is normal.", "normal"), ("No left pleural effusion.", "negated"),
                                 ("The lungs are clear.", "normal")]
    assert [text for text, _ in grounding.labels] == split_sentences(REPORT)
    for m in grounding.sentences:
        assert m.prob.shape == image.shape and m.prob.dtype == np.float32
        np.testing.assert_allclose(m.prob, reading_segmenter.predict(image, m.text), atol=1e-5)
        inside = m.prob >= reading_segmenter.threshold
        assert m.area == pytest.approx(inside.mean()) and m.confidence == pytest.approx(m.prob.max())
        assert m.located == (m.area >= EMPTY_AREA)
    a, b = (m.prob for m in grounding.sentences)
    assert np.abs(a - b).max() > 1e-3  # two sentences, two masks
    rows = grounding.table()
    assert [r["index"] for r in rows] == [None, 1, None, 2, None]
    assert rows[1]["text"] == POSITIVES[0] and rows[2]["label"] == "negated"
    json.dumps(rows)  # plain values


def test_ground_report_encodes_the_image_once(reading_segmenter, catalog):
    calls = []
    hook = reading_segmenter.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        report = " ".join(f"Nodule number {k} in the right upper lobe." for k in range(5))
        grounding = reading_segmenter.ground_report(catalog.cases["image_path"].iloc[0], report)
    finally:
        hook.remove()
    assert len(grounding.sentences) == 5 and len(calls) == 1


def test_not_located_normal_and_bad_reports(reading_segmenter, catalog):
    image = catalog.cases["image_path"].iloc[0]
    high = reading_segmenter.ground_report(image, REPORT, threshold=1.5)  # no pixel reaches it
    for m, row in zip(high.sentences, [r for r in high.table() if r["index"]]):
        # a lung lesion is drawn (the fallback vocabulary): the pixels near the peak when the peak
        # lies on the sentence's side, else nothing (tests/text/test_vocabulary.py tests the rule)
        y, x = (np.array(np.unravel_index(np.argmax(m.prob), m.prob.shape)) + 0.5) / m.prob.shape
        assert m.drawn and m.low_confidence == bool(sentence_place(m.text).contains(x, y, strict=False))
        assert m.located == m.low_confidence == row["located"] == row["low_confidence"]
        assert np.isnan(m.mean_in_mask) != m.low_confidence and (row["mean_in_mask"] is None) != m.low_confidence
    again = high.at_threshold(reading_segmenter.threshold)
    assert again.sentences[0].area == pytest.approx(reading_segmenter.ground_report(image, REPORT).sentences[0].area)
    normal = reading_segmenter.ground_report(image, "Heart size is normal. No pneumothorax.")
    assert normal.sentences == [] and not normal.describes_finding
    assert [label for _, label in normal.dropped] == ["normal", "negated"]
    with pytest.raises(ValueError, match="no sentence"):
        reading_segmenter.ground_report(image, "  ")
    with pytest.raises(ValueError, match="uint8 image"):
        reading_segmenter.predict_sentences(np.zeros((8, 8), np.uint8), POSITIVES)


@pytest.mark.parametrize("image", [
    np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8),            # 8-bit
    np.random.default_rng(1).integers(0, 65535, (90, 40), dtype=np.uint16),         # 16-bit
    np.random.default_rng(2).integers(0, 255, (33, 47, 3), dtype=np.uint8),         # RGB
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 4), dtype=np.uint8)),  # RGBA
])
def test_predict_returns_the_input_resolution(segmenter, image):
    prob = segmenter.predict(image, "Nodule in the right upper lobe.")
    size = image.size[::-1] if isinstance(image, Image.Image) else image.shape[:2]
    assert prob.shape == size and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    mask = segmenter.mask(image, "Nodule in the right upper lobe.")
    np.testing.assert_array_equal(mask, (prob >= segmenter.threshold).astype(np.uint8))


def test_the_text_changes_the_prediction(segmenter, catalog):
    image = catalog.cases["image_path"].iloc[0]
    a = segmenter.predict(image, "Nodule in the right upper lobe.")
    b = segmenter.predict(image, "Large left pleural effusion.")
    assert np.abs(a - b).max() > 1e-4
    assert segmenter.describe().count("tiny offline CLIP") == 1
    assert "place prior" in segmenter.describe()  # the default: the place words reach the decoder


def test_bad_image_and_checkpoint_are_clear_errors(segmenter, tmp_path):
    broken = tmp_path / "x.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="x.png"):
        segmenter.predict(broken, "text")
    with pytest.raises(CheckpointError, match="missing.pth"):
        Segmenter.from_checkpoint(tmp_path / "missing.pth")
    encoder_only = tmp_path / "enc.pth"
    torch.save({"encoder": {}, "encoder_name": "resnet18"}, encoder_only)
    with pytest.raises(CheckpointError, match="not a Phase-2 checkpoint"):
        Segmenter.from_checkpoint(encoder_only)
