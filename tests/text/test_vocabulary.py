"""The masks' vocabulary (`text.vocabulary`): what the masks draw, learned from the labeled cases;
the places of sentences and the parts of a mask (`text.regions`); each sentence's own target; the
low-confidence mask of a drawn finding; the demo's union masks; the checks of `prepare`."""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.core.layout import DatasetError, MASKS_DIR
from helpers.data.catalog import load_catalog
from helpers.data.demo import generate as synthetic
from helpers.data.demo.reports import CARDIOMEGALY, EXTRAS
from helpers.data.io import load_mask
from helpers.data.sources import demo_options, fetch_dataset
from helpers.inference.segmenter import Segmenter
from helpers.model.record import ModelRecord
from helpers.pipeline import prepare
from helpers.text.places import place_code, swap_levels, swap_sides
from helpers.text.regions import HEART_BOX, Place, components, near_peak, sentence_place
from helpers.text.sentences import POSITIVE, finding_terms, label_sentences, names_lesion
from helpers.text.vocabulary import (DRAWN, MIN_EVIDENCE, NOT_DRAWN, MaskVocabulary, learn_vocabulary,
                                     sentence_targets, staying_parts, vocabulary_of_cases)
from helpers.viz.report_view import LOW_CONFIDENCE_NOTE, report_html, table_lines

S = 32  # side of the hand-made masks below


