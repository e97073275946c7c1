"""The registry of training-text methods (helpers/training/methods.py): each method's plan and
items, the texts they ask with, the image-only control, and a new method added with one entry."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers.core.checkpoint import load_checkpoint
from helpers.core.settings import FinetuneConfig, setting
from helpers.model.losses import UNDESCRIBED
from helpers.text.reader import ReportReader
from helpers.text.vocabulary import DRAWN, MaskVocabulary, TermEvidence
from helpers.training import methods
from helpers.training.datasets import LabeledCases, labeled_arrays
from helpers.training.finetune import finetune
from helpers.training.methods import (
    METHODS,
    TEXTS,
    Item,
    MethodContext,
    MethodUse,
    TextMethod,
    active_methods,
    disjoint_cases,
    image_only,
    method_texts,
    method_uses,
    register,
)
from tests.training import lower_lesion, one_lesion

RIGHT = "Nodule in the right lung."  # names one side (the patient's right: the image's left)


def cases_with(shares: dict[str, float], images, masks, texts, rows, undescribed=False,
               vocabulary=None) -> LabeledCases:
    """LabeledCases whose items use the registry's methods `shares` (name -> share), planned on
    `texts` with the text rows `rows` (kind -> one row per case; "report": the cases' own) and
    the masks' `vocabulary` (None: the rule, a mask draws the described lesion)."""
    context = MethodContext(list(texts), list(texts), masks, ReportReader("raw"), vocabulary)
    uses = method_uses([(METHODS[name], share) for name, share in shares.items()], context, rows)
    return LabeledCases(images, masks, rows["report"], uses, undescribed=undescribed)


def test_the_registry_in_draw_order_with_settings_and_texts():
    assert list(METHODS) == ["flip", "null", "paste", "swap", "negative", "sentence"]
    cfg = FinetuneConfig()
    assert all(hasattr(cfg, m.setting) for m in METHODS.values())
    assert all(set(m.texts) <= set(TEXTS) for m in METHODS.values())
    assert [m.name for m, _ in active_methods(cfg)] == ["null", "paste", "swap", "sentence"]
    assert [m.name for m in METHODS.values() if not m.exclusive] == ["flip"]
    with pytest.raises(ValueError, match=r"null_rate \+ paste_prob \+ swap_prob \+ sentence_prob must be <= 1"):
        active_methods(dataclasses.replace(cfg, null_rate=0.6))
    with pytest.raises(ValueError, match="swap_prob must be shares between 0 and 1"):
        active_methods(dataclasses.replace(cfg, swap_prob=-0.1))


def test_the_texts_the_methods_ask_with():
    report = "Heart size is normal. No left effusion. Patchy opacity at the right upper lobe."
    both = f"Mild cardiomegaly. {report}"
    reader = ReportReader("positive")
    context = MethodContext([report, both], [reader.model_text(r) for r in (report, both)],
                            np.zeros((2, 4, 4), np.uint8), reader)
    texts = method_texts(active_methods(FinetuneConfig()), context)
    assert list(texts) == ["flipped", "null", "leveled", "lesion", "beside"]  # the table's order
    assert texts["flipped"][0] == "Patchy opacity at the left upper lobe."
    assert texts["leveled"][0] == "Patchy opacity at the right lower lobe."
    assert texts["null"] == ["Heart size is normal. No left effusion."] * 2  # all normal: all kept
    # the sentence that names the lesion and the others; unknown: the report's own text
    assert texts["lesion"] == ["Patchy opacity at the right upper lobe."] * 2
    assert texts["beside"] == ["Patchy opacity at the right upper lobe.", "Mild cardiomegaly."]
    assert method_texts([], context) == {}


def test_concordant_flip_mirrors_and_switches_text():
    images = np.zeros((1, 16, 16), np.uint8)
    images[0, :, :4] = 200
    ds = cases_with({"flip": 1.0}, images, (images > 0).astype(np.uint8), [RIGHT],
                    {"report": [0], "flipped": [1]})
    image, mask, text = ds[0]
    assert text == 1 and mask[0, :, -4:].all() and not mask[0, :, :4].any()
    with pytest.raises(ValueError, match="plan of flip has 0 entries for 1 cases"):
        LabeledCases(images, images, [0], [MethodUse(METHODS["flip"], 0.5, [])])


def test_negatives_get_another_text_and_an_empty_mask():
    images = np.zeros((2, 16, 16), np.uint8)
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, :4, :4] = masks[1, -4:, -4:] = 1
    ds = cases_with({"negative": 1.0}, images, masks, ["a", "b"], {"report": [5, 6]})
    _, mask, text = ds[0]
    assert text == 6 and mask.sum() == 0  # case 1's text, which describes nothing here
    touching = masks.copy()
    touching[1, :4, :4] = 1
    never = cases_with({"negative": 1.0}, images, touching, ["a", "b"], {"report": [5, 6]})
    assert never[0][2] == 5 and never[0][1].sum() == 16  # no candidate: the item stays as it is


