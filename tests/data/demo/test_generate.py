"""The demo generator (helpers/data/demo/): images, masks, reports, probes, as the data contract says."""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core.layout import PATIENT_SPLITS_CSV
from helpers.data.catalog import load_catalog
from helpers.data.demo import generate as synthetic
from helpers.data.demo import reports as st
from helpers.data.demo.generate import report_items
from helpers.data.demo.reports import NORMALS
from helpers.data.io import load_gray, load_mask
from helpers.text.sentences import sentence_status, split_sentences

SMALL = dict(n_reports=12, n_masks=8, image_size=(64, 96), distractors="forced")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return synthetic.make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", **SMALL)


@pytest.fixture(scope="module")
def catalog(demo):
    return load_catalog(demo)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


N_LABELED = 160


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = synthetic.make_demo_dataset(tmp_path_factory.mktemp("texts") / "demo", n_reports=200,
                                       n_masks=N_LABELED, image_size=(48, 56), make_zip=False,
                                       distractors="forced")
    reports = pd.read_csv(root / "indiana_reports.csv", keep_default_na=False).set_index("uid")
    lesions = pd.read_csv(root / synthetic.LESIONS_CSV, keep_default_na=False)
    splits = pd.read_csv(root / PATIENT_SPLITS_CSV)
    return root, reports, lesions, splits


def _kind_word(kind: str) -> str:
    return {"nodule": "nodul", "atelectasis": "atelecta"}.get(kind, kind)


def _places_in(text: str) -> list[tuple[str, str, str]]:
    """(zone, phrase, pool) of each place phrase in `text`, leaving out those inside a longer one
    ("right lower lobe" inside "posterior segment of the right lower lobe")."""
    hits = []
    for table in (st.LOCATIONS, st.MODIFIERS):
        for zone, phrases in table.items():
            for pool in ("train", "held"):
                for phrase in st.pooled(phrases, pool):
                    for m in re.finditer(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", text, re.IGNORECASE):
                        hits.append((m.start(), m.end(), zone, phrase, pool))
    return [h[2:] for h in hits if not any(o[0] <= h[0] and h[1] <= o[1] and o[1] - o[0] > h[1] - h[0]
                                           for o in hits)]


def _alternation(options) -> str:
    return "(?:" + "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True)) + ")"


def _shape_regex(shape: str, kind: str) -> re.Pattern:
    """A full-sentence pattern of one sentence shape for `kind`, its slots filled by any variant."""
    sides = "(?:right|left)"
    tails = [re.escape(t).replace(re.escape("{s}"), sides).replace(re.escape("{size}"), r"\d+(?:\.\d)? (?:cm|mm)")
             for t in st.TAILS[kind]]
    slots = {"a": "(?:an? )?", "adj": _alternation(st.QUALIFIERS[kind]), "s": sides,
             "noun": _alternation(st.NOUNS.get(kind, ["effusion"])), "sd": f"{sides}(?:-sided)?",
             "loc": _alternation(p for v in st.LOCATIONS.values() for p in v),
             "mod": _alternation(p for v in st.MODIFIERS.values() for p in v),
             "tail": "(?:" + "|".join(sorted(tails, key=len, reverse=True)) + ")"}
    parts = re.split(r"\{(\w+)\}", shape)
    pattern = "".join(slots[p.lower()] if i % 2 else re.escape(p) for i, p in enumerate(parts))
    return re.compile(pattern, re.IGNORECASE)


def _shapes_matching(sentence: str, kind: str, pool: str) -> list[str]:
    shapes = st.EFFUSION_SHAPES if kind == "effusion" else st.SHAPES
    return [s for s in st.pooled(shapes, pool) if _shape_regex(s, kind).fullmatch(sentence)]


@pytest.fixture(scope="module")
def realistic(tmp_path_factory):
    root = synthetic.make_demo_dataset(tmp_path_factory.mktemp("realistic") / "demo", n_reports=200,
                                       n_masks=N_LABELED, image_size=(48, 56), make_zip=False)
    return root, pd.read_csv(root / synthetic.LESIONS_CSV, keep_default_na=False)