def blob(x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    mask = np.zeros((S, S), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


RIGHT_UPPER, LEFT_LOWER = blob(4, 10, 4, 10), blob(24, 30, 18, 24)  # the patient's right: image-left
HEART = blob(14, 19, 19, 25)  # central, low: inside HEART_BOX
EMPTY = np.zeros((S, S), np.uint8)


# ---------------------------------------------------------------------------------- terms, places
def test_finding_terms_skip_negated_ones():
    assert finding_terms("Patchy opacity at the left base, no effusion.") == ["patchy", "opaci"]
    assert finding_terms("Mild cardiomegaly.") == ["cardiomegal"]
    assert finding_terms("No pneumothorax or effusion.") == []
    assert finding_terms("Low lung volumes.") == ["low lung volume"]  # a term of several words


def test_the_fallback_vocabulary_is_the_lung_lesion_rule(demo_root):
    """A checkpoint without a vocabulary reads sentences as before it existed: the lung lesions."""
    fallback = MaskVocabulary()
    sentences = set(pd.read_csv(demo_root / synthetic.LESIONS_CSV)["sentence"].dropna())
    sentences |= {text for _, text in EXTRAS} | {"Increasing left pleural effusion.", "Lung abscess.",
                                                   "No focal consolidation.", "Healed right rib fracture."}
    assert [fallback.describes_drawn(s) for s in sorted(sentences)] == [names_lesion(s) for s in sorted(sentences)]
    texts = ["Healed right rib fracture. Left basal opacity.", "Mild cardiomegaly. Right apical nodule."]
    assert torch.equal(place_code(texts, fallback.describes_drawn), place_code(texts))


def test_sentence_places_and_mask_parts():
    assert sentence_place("Mild cardiomegaly.") == Place(heart=True)
    assert sentence_place("Nodule in the left retrocardiac region.") == Place(sides=frozenset({"left"}),
                                                                               levels=frozenset({"lower"}))
    assert sentence_place("Tortuous aorta.") is None
    both = sentence_place("Bibasilar atelectasis.")
    assert both.sides == {"right", "left"} and both.levels == {"lower"}
    right = sentence_place("Right upper lobe nodule.")
    assert right.contains(0.2, 0.2) and not right.contains(0.8, 0.2) and not right.contains(0.2, 0.8)
    heart = Place(heart=True).region((S, S))
    assert not heart[RIGHT_UPPER > 0].any() and heart[HEART > 0].all()
    x0, x1, y0, y1 = HEART_BOX
    assert not Place(sides=frozenset({"left"})).contains((x0 + x1) / 2, (y0 + y1) / 2)  # the heart's own
    assert Place(sides=frozenset({"left"})).contains((x0 + x1) / 2, (y0 + y1) / 2, strict=False)
    parts = components(np.maximum(RIGHT_UPPER, LEFT_LOWER))
    assert len(parts) == 2 and [round(x, 2) for _, x, _ in parts] == [0.22, 0.84]


# ---------------------------------------------------------------------------------- learning
def cases(*pairs: tuple[str, np.ndarray], times: int = 1) -> tuple[list[str], np.ndarray]:
    texts = [text for text, _ in pairs] * times
    return texts, np.stack([mask for _, mask in pairs] * times)


def test_a_finding_alone_with_a_central_mask_is_drawn():
    texts, masks = cases(("Mild cardiomegaly.", HEART), ("Right upper lobe nodule.", RIGHT_UPPER),
                         ("Tortuous aorta. Left lower lobe opacity.", LEFT_LOWER), times=MIN_EVIDENCE)
    vocabulary = learn_vocabulary(texts, masks)
    heart = vocabulary.terms["cardiomegal"]
    assert (heart.status, heart.fallback, heart.n_alone, heart.n_alone_drawn) == (DRAWN, "", 3, 3)
    assert heart.area == pytest.approx(HEART.mean()) and heart.off_centre < 0.12 and heart.y > 0.6
    assert vocabulary.status("nodul") == DRAWN and vocabulary.terms["nodul"].off_centre > 0.2
    # the aorta is named beside a lesion only, and points nowhere: the rule decides, and says so
    assert vocabulary.terms["tortu"].fallback == "fallback: too few cases" and vocabulary.status("tortu") == NOT_DRAWN
    assert vocabulary.describes_drawn("The heart is enlarged, mild cardiomegaly.")
    table = vocabulary.describe()
    assert "cardiomegal" in table and "central, lower" in table and "fallback: too few cases" in table
    assert vocabulary.problem() == ""


def test_where_a_place_holds_no_part_of_the_mask_the_finding_is_not_drawn():
    texts, masks = cases(("Mild cardiomegaly. Right upper lobe nodule.", RIGHT_UPPER),
                         ("Healed left rib fracture. Right upper lobe opacity.", RIGHT_UPPER), times=MIN_EVIDENCE)
    vocabulary = learn_vocabulary(texts, masks)
    for term in ("cardiomegal", "fractur"):
        e = vocabulary.terms[term]
        assert (e.status, e.fallback, e.n_placed, e.n_placed_drawn) == (NOT_DRAWN, "", 3, 0)
    # the lesions' parts lie where their words point, and no other sentence's place holds them
    assert vocabulary.terms["nodul"].n_placed_drawn == 3 and vocabulary.terms["nodul"].fallback == ""
    assert not vocabulary.describes_drawn("Mild cardiomegaly.") and vocabulary.describes_drawn("Nodule.")


def test_mixed_evidence_falls_back_and_says_so():
    texts, masks = cases(("Mild cardiomegaly.", HEART), ("Mild cardiomegaly.", EMPTY), times=2)
    e = learn_vocabulary(texts, masks).terms["cardiomegal"]
    assert (e.n_alone, e.n_alone_drawn, e.fallback, e.status) == (4, 2, "fallback: mixed evidence", NOT_DRAWN)


def test_empty_masks_and_no_drawn_finding_are_problems():
    texts, masks = cases(("Right upper lobe nodule.", EMPTY), ("Left lower lobe opacity.", EMPTY), times=2)
    vocabulary = learn_vocabulary(texts, masks)
    assert vocabulary.n_empty == vocabulary.n_cases == 4 and "all 4 training masks are empty" in vocabulary.problem()
    vocabulary = learn_vocabulary(*cases(("Left basal opacity. Tortuous aorta.", RIGHT_UPPER), times=MIN_EVIDENCE))
    assert vocabulary.n_empty == 0 and vocabulary.terms["opaci"].fallback == ""  # the words miss the masks
    assert vocabulary.drawn_terms() == [] and "no finding term" in vocabulary.problem()
    with pytest.raises(ValueError, match="2 texts but 1 masks"):
        learn_vocabulary(["a", "b"], masks[:1])


def test_the_vocabulary_round_trips_through_the_checkpoint(tmp_path, checkpoint, text_dir):
    texts, masks = cases(("Mild cardiomegaly.", HEART), ("Right upper lobe nodule.", RIGHT_UPPER), times=3)
    vocabulary = learn_vocabulary(texts, masks)
    assert MaskVocabulary.from_dict(vocabulary.to_dict()) == vocabulary
    record = ModelRecord.load(checkpoint)
    assert record.version == 2 and MaskVocabulary.from_dict(record.vocabulary).learned  # finetune stored it
    record.vocabulary = vocabulary.to_dict()
    seg = Segmenter.from_checkpoint(record.save(tmp_path / "best_model.pth"), device="cpu", text_cache_dir=text_dir)
    assert seg.vocabulary == vocabulary and "drawn cardiomegal, nodul" in seg.describe()
    payload = record.to_payload()
    del payload["config"]["vocabulary"]
    payload["version"] = 1  # written before the vocabulary: the rule of lung lesions
    old = ModelRecord.from_payload(payload)
    assert old.vocabulary == {} and not MaskVocabulary.from_dict(old.vocabulary).learned
    assert "none stored" in MaskVocabulary.from_dict(old.vocabulary).summary()


# ---------------------------------------------------------------------------------- the demo
DEMO = dict(n_reports=300, n_masks=200, image_size=(64, 72), seed=0, make_zip=False)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    return {union: synthetic.make_demo_dataset(root / str(union), union=union, **DEMO) for union in (False, True)}


def learned(root) -> MaskVocabulary:
    catalog = load_catalog(root)
    splits = pd.read_csv(root / "patient_splits.csv")
    return vocabulary_of_cases(catalog.cases.merge(splits, on="uid"), size=64)


def test_the_vocabulary_learned_on_the_demo_matches_what_its_masks_draw(demos):
    plain, union = learned(demos[False]), learned(demos[True])
    print(plain.describe(), union.describe(), sep="\n\n")
    for vocabulary in (plain, union):
        for lesion in ("opaci", "nodul", "mass", "consolidat", "effusion", "atelecta"):
            assert (vocabulary.status(lesion), vocabulary.terms[lesion].fallback) == (DRAWN, ""), lesion
    assert plain.status("cardiomegal") == NOT_DRAWN and plain.status("enlarg") == NOT_DRAWN
    for heart in ("cardiomegal", "enlarg"):  # "Mild cardiomegaly.", "The heart is mildly enlarged."
        e = union.terms[heart]
        assert (e.status, e.fallback) == (DRAWN, "") and e.n_alone_drawn >= MIN_EVIDENCE
        assert e.off_centre < 0.12 and e.area > 2 * union.terms["mass"].area  # a large central mask


def test_union_masks_hold_the_heart_and_leave_the_rest_of_the_demo_as_it_was(demos):
    reports = {u: pd.read_csv(root / "indiana_reports.csv", keep_default_na=False).set_index("uid")
               for u, root in demos.items()}
    union = load_catalog(demos[True]).cases.set_index("uid")
    alone = [uid for uid in union.index
             if [s for s, label in label_sentences(union.at[uid, "text"]) if label == POSITIVE] in ([c] for c in CARDIOMEGALY)]
    assert len(alone) >= 10  # some labeled reports describe the heart alone
    for uid in alone:
        parts = components(load_mask(union.at[uid, "mask_path"]))
        assert len(parts) == 1 and Place(heart=True).contains(parts[0][1], parts[0][2])
    lesions = pd.read_csv(demos[True] / synthetic.LESIONS_CSV, keep_default_na=False)
    hearts = lesions[lesions["role"] == "heart"]
    assert set(hearts["kind"]) == {"cardiomegaly"} and set(hearts["sentence"]) <= set(CARDIOMEGALY)
    both = hearts[hearts["filename"].isin(lesions.loc[lesions["role"] == "target", "filename"])]
    assert len(both) >= 10  # a lesion and the heart in one mask: the union of their own masks
    for row in both.itertuples():
        case = union[union["filename"] == row.filename].iloc[0]
        target = lesions[(lesions["filename"] == row.filename) & (lesions["role"] == "target")].iloc[0]
        own = [load_mask(demos[True] / f) for f in (row.mask_file, target["mask_file"])]
        assert np.array_equal(load_mask(case["mask_path"], own[0].shape[::-1]), np.maximum(*own))
    # where the union setting does not act, every byte is the default demo's
    quiet = [uid for uid in reports[False].index
             if not any(c in reports[u].at[uid, "findings"] for u in (False, True) for c in CARDIOMEGALY)]
    assert len(quiet) > 200
    for uid in quiet:
        assert reports[True].loc[uid].equals(reports[False].loc[uid])
        name = f"{uid}_IM-{uid:04d}-1001.dcm.png"
        assert (demos[True] / "images/images_normalized" / name).read_bytes() == \
            (demos[False] / "images/images_normalized" / name).read_bytes()
    masks = {u: sorted(p.name for p in (root / MASKS_DIR).iterdir()) for u, root in demos.items()}
    assert masks[True] == masks[False]  # one mask per labeled image, in both


def test_union_probe_items_pair_the_lesion_with_the_heart(demos):
    catalog = load_catalog(demos[True])
    items = synthetic.probe_items(demos[True], catalog.cases)
    hearts = items[items["text"].isin(CARDIOMEGALY)]
    assert len(hearts) and all(Place(heart=True).contains(*components(load_mask(p))[0][1:])
                               for p in hearts["mask_path"])
    targets = items[items["role"] == "target"]
    assert not targets["mask_path"].isin(catalog.cases["mask_path"]).any()  # the lesion's own mask
    reports = synthetic.report_items(demos[True], catalog.cases)
    with_heart = reports[reports["kind"] == "cardiomegaly"]["report"]
    assert len(with_heart) and not any("Heart size is normal." in r for r in with_heart)


def test_demo_sources_name_their_settings(tmp_path):
    assert demo_options("") == {} and demo_options("forced") == {"distractors": "forced"}
    assert demo_options("forced,union") == {"distractors": "forced", "union": True} == demo_options(" Union ,forced")
    for bad in ("unions", "forced,realistic", "union,union"):
        with pytest.raises(DatasetError, match="demo:forced,union"):
            demo_options(bad)
    small = dict(n_reports=6, n_masks=4, image_size=(32, 40), make_zip=False)
    root = fetch_dataset("demo:forced,union", tmp_path, demo_kwargs=small)
    assert root.name == "demo-forced-union"
    assert fetch_dataset("demo:union", tmp_path, demo_kwargs=small).name == "demo-union"
    assert fetch_dataset("demo", tmp_path, demo_kwargs=small).name == "demo"


# ---------------------------------------------------------------------------------- targets
LUNGS = MaskVocabulary()  # the rule: lung lesions drawn, the heart not
HEARTS = learn_vocabulary(*cases(("Mild cardiomegaly.", HEART), ("Right upper lobe nodule.", RIGHT_UPPER),
                                 times=MIN_EVIDENCE))


def test_one_drawn_sentence_takes_the_whole_mask():
    mask = np.maximum(RIGHT_UPPER, LEFT_LOWER)
    targets = sentence_targets(["Mild cardiomegaly.", "Patchy opacity."], mask, LUNGS)
    assert not targets[0].any() and np.array_equal(targets[1], mask > 0)
    assert sentence_targets(["Mild cardiomegaly."], EMPTY, LUNGS)[0].sum() == 0  # nothing drawn, nothing there
    assert sentence_targets(["Mild cardiomegaly."], HEART, LUNGS) is None  # the mask holds what no sentence draws


def test_parts_go_to_the_sentences_whose_places_hold_them():
    mask = np.maximum.reduce([RIGHT_UPPER, LEFT_LOWER, HEART])
    sentences = ["Right upper lobe nodule.", "Mild cardiomegaly.", "Tortuous aorta.", "Left basilar opacity."]
    right, heart, aorta, left = sentence_targets(sentences, mask, HEARTS)
    assert np.array_equal(right, RIGHT_UPPER > 0) and np.array_equal(left, LEFT_LOWER > 0)
    assert np.array_equal(heart, HEART > 0) and not aorta.any()
    # the heart is not drawn by these masks: the same mask cannot be told apart, then
    assert sentence_targets(sentences, mask, LUNGS) is None


def test_parts_that_cannot_be_told_apart_ask_the_whole_report():
    mask = np.maximum(RIGHT_UPPER, LEFT_LOWER)
    assert sentence_targets(["Right upper lobe nodule.", "Patchy opacity."], mask, LUNGS) is None  # no place
    assert sentence_targets(["Right upper nodule.", "Right apical mass."], mask, LUNGS) is None  # one side twice
    assert sentence_targets(["Right upper nodule.", "Left basal opacity."], RIGHT_UPPER, LUNGS) is None  # one part
    touching = np.maximum(HEART, blob(18, 24, 19, 25))  # the heart and a lesion in one part
    assert sentence_targets(["Mild cardiomegaly.", "Left lower lobe opacity."], touching, HEARTS) is None


def test_a_place_swap_moves_the_parts_of_the_sentences_whose_words_it_changes():
    mask, report = np.maximum(RIGHT_UPPER, HEART), "Mild cardiomegaly. Right upper lobe nodule."
    for swap in (swap_sides, swap_levels):
        assert np.array_equal(staying_parts(report, mask, HEARTS, swap), HEART > 0)  # the heart stays
    assert not staying_parts("Right upper lobe nodule.", RIGHT_UPPER, HEARTS, swap_sides).any()
    assert not staying_parts(report, RIGHT_UPPER, LUNGS, swap_sides).any()  # the heart not drawn
    assert np.array_equal(staying_parts("Mild cardiomegaly.", HEART, HEARTS, swap_sides), HEART > 0)
    touching = np.maximum(HEART, blob(18, 24, 19, 25))  # which part moves cannot be told
    assert staying_parts("Mild cardiomegaly. Left lower lobe opacity.", touching, HEARTS, swap_sides) is None


def test_a_mask_moves_with_the_words_of_its_findings_and_the_union_demos_heart_stays(demos):
    """The place training's copies and swaps (`training.methods`) ask `staying_parts`. On the
    default demo (lesions drawn) a mask moves whole when a swap changes its lesion's words and
    stays whole when not ("a mass in the lingula" beside "leads in the right atrium"); on the
    union demo the heart stays while the lesion moves."""
    for union in (False, True):
        cases = load_catalog(demos[union]).cases.dropna(subset=["mask_path"])
        vocabulary, stays = learned(demos[union]), 0
        for text, path in zip(cases["text"], cases["mask_path"]):
            mask = load_mask(path, 64) > 0
            drawn = [s for s, label in label_sentences(text) if label == POSITIVE and vocabulary.describes_drawn(s)]
            for swap in (swap_sides, swap_levels):
                kept = staying_parts(text, mask, vocabulary, swap)
                if not union:
                    moved = any(swap(s) != s for s in drawn)
                    assert np.array_equal(kept, np.zeros_like(mask) if moved else mask), text
                elif kept is not None and kept.any() and not np.array_equal(kept, mask):
                    stays += 1
                    assert all(Place(heart=True).contains(x, y) for _, x, y in components(kept)), text
        assert (stays > 0) == union


# ---------------------------------------------------------------------------------- low confidence
def peak_at(x: int, y: int, value: float = 0.3) -> np.ndarray:
    """float32 [S, S]: a faint bump (under any usual threshold) centred at (x, y)."""
    yy, xx = np.mgrid[0:S, 0:S]
    return (value * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)).astype(np.float32)


def test_near_peak_keeps_the_pixels_around_a_peak_where_the_words_point():
    prob = peak_at(6, 6)
    mask = near_peak(prob, [sentence_place("Right upper lobe nodule.")])
    assert mask[6, 6] and np.array_equal(mask, prob >= 0.15)
    assert near_peak(prob, [sentence_place("Left upper lobe nodule.")]) is None  # the other side
    assert near_peak(prob, [sentence_place("Right lower lobe nodule.")]) is None  # the other level
    assert near_peak(prob, [None]) is not None  # a sentence that names no place
    assert near_peak(prob, []) is None and near_peak(np.zeros((S, S)), [None]) is None


@pytest.fixture
def segmenter(checkpoint, text_dir):
    seg = copy.copy(Segmenter.from_checkpoint(checkpoint, device="cpu", text_cache_dir=text_dir))
    seg.vocabulary = MaskVocabulary()  # lung lesions drawn, the heart not
    seg.threshold = 0.5  # above the faint bumps of `peak_at`
    return seg


def test_locate_gives_a_drawn_finding_a_low_confidence_mask_and_nothing_else(segmenter):
    prob = peak_at(6, 6)  # image-left upper: the patient's right upper lung
    mask, low = segmenter.locate(prob, "Heart size is normal. Right upper lobe nodule.", threshold=0.5)
    assert low and np.array_equal(mask, prob >= 0.15)
    for text in ("Heart size is normal. Left upper lobe nodule.",  # swapped side: nothing there
                 "Heart size is normal. No pneumothorax.",  # a normal report: nothing described
                 "Mild cardiomegaly."):  # described, but not drawn by these masks
        mask, low = segmenter.locate(prob, text, threshold=0.5)
        assert not low and not mask.any(), text
    mask, low = segmenter.locate(prob, "Right upper lobe nodule.", threshold=0.1)  # above the threshold
    assert not low and np.array_equal(mask, prob >= 0.1)


def test_ground_report_flags_low_confidence_masks_and_undrawn_findings(segmenter, monkeypatch):
    size = segmenter.image_size
    report = "Right upper lobe nodule. Left upper lobe opacity. Mild cardiomegaly. The lungs are clear."
    bump = torch.from_numpy(peak_at(6, 6))[None, None]  # image-left: the patient's right, for all three
    monkeypatch.setattr(segmenter, "predict_sentences", lambda image, texts: bump.expand(len(texts), 1, size, size))
    grounding = segmenter.ground_report(np.zeros((size, size), np.uint8), report, threshold=0.5)
    right, left, heart = grounding.sentences
    assert right.low_confidence and right.located and right.mask[6, 6] and right.drawn
    assert not left.low_confidence and not left.located and not left.mask.any()  # the swapped side
    assert not heart.drawn and not heart.low_confidence and not heart.mask.any()
    rows = [r for r in grounding.table() if r["index"]]
    assert [(r["low_confidence"], r["drawn"]) for r in rows] == [(True, True), (False, True), (False, False)]
    lines = table_lines(grounding.table())
    assert LOW_CONFIDENCE_NOTE in lines[0] and "not drawn by this dataset's masks" in lines[2]
    assert "(low confidence)" in report_html(grounding) and "not drawn by this dataset" in report_html(grounding)
    again = grounding.at_threshold(0.05)  # above it now: no fallback
    assert not again.sentences[0].low_confidence and again.sentences[0].area > right.area


# ---------------------------------------------------------------------------------- bad input
def test_prepare_refuses_masks_that_are_all_empty_and_warns_when_nothing_is_drawn(tmp_path, capsys,
                                                                                  monkeypatch):
    root = synthetic.make_demo_dataset(tmp_path / "demo", n_reports=14, n_masks=12, image_size=(64, 80),
                                       seed=3, make_zip=False)
    masks = sorted((root / MASKS_DIR).iterdir())
    for path in masks:
        Image.fromarray(np.zeros_like(np.asarray(Image.open(path)))).save(path)
    prep = prepare(str(root), "smoke", data_dir=tmp_path / "data", out_dir=tmp_path / "run")
    assert not prep.has_masks and "training masks are empty" in prep.masks_message
    assert "training masks are empty" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="training masks are empty"):
        prep.require_masks()
    shutil.rmtree(tmp_path / "run")
    # masks that hold something, but where the words point to nothing they hold (see
    # test_empty_masks_and_no_drawn_finding_are_problems): Phase 2 may run, and prepare says why to look
    nothing = learn_vocabulary(*cases(("Left basal opacity. Tortuous aorta.", RIGHT_UPPER), times=MIN_EVIDENCE))
    assert nothing.n_empty < nothing.n_cases and nothing.drawn_terms() == []
    monkeypatch.setattr("helpers.pipeline.vocabulary_of_cases", lambda cases: nothing)
    prep = prepare(str(root), "smoke", data_dir=tmp_path / "data", out_dir=tmp_path / "run")
    assert prep.has_masks and prep.vocabulary is nothing
    assert "Check the masks: no finding term of the training reports is drawn" in capsys.readouterr().err