def test_disjoint_cases_lists_masks_that_do_not_touch():
    masks = np.zeros((3, 8, 8), np.uint8)
    masks[0, :4, :4] = masks[1, 2:6, 2:6] = masks[2, 6:, 6:] = 1
    assert disjoint_cases(masks) == [[2], [2], [0, 1]]


def test_paste_asks_for_either_copy_by_its_side_and_swap_and_null_empty_the_target():
    images, masks = one_lesion()
    torch.manual_seed(0)
    rows = {"report": [0], "flipped": [1], "leveled": [3], "null": [2], "lesion": [3], "beside": [4]}
    ds = cases_with({"paste": 1.0}, images, masks, [RIGHT], rows)
    seen = set()
    for _ in range(20):
        image, mask, text = ds[0]
        assert (image[0, 10:18, 20:28] > 0.5).all()  # the copy is always there
        own = bool(mask[0, 10:18, 4:12].all() and not mask[0, :, 16:].any())
        copy = bool(mask[0, 10:18, 20:28].all() and not mask[0, :, :16].any())
        assert (text, own, copy) in {(0, True, False), (1, False, True)}
        seen.add(text)
    assert seen == {0, 1}
    unsided = cases_with({"paste": 1.0}, images, masks, ["Nodule."], rows)
    image, mask, text = unsided[0]
    assert text == 0 and image[0, 10:18, 20:28].max() < 0  # no place word: nothing is pasted
    swap = cases_with({"swap": 1.0}, images, masks, [RIGHT], rows)
    assert swap[0][2] == 1 and swap[0][1].sum() == 0
    assert cases_with({"swap": 1.0}, images, masks, ["Nodule."], rows)[0][2] == 0  # no side: as it is
    null = cases_with({"null": 1.0}, images, masks, [RIGHT], rows)
    assert null[0][2] == 2 and null[0][1].sum() == 0


def test_one_sentence_alone_asks_with_the_lesion_or_the_others():
    images, masks = one_lesion()
    report = "Mild cardiomegaly. Patchy opacity at the right upper lobe."
    rows = {"report": [0], "lesion": [3], "beside": [4]}
    alone = cases_with({"sentence": 1.0}, images, masks, [report], rows)
    items = {(text, int(mask.sum())) for _, mask, text in (alone[0] for _ in range(20))}
    assert items == {(3, int(masks.sum())), (4, 0)}
    unknown = cases_with({"sentence": 1.0}, images, masks, ["Patchy opacity at the right upper lobe."], rows)
    assert unknown[0][2] == 0 and unknown[0][1].sum() == masks.sum()  # the report as it is


def test_paste_to_the_other_level_asks_with_the_level_swapped_text():
    images, masks = lower_lesion()  # in the lower zone of the image's left lung
    torch.manual_seed(0)
    ds = cases_with({"paste": 1.0}, images, masks, ["Opacity at the lung base."],
                    {"report": [0], "flipped": [0], "leveled": [3]})
    texts = set()
    for _ in range(12):
        image, mask, text = ds[0]
        texts.add(text)
        assert (image[0, 14:20, 4:10] > 0.5).all()
        assert bool(mask[0, 26:32, 4:10].all()) == (text == 0) and bool(mask[0, 14:20, 4:10].all()) == (text == 3)
    assert texts == {0, 3}


def test_undescribed_lesions_are_marked_in_the_target():
    images, masks = one_lesion()
    torch.manual_seed(0)
    rows = {"report": [0], "flipped": [1], "leveled": [1], "null": [2]}
    ds = cases_with({"paste": 1.0}, images, masks, [RIGHT], rows, undescribed=True)
    for _ in range(8):
        _, mask, text = ds[0]
        asked, other = ((slice(4, 12), slice(20, 28)) if text == 0 else (slice(20, 28), slice(4, 12)))
        assert (mask[0, 10:18, asked] == 1).all() and (mask[0, 10:18, other] == UNDESCRIBED).all()
    null = cases_with({"null": 1.0}, images, masks, [RIGHT], rows, undescribed=True)
    assert set(null[0][1].unique().tolist()) == {0.0, float(UNDESCRIBED)}