def test_report_items_describe_every_lesion_of_an_image(demo_root, catalog):
    denies = {text: set(kinds) for _, kinds, text in NORMALS}
    normals = set(denies)
    items = report_items(demo_root, catalog.cases)
    assert set(items["n_lesions"]) == {3}  # forced setting: the target and two undescribed lesions
    assert items["report_id"].nunique() == len(catalog.cases) and len(items) == 3 * len(catalog.cases)
    for _, rows in items.groupby("report_id"):
        sentences = split_sentences(rows["report"].iloc[0])
        assert set(rows["sentence"]) <= set(sentences)
        others = [s for s in sentences if s not in set(rows["sentence"])]
        assert 1 <= len(others) <= 2 and set(others) <= normals
        assert not any(kinds & set(rows["kind"]) for kinds in map(denies.get, others))  # none denies a lesion
        assert all(sentence_status(s) == "positive" for s in rows["sentence"])
        assert rows["mask_path"].nunique() == 3 and all((load_mask(p) > 0).any() for p in rows["mask_path"])
    assert items.equals(report_items(demo_root, catalog.cases))  # seeded
    orders = [report_items(demo_root, catalog.cases, seed=s)["report"].tolist() for s in (0, 1)]
    assert orders[0] != orders[1]


def test_demo_probe_items_pair_each_distractor_with_the_target(demo_root, catalog):
    from helpers.data.demo.generate import probe_items

    items = probe_items(demo_root, catalog.cases.head(3))
    assert len(items) == 3 * 2 * 2  # 2 distractors per image, both directions
    first = items.iloc[0]
    assert first["mask_path"] == catalog.cases["mask_path"].iloc[0]
    assert items.iloc[1]["other_mask_path"] == first["mask_path"]
    assert (load_mask(items.iloc[1]["mask_path"]) > 0).any()


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, demo):
    again = synthetic.make_demo_dataset(tmp_path / "again", **SMALL)
    assert _tree_bytes(again) == _tree_bytes(demo)
    other = synthetic.make_demo_dataset(tmp_path / "other", **{**SMALL, "seed": 1})
    name = "images/images_normalized/1_IM-0001-1001.dcm.png"
    assert (other / name).read_bytes() != (demo / name).read_bytes()


def test_catalog_of_demo_has_expected_counts(catalog):
    summary = catalog.summary()
    assert summary["images"] == 24 and summary["frontal"] == 12 and summary["lateral"] == 12
    assert summary["reports"] == 12 and summary["reports_without_text"] == 0
    assert summary["labeled_cases"] == 8 and summary["masks"] == 9 and summary["orphan_masks"] == 1
    assert set(catalog.problems["kind"]) == {"orphan_mask", "size_mismatch"}
    assert (catalog.cases["projection"] == "Frontal").all()
    assert sorted(catalog.cases["uid"]) == list(range(1, 9))
    assert catalog.cases["text_source"].value_counts().to_dict() == {"findings": 7, "impression": 1}
    assert not catalog.reports["text"].str.contains("XXXX").any()


def test_images_are_8bit_and_sizes_vary_within_bounds(catalog):
    sizes = catalog.images[["width", "height"]].to_numpy(dtype=int)
    assert sizes.min() >= 64 and sizes.max() <= 96
    assert (sizes[:, 0] != sizes[:, 1]).any()  # width and height drawn independently
    with Image.open(catalog.images["path"].iloc[0]) as img:
        assert img.mode == "L"


def test_mask_forms_vary_and_all_load_as_binary(catalog):
    names = [Path(p).name for p in catalog.cases["mask_path"]]
    assert any(n.endswith("_mask.PNG") for n in names) and any(n.endswith(".dcm.PNG") for n in names)
    assert any(n.endswith("-mask.png") for n in names) and any(n.endswith(".dcm_mask.png") for n in names)
    for path in catalog.cases["mask_path"]:
        mask = load_mask(path)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}


def test_mask_lies_on_the_image_side_the_text_names(catalog, demo):
    targets = pd.read_csv(demo / synthetic.LESIONS_CSV).query("role == 'target'").set_index("uid")
    for row in catalog.cases.itertuples():
        target = targets.loc[row.uid]
        side = target.zone.split()[0]
        if row.text_source == "findings":
            assert target.sentence in row.text
            assert side in target.sentence.lower() or "lingula" in target.sentence.lower(), target.sentence
        image = load_gray(row.image_path)
        mask = load_mask(row.mask_path, size=image.shape[::-1])
        centroid_x = np.nonzero(mask)[1].mean()
        if side == "right":  # the patient's right is on the image's left
            assert centroid_x < image.shape[1] / 2, row.text
        else:
            assert centroid_x > image.shape[1] / 2, row.text