def test_the_explorer_shows_and_says_a_low_confidence_mask(segmenter, monkeypatch, tmp_path):
    from matplotlib.figure import Figure

    from helpers.viz.explorer import explore

    Image.fromarray(np.zeros((S, S), np.uint8)).save(tmp_path / "image.png")
    cases = pd.DataFrame({"case_id": ["c"], "image_path": [str(tmp_path / "image.png")], "mask_path": [None],
                          "text": ["Right upper lobe nodule."], "split": ["test"]})
    monkeypatch.setattr(segmenter, "predict", lambda image, text: peak_at(6, 6))
    shown = []
    box = explore(cases, segmenter, plot_fn=lambda image, prob, text, **kw: shown.append((prob, kw)) or Figure(),
                  save_dir=tmp_path)
    prob, kw = shown[-1]
    assert LOW_CONFIDENCE_NOTE in box.given.value and (prob >= kw["threshold"])[6, 6]
    assert np.array_equal(prob >= kw["threshold"], peak_at(6, 6) >= 0.15)  # the mask shown: near the peak
    box.controls["text"].value = "Left upper lobe nodule."  # the swapped side: nothing, and nothing said
    prob, kw = shown[-1]
    assert LOW_CONFIDENCE_NOTE not in box.given.value and not (prob >= kw["threshold"]).any()