def test_paste_to_both_places_makes_three_lesions_and_asks_for_one():
    images, masks = lower_lesion()  # in the lower zone of the image's left lung
    torch.manual_seed(1)
    ds = cases_with({"paste": 1.0}, images, masks, ["Opacity at the right base."],
                    {"report": [0], "flipped": [1], "leveled": [2]}, undescribed=True)
    places = {0: (slice(26, 32), slice(4, 10)), 1: (slice(26, 32), slice(30, 36)),
              2: (slice(14, 20), slice(4, 10))}  # own, mirror copy, level copy
    seen = set()
    for _ in range(40):
        image, mask, text = ds[0]
        shown = {k for k, (r, c) in places.items() if (image[0, r, c] > 0.5).all()}
        assert 0 in shown and text in shown and len(shown) in (2, 3)
        assert (mask[0, places[text][0], places[text][1]] == 1).all()
        for k in shown - {text}:
            assert (mask[0, places[k][0], places[k][1]] == UNDESCRIBED).all()
        seen.add((len(shown), text))
    assert {n for n, _ in seen} == {2, 3} and {t for _, t in seen} == {0, 1, 2}


def test_where_the_masks_draw_the_heart_paste_copies_the_lesion_alone_and_swap_keeps_the_heart():
    """A mask that holds a lesion and the heart ("Mild cardiomegaly." drawn): the copy is of the
    lesion, and the side-swapped text is asked with the copy and the heart, whose words name no
    side; the swap empties the lesion and keeps the heart. Under the rule (no vocabulary) the
    whole mask would be copied, heart included: its mirror place is not free, so nothing is."""
    images, masks = one_lesion()  # the lesion at rows 10:18, columns 4:12
    heart = np.zeros_like(masks[0])
    heart[20:28, 14:19] = 1  # central, low
    images[0][heart > 0] = 200
    both = np.maximum(masks, heart[None])
    vocabulary = MaskVocabulary({"cardiomegal": TermEvidence("cardiomegal", status=DRAWN)}, n_cases=1)
    report, rows = "Mild cardiomegaly. Nodule in the right lung.", {"report": [0], "flipped": [1], "leveled": [3]}
    lesion, copy = (slice(10, 18), slice(4, 12)), (slice(10, 18), slice(20, 28))
    torch.manual_seed(0)
    paste = cases_with({"paste": 1.0}, images, both, [report], rows, True, vocabulary)
    seen = set()
    for _ in range(20):
        image, mask, text = paste[0]
        assert (image[0][copy] > 0.5).all() and (mask[0][heart > 0] == 1).all()  # the heart: asked
        asked, other = (lesion, copy) if text == 0 else (copy, lesion)
        assert (mask[0][asked] == 1).all() and (mask[0][other] == UNDESCRIBED).all()
        seen.add(text)
    assert seen == {0, 1}
    context = MethodContext([report], [report], both, ReportReader("raw"))
    assert METHODS["paste"].plan(context, rows) == [None]
    _, mask, text = cases_with({"swap": 1.0}, images, both, [report], rows, True, vocabulary)[0]
    assert text == 1 and (mask[0][heart > 0] == 1).all() and (mask[0][lesion] == UNDESCRIBED).all()
    assert int((mask == 1).sum()) == int(heart.sum())


def _task(cfg, cases, tmp_path, text_dir):
    from helpers.training.finetune import SegmentationTask

    train, val = (labeled_arrays(cases[cases["split"] == s].reset_index(drop=True), cfg.image_size)
                  for s in ("train", "val"))
    return SegmentationTask(cfg, train, val, torch.device("cpu"), tmp_path, text_dir), train


def test_image_only_reads_no_text_whichever_way_it_is_asked(cases, tmp_path, finetune_cfg, text_dir, capsys):
    """`fusion="none"` (the CLI's `--fusion none`, a notebook's FINETUNE, the ablation's control)
    trains without the place prior and without any text method."""
    from helpers.__main__ import build_parser
    from helpers.core.settings import apply_flags, preset

    args = build_parser().parse_args(["finetune", "--fusion", "none"])
    cfg = dataclasses.replace(apply_flags(finetune_cfg, args, "finetune"), paste_prob=0.5, null_rate=0.2)
    assert cfg.fusion == "none" and cfg.place_prior and cfg.paste_prob == 0.5  # as asked
    task, _ = _task(cfg, cases, tmp_path, text_dir)
    assert "image-only control" in capsys.readouterr().out
    assert task.model.place_prior is None and task.loader.dataset.exclusive == task.loader.dataset.after == []
    assert task.config["place_prior"] is False and task.config["paste_prob"] == task.config["null_rate"] == 0
    assert image_only(preset("demo").finetune) == preset("demo").finetune  # other fusions: unchanged