def test_every_labeled_image_has_a_visible_distractor_outside_the_mask(catalog, demo):
    lesions = pd.read_csv(demo / synthetic.LESIONS_CSV)
    for row in catalog.cases.itertuples():
        image = load_gray(row.image_path).astype(float)
        mask = load_mask(row.mask_path, size=image.shape[::-1])
        h, w = image.shape
        lung_band = image[int(0.25 * h): int(0.6 * h)]
        lungs = np.concatenate([lung_band[:, int(0.12 * w): int(0.35 * w)].ravel(),
                                lung_band[:, int(0.65 * w): int(0.88 * w)].ravel()])
        background = np.percentile(lungs, 30)  # ribs and lesions are brighter
        own = lesions[lesions["uid"] == row.uid]
        distractors = own[own["role"] == "distractor"]
        assert 1 <= len(distractors) <= 2
        assert set(distractors["zone"]).isdisjoint(own.loc[own["role"] == "target", "zone"])
        for d in distractors.itertuples():
            assert mask[d.y, d.x] == 0
            assert image[max(d.y - 1, 0): d.y + 2, max(d.x - 1, 0): d.x + 2].mean() > background + 40
        target = own[own["role"] == "target"].iloc[0]
        assert mask[target.y, target.x] == 1
        assert _kind_word(target.kind) in row.text.lower()


def test_effusions_only_in_lower_zones(demo):
    lesions = pd.read_csv(demo / synthetic.LESIONS_CSV)
    assert lesions["zone"].isin(st.ZONES).all()
    assert lesions.loc[lesions["kind"] == "effusion", "zone"].str.endswith("lower").all()


def test_zip_holds_the_layout(demo):
    with zipfile.ZipFile(demo / synthetic.ZIP_NAME) as zf:
        names = set(zf.namelist())
    assert {"indiana_reports.csv", "indiana_projections.csv"} <= names
    assert sum(n.startswith("images/images_normalized/") for n in names) == 24
    assert sum(n.startswith("masked/") for n in names) == 9


def test_without_quirks_masks_are_plain_and_nothing_is_orphaned(tmp_path):
    root = synthetic.make_demo_dataset(tmp_path / "plain", n_reports=6, n_masks=4, image_size=(48, 64),
                                       make_zip=False, quirks=False)
    catalog = load_catalog(root)
    assert not (root / synthetic.ZIP_NAME).exists()
    assert catalog.problems.empty and len(catalog.cases) == 4
    assert (catalog.cases["text_source"] == "findings").all()
    assert not catalog.reports["findings"].str.contains("XX").any()


def test_smoke_size_works(tmp_path):
    root = synthetic.make_demo_dataset(tmp_path / "smoke", n_reports=20, n_masks=16, image_size=(96, 128),
                                       make_zip=False)
    assert load_catalog(root).summary()["labeled_cases"] == 16


def test_regenerates_over_an_old_demo_but_refuses_a_foreign_folder(tmp_path):
    root = synthetic.make_demo_dataset(tmp_path / "d", n_reports=6, n_masks=2, image_size=(32, 40))
    synthetic.make_demo_dataset(root, n_reports=3, n_masks=2, image_size=(32, 40))
    assert len(list((root / "images/images_normalized").iterdir())) == 6
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        synthetic.make_demo_dataset(foreign, n_reports=3, n_masks=2)
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("kwargs", [dict(n_reports=3, n_masks=4), dict(n_reports=0, n_masks=0),
                                    dict(image_size=(96, 64)), dict(image_size=(8, 8))])
def test_bad_arguments_raise(tmp_path, kwargs):
    with pytest.raises(ValueError):
        synthetic.make_demo_dataset(tmp_path / "x", **kwargs)


def test_findings_vocabulary_and_length_are_like_real_reports(texts):
    _, reports, _, _ = texts
    findings = reports.loc[1:N_LABELED, "findings"].iloc[:150]
    words = [re.findall(r"[a-z]+", t.lower()) for t in findings]
    assert len({w for ws in words for w in ws}) >= 300
    assert np.mean([len(ws) for ws in words]) >= 30
    tokens = np.array([st.estimate_clip_tokens(t) for t in findings])
    assert 0.10 <= (tokens > 77).mean() <= 0.40
    with_xxxx = findings.str.contains("XXXX").mean()
    assert 0.1 <= with_xxxx <= 0.4