def test_split_by_finding_is_the_lesion_rule_where_the_masks_draw_lesions_only_and_parts_the_heart(demos):
    """On the default demo (the heart not drawn) the vocabulary splits every report as the rule
    `split_by_lesion` does; on the union demo a report of a lesion and cardiomegaly gives the
    lesion its own component and "cardiomegaly" the heart's."""
    from helpers.text.sentences import split_by_lesion
    from helpers.text.vocabulary import split_by_finding

    for union in (False, True):
        cases = load_catalog(demos[union]).cases.dropna(subset=["mask_path"])
        vocabulary = learned(demos[union])
        hearts = 0
        for text, path in zip(cases["text"], cases["mask_path"]):
            mask = load_mask(path, 64)
            split, rule = split_by_finding(text, mask, vocabulary), split_by_lesion(text)
            if not union:
                assert (split[:2] if split else None) == rule, text
                if split:
                    assert np.array_equal(split[2], mask > 0) and not split[3].any()
            elif split and split[3].any():  # another sentence owns a part: the heart
                hearts += 1
                assert not (split[2] & split[3]).any() and np.array_equal(split[2] | split[3], mask > 0)
                heart = [any(w in s.lower() for w in ("cardiomegal", "enlarg")) for s in split[:2]]
                assert sum(heart) == 1 and names_lesion(split[heart.index(False)]), split[:2]
        assert (hearts > 0) == union
