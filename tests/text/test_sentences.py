"""Sentence splitting, NegEx-style labelling and selection of the positive sentences (helpers/text/sentences.py)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers.text import sentences as sentences_module
from helpers.text.sentences import (
    TEXT_MODES,
    SentenceSelection,
    select_sentences,
    select_text,
    sentence_status,
    split_sentences,
)

POS, NEG, NORM = "positive", "negated", "normal"


STATUS_TABLE = [
    # Normal statements in many forms.
    ("The heart is normal in size.", NORM),
    ("Lungs are clear.", NORM),
    ("The lungs are clear bilaterally.", NORM),
    ("Mediastinal contours are within normal limits.", NORM),
    ("The cardiomediastinal silhouette is unremarkable.", NORM),
    ("Bony structures are intact.", NORM),
    ("Stable appearance of the chest.", NORM),
    ("Pulmonary vasculature is normal.", NORM),
    ("Heart size and pulmonary vascularity appear within normal limits.", NORM),
    ("The lungs are well-expanded.", NORM),
    ("The trachea is midline.", NORM),
    ("Visualized osseous structures of the thorax are unremarkable.", NORM),
    ("No interval change.", NORM),
    ("The chest is not significantly changed.", NORM),
    ("XXXX XXXX are normal.", NORM),
    ("The costophrenic angles are sharp.", NORM),
    ("The left costophrenic angle is sharp.", NORM),
    ("The hemidiaphragms are well defined.", NORM),
    # Negations, one per trigger.
    ("No pneumothorax.", NEG),
    ("No left pleural effusion.", NEG),
    ("No right-sided pleural effusion.", NEG),
    ("No evidence of pneumothorax.", NEG),
    ("No definite focal airspace consolidation.", NEG),
    ("There is no focal consolidation, pleural effusion, or pneumothorax.", NEG),
    ("There are no acute bony abnormalities.", NEG),
    ("Lungs are clear without focal airspace disease.", NEG),
    ("Negative for acute cardiopulmonary disease.", NEG),
    ("The lungs are free of focal airspace disease.", NEG),
    ("The lungs are clear of consolidation.", NEG),
    ("A pneumothorax is not seen.", NEG),
    ("Pleural effusion is not identified.", NEG),
    ("The heart is not enlarged.", NEG),
    ("Pleural effusions are absent.", NEG),
    ("The previously seen right lower lobe opacity has resolved.", NEG),
    ("Resolved right lower lobe pneumonia.", NEG),
    ("Pneumonia has been ruled out.", NEG),
    ("Neither pleural effusion nor pneumothorax.", NEG),
    ("No acute cardiopulmonary abnormality.", NEG),
    ("1. No active disease.", NEG),
    # Present findings.
    ("There is patchy airspace opacity in the right lung base.", POS),
    ("Right basilar opacity.", POS),
    ("A 1.2 cm nodule in the right upper lobe.", POS),
    ("Mild cardiomegaly.", POS),
    ("The heart is mildly enlarged.", POS),
    ("Calcified granuloma in the left upper lobe.", POS),
    ("Degenerative changes of the thoracic spine.", POS),
    ("Stable mild cardiomegaly.", POS),
    ("Low lung volumes with bibasilar atelectasis.", POS),
    ("Mild cardiomegaly without pulmonary edema.", POS),
    ("Normal heart size with a small left pleural effusion.", POS),
    ("Atelectasis rather than pneumonia.", POS),
    # Pseudo-negations assert what follows them.
    ("No change in the right lower lobe opacity.", POS),
    ("No significant interval change in the left basilar scarring.", POS),
    ("No increase in the size of the right pleural effusion.", POS),
    ("Not only atelectasis but also consolidation in the left base.", POS),
    ("Not only is there atelectasis, consolidation is also present.", POS),
    # Uncertainty counts as positive.
    ("Possible small left pleural effusion.", POS),
    ("Findings may represent atelectasis.", POS),
    ("Early pneumonia cannot be excluded.", POS),
    ("Pneumonia is not ruled out.", POS),
    ("Pneumothorax cannot be ruled out.", POS),
    ("Questionable right hilar fullness without effusion.", POS),
    ("Possible right hilar fullness, no effusion.", POS),
    ("Opacity suspicious for a mass.", POS),
    ("Right basilar opacity likely atelectasis.", POS),
    ("Likely subsegmental atelectasis.", POS),
    # A conjunction ends the negation scope.
    ("No left effusion but there is a right basilar opacity.", POS),
    ("No effusion, however there is right basilar atelectasis.", POS),
    ("No pneumothorax, although a small effusion is present.", POS),
    ("No effusion, however right basilar atelectasis is present.", POS),
    ("No effusion but mild cardiomegaly.", POS),
    ("The lungs are clear except for a right basilar opacity.", POS),
    ("No pneumothorax, there is a small right effusion.", POS),
    # "No." before a number is not a negation.
    ("No. 7 rib fracture.", POS),
]


@pytest.mark.parametrize("sentence, expected", STATUS_TABLE, ids=[s for s, _ in STATUS_TABLE])
def test_sentence_status(sentence, expected):
    assert sentence_status(sentence) == expected


def test_table_is_large_and_covers_every_status():
    statuses = [expected for _, expected in STATUS_TABLE]
    assert len(STATUS_TABLE) >= 40
    assert {POS, NEG, NORM} == set(statuses)
    assert len({sentence for sentence, _ in STATUS_TABLE}) == len(STATUS_TABLE)


def test_status_ignores_case_and_anonymisation_holes():
    assert sentence_status("NO PNEUMOTHORAX.") == NEG
    assert sentence_status("XXXX right basilar opacity XXXX.") == POS
    assert sentence_status("XXXX.") == NORM


@pytest.mark.parametrize("text, expected", [
    ("The heart is normal. No effusion.", ["The heart is normal.", "No effusion."]),
    ("A 1.2 cm nodule. No effusion.", ["A 1.2 cm nodule.", "No effusion."]),
    ("Nodule measures 0.5 x 1.25 cm.", ["Nodule measures 0.5 x 1.25 cm."]),
    ("Scarring, e.g. granuloma. Lungs clear.", ["Scarring, e.g. granuloma.", "Lungs clear."]),
    ("Opacity, i.e. atelectasis. No effusion.", ["Opacity, i.e. atelectasis.", "No effusion."]),
    ("Nodule approx. 2 cm. Clear.", ["Nodule approx. 2 cm.", "Clear."]),
    ("Atelectasis vs. pneumonia. No effusion.", ["Atelectasis vs. pneumonia.", "No effusion."]),
    ("Discussed with Dr. Smith. No effusion.", ["Discussed with Dr. Smith.", "No effusion."]),
    ("Fracture of rib No. 5. No effusion.", ["Fracture of rib No. 5.", "No effusion."]),
    ("No. Effusion.", ["No.", "Effusion."]),
    ("1. Mild cardiomegaly. 2. No effusion.", ["1. Mild cardiomegaly.", "2. No effusion."]),
    ("Nodule of 1.2 cm. 2. No effusion.", ["Nodule of 1.2 cm.", "2. No effusion."]),
    ("Heart size is stable since 2. No effusion.",
     ["Heart size is stable since 2.", "No effusion."]),
    ("Lungs are clear. No pneumothorax", ["Lungs are clear.", "No pneumothorax"]),
    ("No effusion; mild cardiomegaly.", ["No effusion;", "mild cardiomegaly."]),
    ("Is there an effusion? Yes! Small.", ["Is there an effusion?", "Yes!", "Small."]),
    ("  Lungs   are clear.\n\n\nNo   effusion.  ", ["Lungs are clear.", "No effusion."]),
    ("Mild cardiomegaly\nNo effusion", ["Mild cardiomegaly", "No effusion"]),
    ("Right effusion.No pneumothorax.", ["Right effusion.", "No pneumothorax."]),
    ("Stable. . . No effusion.", ["Stable.", "No effusion."]),
    ("Lungs are clear...", ["Lungs are clear..."]),
    ("", []),
    ("  \n . ", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_select_keeps_only_the_positive_sentence():
    selection = select_sentences("No left effusion. Right basilar opacity.")
    assert selection.kept == ["Right basilar opacity."]
    assert selection.dropped == ["No left effusion."]
    assert selection.fallback is False
    assert selection.text == "Right basilar opacity."


def test_select_real_style_report_keeps_findings_in_order():
    report = ("The heart is normal in size. The mediastinum is unremarkable. No left pleural "
              "effusion. There is patchy airspace opacity in the right lung base, atelectasis. "
              "No pneumothorax. A 1.2 cm nodule in the left upper lobe.")
    selection = select_sentences(report)
    assert selection.kept == [
        "There is patchy airspace opacity in the right lung base, atelectasis.",
        "A 1.2 cm nodule in the left upper lobe."]
    assert len(selection.dropped) == 4
    assert selection.text == ("There is patchy airspace opacity in the right lung base, "
                              "atelectasis. A 1.2 cm nodule in the left upper lobe.")


def test_select_all_normal_report_falls_back_to_every_sentence():
    report = "The heart is normal in size.  Lungs are clear.\nNo pneumothorax."
    selection = select_sentences(report)
    assert selection.fallback is True
    assert selection.kept == ["The heart is normal in size.", "Lungs are clear.",
                              "No pneumothorax."]
    assert selection.dropped == []
    assert selection.text == "The heart is normal in size. Lungs are clear. No pneumothorax."


def test_select_empty_text_gives_empty_selection():
    selection = select_sentences("   ")
    assert selection.kept == [] and selection.dropped == []
    assert selection.text == ""


def test_selection_text_joins_kept_with_one_space():
    assert SentenceSelection(kept=["A.", "B."], dropped=["C."]).text == "A. B."


def test_every_listed_text_mode_is_implemented():
    """TEXT_MODES is what the settings and the errors offer: each must select a text."""
    for mode in TEXT_MODES:
        assert select_text("No left effusion. Right basilar opacity.", mode).endswith("Right basilar opacity.")


def test_select_text_raw_normalises_whitespace_only():
    text = "  No left effusion.\n Right   basilar opacity. "
    assert select_text(text) == "No left effusion. Right basilar opacity."
    assert select_text(text, "raw") == "No left effusion. Right basilar opacity."


def test_select_text_positive_keeps_the_findings():
    assert select_text("No left effusion. Right basilar opacity.", "positive") == \
        "Right basilar opacity."
    assert select_text("Lungs are clear. No effusion.", "positive") == \
        "Lungs are clear. No effusion."


@pytest.mark.parametrize("mode", ["Positive", "", "negated", "clean"])
def test_select_text_unknown_mode_names_the_valid_ones(mode):
    with pytest.raises(ValueError, match=r"raw, positive"):
        select_text("Lungs are clear.", mode)


def test_module_imports_no_other_helpers_module():
    tree = ast.parse(Path(sentences_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert imported <= {"__future__", "re", "dataclasses"}, imported


def test_null_text_keeps_what_describes_nothing():
    from helpers.text.sentences import NOTHING_DESCRIBED, describes_finding, null_text

    report = "Heart size is normal. Patchy opacity at the left base. No pneumothorax."
    assert describes_finding(report) and not describes_finding("No pneumothorax. Lungs are clear.")
    assert not describes_finding("")
    assert null_text(report) == "Heart size is normal. No pneumothorax."
    assert not describes_finding(null_text(report))
    assert null_text("Patchy opacity at the left base.") == NOTHING_DESCRIBED
    assert null_text("The lungs are clear.") == "The lungs are clear."


@pytest.mark.parametrize("sentence, lesion", [
    ("Patchy opacity at the left base.", True),
    ("A 1.2 cm nodule in the right upper lobe.", True),
    ("Small right pleural effusion.", True),
    ("Mild cardiomegaly.", False),
    ("XXXX sternotomy wires are unchanged.", False),
    ("Degenerative changes of the thoracic spine.", False),
    ("Mild cardiomegaly without pulmonary edema.", False),  # the lesion word is negated
    ("No change in the right lower lobe opacity.", True),
])
def test_names_lesion(sentence, lesion):
    from helpers.text.sentences import names_lesion

    assert names_lesion(sentence) is lesion


def test_split_by_lesion_finds_the_one_sentence_that_names_the_lesion():
    from helpers.text.sentences import split_by_lesion

    report = ("Mild cardiomegaly. No pneumothorax. Patchy opacity at the left base. Sternotomy wires "
              "are intact. XXXX catheter tip in the superior vena cava.")
    assert split_by_lesion(report) == ("Patchy opacity at the left base.", "Mild cardiomegaly. "
                                       "Sternotomy wires are intact. XXXX catheter tip in the "
                                       "superior vena cava.")  # devices are present findings
    assert split_by_lesion("Patchy opacity at the left base. No effusion.") is None  # nothing beside
    assert split_by_lesion("Mild cardiomegaly. Tortuous aorta.") is None  # no lesion named
    assert split_by_lesion("Left basal opacity. Small right effusion. Tortuous aorta.") is None  # two