def test_target_sentence_is_in_its_report_and_names_kind_side_and_level(texts):
    _, reports, lesions, _ = texts
    targets = lesions[lesions["role"] == "target"]
    cut = 0
    for t in targets.itertuples():
        findings = reports.loc[t.uid, "findings"]
        if not findings:  # the quirk's empty findings
            continue
        assert t.sentence and t.sentence in findings
        assert _kind_word(t.kind) in t.sentence.lower(), t.sentence
        places = _places_in(t.sentence)
        assert {zone for zone, *_ in places} <= {t.zone}, t.sentence
        if t.kind == "effusion":  # effusions lie in the lower zones: the side is the place
            assert t.zone.split()[0] in t.sentence.lower(), t.sentence
        else:
            assert places, t.sentence
        before = findings[: findings.index(t.sentence)]
        cut += st.estimate_clip_tokens(before) >= 70  # CLIP's window ends before the sentence
    assert cut >= 3


def test_no_report_describes_or_denies_a_drawn_lesion_it_should_not(texts):
    _, reports, lesions, _ = texts
    for uid, own in lesions.groupby("uid"):
        sentences = re.split(r"(?<=\.) ", reports.loc[uid, "findings"])
        for d in own[own["role"] == "distractor"].itertuples():
            side = d.zone.split()[0]
            for sentence in sentences:
                low = sentence.lower()
                if _kind_word(d.kind) not in low:
                    continue
                assert d.zone not in {zone for zone, *_ in _places_in(sentence)}, (d, sentence)
                assert not (d.kind == "effusion" and side in low), (d, sentence)
        for lesion in own.itertuples():  # nothing drawn is denied, on its side or anywhere
            side = lesion.zone.split()[0]
            for kinds, text in st.SIDED_NEGATIONS:
                assert lesion.kind not in kinds or text.format(s=side) not in sentences, (lesion, text)
            for _, kinds, text in st.NORMALS:
                assert lesion.kind not in kinds or text not in sentences, (lesion, text)


def test_patient_splits_cover_every_uid_once(texts):
    _, reports, _, splits = texts
    assert list(splits.columns) == ["uid", "split"]
    assert sorted(splits["uid"]) == sorted(reports.index) and splits["uid"].is_unique
    labeled = splits[splits["uid"] <= N_LABELED]["split"].value_counts().to_dict()
    assert labeled == {"train": 112, "val": 24, "test": 24}
    assert (splits[splits["uid"] > N_LABELED]["split"] == "train").all()


def test_every_phrasing_list_keeps_variants_in_both_pools():
    lists = [*st.LOCATIONS.values(), *st.MODIFIERS.values(), st.SHAPES, st.EFFUSION_SHAPES, st.EFFUSION_SIDES,
             *st.NOUNS.values(), *st.QUALIFIERS.values(), *st.TAILS.values()]
    for options in lists:
        train, held = st.pooled(options, "train"), st.pooled(options, "held")
        assert train and held and sorted(train + held) == sorted(options)
    assert "right basilar" in st.pooled(st.MODIFIERS["right lower"], "held")
    assert "right base" in st.pooled(st.MODIFIERS["right lower"], "train")


def test_test_reports_use_held_out_phrasings_only_and_train_reports_never(texts):
    _, reports, lesions, splits = texts
    split_of = splits.set_index("uid")["split"]
    seen = {"train": set(), "held": set()}
    for row in lesions.itertuples():
        if not row.sentence:
            continue
        pool = st.pool_of(split_of[row.uid])
        other = "train" if pool == "held" else "held"
        assert _shapes_matching(row.sentence, row.kind, pool), (pool, row.sentence)
        assert not _shapes_matching(row.sentence, row.kind, other), (pool, row.sentence)
        for zone, phrase, phrase_pool in _places_in(row.sentence):
            assert phrase_pool == pool, (pool, phrase, row.sentence)
            seen[pool].add(phrase)
        if row.role == "target" and reports.loc[row.uid, "findings"]:
            assert row.sentence in reports.loc[row.uid, "findings"]
    assert len(seen["held"]) >= 10 and len(seen["train"]) >= 30


def test_probe_masks_cover_each_distractor(texts):
    root, _, lesions, _ = texts
    labeled = lesions[lesions["uid"] <= N_LABELED]
    assert (lesions.loc[lesions["role"] != "distractor", "mask_file"] == "").all()
    distractors = labeled[labeled["role"] == "distractor"]
    assert len(distractors) == 2 * N_LABELED
    assert len(list((root / synthetic.PROBE_DIR).iterdir())) == len(distractors)
    for d in distractors.itertuples():
        with Image.open(root / d.mask_file) as img:
            mask = np.asarray(img)
        with Image.open(root / "images/images_normalized" / d.filename) as img:
            assert mask.shape == img.size[::-1]
        assert set(np.unique(mask)) == {0, 255} and mask[d.y, d.x] == 255
        assert (mask > 0).sum() == d.area