class Shout(TextMethod):
    """A toy method: the case's text in capitals, with its mask (a new kind of text, "shouted")."""

    name, setting, texts = "shout", "shout_prob", ("shouted",)

    def plan(self, ctx, rows):
        return rows["shouted"]

    def apply(self, item, plan):
        return Item(item.image, item.mask, plan, item.hard)


def test_a_new_method_is_one_entry(cases, tmp_path, finetune_cfg, text_dir, monkeypatch):
    """Registering a method (and its kind of text) is all it takes: the task encodes its texts, the
    dataset draws it, the loop trains with it, the ablation leaves it out of the image-only row."""
    from helpers.core.settings import AblationConfig
    from helpers.evaluation.ablation import ablation_variants
    from helpers.text.encoders import EmbeddingCache
    from helpers.training.loop import FitSettings, fit

    monkeypatch.setattr(methods, "METHODS", dict(METHODS))
    monkeypatch.setattr(methods, "TEXTS", dict(TEXTS))
    methods.TEXTS["shouted"] = lambda ctx: [t.upper() for t in ctx.texts]
    register(Shout)
    ToyConfig = dataclasses.make_dataclass(  # its settings field (in core/settings.py for a real one)
        "ToyConfig", [("shout_prob", float, setting(0.0, "share of items asked in capitals"))],
        bases=(FinetuneConfig,))
    cfg = ToyConfig(**{**dataclasses.asdict(finetune_cfg), "epochs": 1}, shout_prob=1.0)
    task, train = _task(cfg, cases, tmp_path, text_dir)
    shouted = [task.reader.model_text(t).upper() for t in train.cases["text"]]
    expected = EmbeddingCache(task.text_encoder, places=cfg.place_prior).get(shouted)
    for i in range(len(train.cases)):
        torch.testing.assert_close(task.table[task.loader.dataset[i][2]], expected[i])  # in capitals
    result = fit(task, FitSettings(1, 0.0, "val_select", True, "best.pth"), tmp_path / "run", progress=False)
    assert len(result.history) == 1 and task.config["shout_prob"] == 1.0
    control = ablation_variants(cfg, AblationConfig(fusions=(), with_init=False, with_upsampling=False))[2]
    assert control.name == "image only (none)" and control.overrides["shout_prob"] == 0.0
    with pytest.raises(ValueError, match="FinetuneConfig has no setting shout_prob"):
        active_methods(FinetuneConfig())


def test_finetune_with_place_training_encodes_swapped_and_null_texts(cases, tmp_path, finetune_cfg,
                                                                      text_dir):
    from helpers.core.layout import TEXT_EMBEDDINGS_FILE
    from helpers.text.places import swap_sides
    from helpers.text.sentences import null_text, select_text, split_by_lesion

    cfg = dataclasses.replace(finetune_cfg, epochs=1, fusion="cross_attn", text_mode="positive",
                              paste_prob=0.3, swap_prob=0.2, null_rate=0.2, sentence_prob=0.2)
    result = finetune(cfg, cases, tmp_path, text_cache_dir=text_dir, progress=False)
    assert result.best_path.exists()
    stored = load_checkpoint(tmp_path / TEXT_EMBEDDINGS_FILE)["texts"]
    train = cases[cases["split"] == "train"]["text"]
    split = [split_by_lesion(text) for text in train]
    assert any(split)  # the demo's reports name other findings beside the lesion
    for text, sentences in zip(train, split):
        model_text = select_text(text, "positive")
        assert swap_sides(model_text) in stored
        assert select_text(null_text(text), "positive") in stored
        assert sentences is None or set(sentences) <= set(stored)


def test_one_sentence_alone_with_its_own_part_of_a_mask_that_holds_two_findings():
    """With the masks' vocabulary in the context, a sentence is asked with its own part of the mask
    and the report's other sentences with the rest, the part not asked about marked undescribed."""
    images, masks = one_lesion()
    own, rest = masks[0] > 0, np.zeros(masks.shape[1:], bool)
    rest[-4:, :4] = True  # another finding's part, e.g. the heart
    plan = [(3, 4, own, rest)]
    use = MethodUse(METHODS["sentence"], 1.0, plan)
    both = (masks[:1] | rest[None]).astype(np.uint8)
    cases = LabeledCases(images, both, [0], [use], undescribed=True)
    seen = {}
    for _ in range(30):
        _, target, text = cases[0]
        seen[text] = target[0]
    assert set(seen) == {3, 4}
    assert torch.equal(seen[3] == 1, torch.from_numpy(own)) and torch.equal(seen[3] == UNDESCRIBED, torch.from_numpy(rest))
    assert torch.equal(seen[4] == 1, torch.from_numpy(rest)) and torch.equal(seen[4] == UNDESCRIBED, torch.from_numpy(own))