def test_realistic_setting_mostly_shows_only_the_described_lesion(realistic):
    _, lesions = realistic
    labeled = lesions[lesions["uid"] <= N_LABELED]
    per_image = labeled[labeled["role"].isin(["target", "distractor"])].groupby("uid")["role"]
    counts = per_image.size()
    assert set(counts) <= {1, 2}
    share = (counts == 2).mean()  # EXTRA_LESION_SHARE, drawn
    assert 0.2 < share < 0.5, share
    both = labeled[labeled["role"].isin(["target", "distractor"])]
    pairs = both.pivot(index="uid", columns="role", values=["kind", "zone"]).dropna()
    same_kind = (pairs["kind"]["target"] == pairs["kind"]["distractor"]).mean()
    other_lung = (pairs["zone"]["target"].str.split().str[0]
                  != pairs["zone"]["distractor"].str.split().str[0]).mean()
    assert same_kind > 0.4 and 0.2 < other_lung < 0.9, (same_kind, other_lung)
    assert (pairs["zone"]["target"] != pairs["zone"]["distractor"]).all()


def test_realistic_probe_pairs_for_every_test_report(realistic):
    root, lesions = realistic
    splits = pd.read_csv(root / PATIENT_SPLITS_CSV).set_index("uid")["split"]
    test_uids = sorted(u for u in splits.index if u <= N_LABELED and splits[u] == "test")
    pairs = lesions[lesions["role"].str.startswith("pair")]
    assert sorted(pairs["uid"].unique()) == test_uids
    for uid, pair in pairs.groupby("uid"):
        target, other = (pair[pair["role"] == r].iloc[0] for r in ("pair_target", "pair_other"))
        own = lesions[(lesions["uid"] == uid) & (lesions["role"] == "target")].iloc[0]
        assert (target.kind, target.zone, target.sentence) == (own.kind, own.zone, own.sentence)
        assert other.zone != target.zone and other.sentence and other.sentence != target.sentence
        for row in (target, other):
            with Image.open(root / row.mask_file) as img:
                mask = np.asarray(img)
            assert mask[row.y, row.x] == 255 and (mask > 0).sum() == row.area
    kinds = pairs.pivot(index="uid", columns="role", values="kind")
    assert 0 < (kinds["pair_target"] == kinds["pair_other"]).mean() < 1


def test_probe_items_of_the_realistic_setting_ask_about_both_lesions(realistic):
    root, lesions = realistic
    catalog = load_catalog(root)
    splits = pd.read_csv(root / PATIENT_SPLITS_CSV).set_index("uid")["split"]
    test = catalog.cases[catalog.cases["uid"].map(splits) == "test"]
    items = synthetic.probe_items(root, test)
    n_pairs = lesions["role"].eq("pair_target").sum()
    n_extra = lesions[lesions["uid"].isin(test["uid"])]["role"].eq("distractor").sum()
    assert len(items) == 2 * (n_pairs + n_extra)
    assert set(items["role"]) == {"target", "other"} and items["same_kind"].any()
    for pair_id, two in items.groupby("pair_id"):
        assert len(two) == 2 and two["text"].nunique() == 2
        assert two.iloc[0]["mask_path"] == two.iloc[1]["other_mask_path"]


def test_report_items_of_the_realistic_setting_describe_both_lesions_of_each_probe_image(realistic):
    root, lesions = realistic
    catalog = load_catalog(root)
    splits = pd.read_csv(root / PATIENT_SPLITS_CSV).set_index("uid")["split"]
    items = synthetic.report_items(root, catalog.cases[catalog.cases["uid"].map(splits) == "test"])
    pairs = items[items["report_id"].str.startswith(synthetic.PROBE_DIR)]
    assert pairs["report_id"].nunique() == lesions["role"].eq("pair_target").sum()
    assert set(items["n_lesions"]) == {2}
    for report_id, two in pairs.groupby("report_id"):
        rows = lesions[lesions["filename"] == report_id]
        assert sorted(two["sentence"]) == sorted(rows["sentence"])
        assert sorted(two["mask_path"]) == sorted(str(root / f) for f in rows["mask_file"])
        assert two["image_path"].iloc[0] == str(root / report_id)
        assert all(s in two["report"].iloc[0] for s in two["sentence"])


def test_unknown_distractor_setting_raises(tmp_path):
    with pytest.raises(ValueError, match="distractors"):
        synthetic.make_demo_dataset(tmp_path / "x", n_reports=2, n_masks=1, distractors="none")
