"""The demo dataset generator: synthetic chest X-rays and reports in the real dataset's layout.

`make_demo_dataset` writes the Indiana University / OpenI layout (`images/images_normalized/*.png`,
`indiana_reports.csv`, `indiana_projections.csv`, `masked/*`) so the whole pipeline runs on a CPU in
minutes without the real data. The report texts are written by `helpers.synthetic_text`.

Every report has a frontal and a lateral image. The first `n_masks` reports are labeled: their frontal
image holds a TARGET lesion (nodule, mass, opacity, consolidation, effusion or atelectasis) in one of
the six `ZONES`, drawn by the radiological convention (the patient's right lung is on the image's
LEFT), its mask, and a findings text that names its kind and place.

Two settings of undescribed DISTRACTOR lesions (`DISTRACTORS`), neither in the mask nor in the text:
- `forced`: every labeled image also holds 2 distractors in other zones, laid out so that the
  picture does not tell which of the three lesions is the target: the text is necessary by
  construction, on every training image (an image-only model segments all three).
- `realistic` (the default): as in the real collection, most labeled images show only the
  described lesion; `synthetic_plan.EXTRA_LESION_SHARE` of them show one more lesion elsewhere, often of the same
  kind, sometimes in the other lung. Marking whatever lesion is visible scores well here, so
  nothing in the training data forces the model to read where the text points.

Written besides the layout, for tests and evaluation:
- `demo_lesions.csv`: each drawn lesion's kind, zone, peak pixel and area, role (`target`,
  `distractor`, or `finding` for described lesions of unlabeled reports), a `sentence` describing it
  (for the target, the report's own describing sentence) and, for distractors, `mask_file`;
- `demo_probe/<image stem>_d<k>.png`: each distractor's mask (0/255), for a two-lesion probe (same
  image, another lesion's sentence: the mask should move);
- `demo_probe/<image stem>_pair.png` (`realistic` only): for each test report, a second frontal
  image of the patient holding the target and one other lesion (of the same kind half of the time),
  with both masks (`..._pair_m0.png`, `..._pair_m1.png`): the two-lesion probe of that setting;
- `patient_splits.csv` (`uid, split`): labeled reports shuffled into train/val/test (70/15/15), the
  others train. Test reports are written with held-out phrasings only (see `helpers.synthetic_text`).

With `quirks=True` the demo also exercises the variations of real hand-made data: masks named and
stored in several ways (`_mask`/`-mask` suffixes, `.PNG`, RGB, 0/1 values, another resolution), one
orphan mask, one report whose findings are empty, and de-identification `XXXX` tokens.
"""
from __future__ import annotations

import inspect
import json
import sys
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ...core.settings import DemoDataConfig
from ...core.layout import IMAGES_DIR, MASKS_DIR, PATIENT_SPLITS_CSV, PROJECTIONS_CSV, REPORTS_CSV
from .draw import draw_frontal, lateral, to_uint8
from .files import MASK_FORMS, save_mask, write_zip
from .plan import (DISTRACTORS, pick_labeled_lesions, pick_lesion, pick_realistic_lesions,
                             second_lesion)
from .reports import CARDIOMEGALY, NORMALS, Lesion, finding_sentence, report

MARKER = "demo.json"  # the generator's parameters; "complete" turns true once everything is written
LESIONS_CSV = "demo_lesions.csv"
PROBE_DIR = "demo_probe"  # binary masks of the distractors, <image stem>_d<k>.png
SPLIT_SHARES = (0.7, 0.15, 0.15)  # of the labeled reports; unlabeled reports are all "train"
ZIP_NAME = "Dataset.zip"
# The union setting (masks like the real ones may be): the heart drawn for cardiomegaly, one mask
# per image holding every described finding, and some labeled reports that describe the heart alone.
HEART_ONLY_SHARE = 0.12  # of the labeled reports: cardiomegaly is their only finding
HEART_ADDED_SHARE = 0.2  # of the labeled reports: cardiomegaly besides the described lesion
HEART_SCALES = (1.2, 1.35)  # how much larger than normal an enlarged heart is drawn

Array = np.ndarray


# ---------------------------------------------------------------------------------------------
# Lesion plans and splits (the texts are written by helpers.synthetic_text)
# ---------------------------------------------------------------------------------------------

def _patient_splits(n_reports: int, n_masks: int, seed: int) -> dict[int, str]:
    """uid -> split: the labeled reports shuffled (seeded) into SPLIT_SHARES, the others "train"."""
    order = np.random.default_rng([seed, 0]).permutation(np.arange(1, n_masks + 1))
    n_val, n_test = (round(share * n_masks) for share in SPLIT_SHARES[1:])
    splits = {uid: "train" for uid in range(1, n_reports + 1)}
    splits.update({int(uid): "test" for uid in order[:n_test]})
    splits.update({int(uid): "val" for uid in order[n_test: n_test + n_val]})
    return splits


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def _image_name(uid: int, view: int) -> str:
    return f"{uid}_IM-{uid:04d}-{view}001.dcm.png"


def _stem(image_name: str) -> str:
    return image_name[: -len(".dcm.png")]


def _write_pair(dest: Path, uid: int, seed: int, described: Lesion, describing: str,
                sides: tuple[int, int]) -> list[dict]:
    """The probe image of a test report (realistic setting): the patient's target redrawn with one
    other lesion (of the same kind half of the time, in the other lung half of the time), both
    masks, and a held-out sentence for the other lesion. Returns their rows of LESIONS_CSV."""
    rng = np.random.default_rng([seed, uid, 2])
    target = Lesion(described.kind, described.zone, "pair_target")
    other = second_lesion(target, "pair_other", rng.random() < 0.5, rng.random() < 0.5, rng)
    shape = (int(rng.integers(sides[0], sides[1] + 1)), int(rng.integers(sides[0], sides[1] + 1)))
    pixels, masks, records = draw_frontal(shape, [target, other], rng)
    name = f"{PROBE_DIR}/{_stem(_image_name(uid, 1))}_pair"
    Image.fromarray(pixels).save(dest / f"{name}.png")
    texts = [describing, finding_sentence(other, "test", np.random.default_rng([seed, uid, 3]))]
    rows = []
    for k, (mask, record, text) in enumerate(zip(masks, records, texts)):
        Image.fromarray(mask * 255).save(dest / f"{name}_m{k}.png")
        rows.append({"uid": uid, "filename": f"{name}.png", **record, "sentence": text,
                     "mask_file": f"{name}_m{k}.png"})
    return rows


def _empty_demo_folder(dest: Path, params: dict) -> None:
    """Empties a previous demo in `dest` (never a foreign folder) and marks `dest` as incomplete."""
    if dest.exists() and any(dest.iterdir()):
        if not (dest / MARKER).is_file():
            raise ValueError(f"{dest} is not empty and holds no demo dataset ({MARKER}); "
                             f"pass an empty or new folder as dest")
        for child in dest.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    (dest / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (dest / MASKS_DIR).mkdir(exist_ok=True)
    (dest / MARKER).write_text(json.dumps({"params": params, "complete": False}))


_DEFAULTS = DemoDataConfig()


def make_demo_dataset(dest: str | Path, n_reports: int = _DEFAULTS.n_reports,
                      n_masks: int = _DEFAULTS.n_masks,
                      image_size: tuple[int, int] = _DEFAULTS.image_size, seed: int = _DEFAULTS.seed,
                      make_zip: bool = True, quirks: bool = True,
                      distractors: str = _DEFAULTS.distractors, union: bool = _DEFAULTS.union) -> Path:
    """Writes a synthetic dataset in the real layout to `dest` and returns `dest` (the dataset root).

    Args:
        dest: a new or empty folder, or one holding an earlier demo (it is emptied first).
        n_reports: reports, uids 1..n_reports, each with a frontal and a lateral image.
        n_masks: the first `n_masks` reports' frontal images are labeled (target lesion + mask).
        image_size: (min, max) side; each image's width and height are drawn independently in it.
        seed: the same seed gives the same bytes.
        make_zip: also write `Dataset.zip` of the layout into `dest`.
        quirks: vary mask names and formats, add an orphan mask, empty findings and XXXX tokens.
        distractors: "realistic" (most labeled images show only the described lesion) or "forced"
            (two undescribed lesions on every labeled image); see the module docstring.
        union: masks as the real ones may be: an image whose report describes cardiomegaly shows
            an enlarged heart, and its mask holds the heart and the described lesion; some labeled
            reports describe cardiomegaly alone (`HEART_ONLY_SHARE`, `HEART_ADDED_SHARE`). Off,
            the same seed gives the same bytes as before the setting existed.
    """
    if distractors not in DISTRACTORS:
        raise ValueError(f"distractors must be one of {DISTRACTORS}, got {distractors!r}")
    if not 0 <= n_masks <= n_reports or n_reports < 1:
        raise ValueError(f"need 0 <= n_masks <= n_reports and n_reports >= 1, got {n_masks=}, {n_reports=}")
    lo, hi = image_size
    if not 16 <= lo <= hi:
        raise ValueError(f"image_size must be (min, max) sides with 16 <= min <= max, got {image_size}")
    start = time.perf_counter()
    dest = Path(dest)
    _empty_demo_folder(dest, demo_params(n_reports=n_reports, n_masks=n_masks, image_size=image_size, seed=seed,
                                         make_zip=make_zip, quirks=quirks, distractors=distractors,
                                         union=union))
    (dest / PROBE_DIR).mkdir()
    splits = _patient_splits(n_reports, n_masks, seed)
    reports, projections, lesion_rows = [], [], []
    empty_findings_uid = min(2, n_masks) or 1  # a labeled report where possible: its case falls back
    for uid in range(1, n_reports + 1):
        rng = np.random.default_rng([seed, uid])
        text_rng = np.random.default_rng([seed, uid, 1])  # texts do not move the pictures
        heart_rng = np.random.default_rng([seed, uid, 4])  # the union setting's draws alone
        share = heart_rng.random() if union and uid <= n_masks and uid != empty_findings_uid else 1.0
        if share < HEART_ONLY_SHARE:
            described, drawn = None, []
        elif uid <= n_masks:
            drawn = pick_labeled_lesions(rng) if distractors == "forced" else pick_realistic_lesions(rng)
            described = drawn[0]
        else:  # half normal, half with a described lesion that has no mask
            described = pick_lesion("finding", rng) if rng.random() < 0.5 else None
            drawn = [described] if described else []
        heart = (str(heart_rng.choice(CARDIOMEGALY)) if share < HEART_ONLY_SHARE + HEART_ADDED_SHARE
                 else None)
        row, describing = report(uid, described, drawn, splits[uid], text_rng, quirks, heart=heart)
        sentences = [describing] + [finding_sentence(lesion, splits[uid], text_rng) for lesion in drawn[1:]]
        if quirks and uid == empty_findings_uid:
            row["findings"] = ""
        enlarged = union and any(c in row["findings"] for c in CARDIOMEGALY)
        heart_scale = float(heart_rng.uniform(*HEART_SCALES)) if enlarged else None
        reports.append(row)
        for view, projection in ((1, "Frontal"), (2, "Lateral")):
            name = _image_name(uid, view)
            shape = (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
            if view == 1:
                pixels, masks, records = draw_frontal(shape, drawn, rng, heart_scale)
                texts = sentences[:len(drawn)] + ([heart or next(c for c in CARDIOMEGALY if c in row["findings"])]
                                                  if enlarged else [])
                for k, (mask, record) in enumerate(zip(masks, records)):
                    probe = ""
                    if record["role"] == "distractor" or (union and uid <= n_masks
                                                          and record["role"] in ("target", "heart")):
                        probe = f"{PROBE_DIR}/{_stem(name)}_{record['role'][0]}{k}.png"
                        Image.fromarray(mask * 255).save(dest / probe)
                    lesion_rows.append({"uid": uid, "filename": name, **record, "sentence": texts[k],
                                        "mask_file": probe})
                labeled = [m for m, r in zip(masks, records) if r["role"] in ("target", "heart")]
                if uid <= n_masks and labeled:  # one mask of every described finding
                    save_mask(dest / MASKS_DIR, name, np.maximum.reduce(labeled),
                               uid % MASK_FORMS if quirks else 0)
            else:
                pixels = to_uint8(lateral(shape, rng), rng)
            Image.fromarray(pixels).save(dest / IMAGES_DIR / name)
            projections.append({"uid": uid, "filename": name, "projection": projection})
        if distractors == "realistic" and uid <= n_masks and splits[uid] == "test" and described:
            lesion_rows += _write_pair(dest, uid, seed, described, describing, (lo, hi))
    if quirks:  # one orphan: a mask whose image does not exist
        orphan = np.zeros((lo, lo), np.uint8)
        orphan[lo // 3: lo // 2, lo // 4: lo // 2] = 1
        save_mask(dest / MASKS_DIR, _image_name(n_reports + 1, 1), orphan, 0)
    pd.DataFrame(reports).to_csv(dest / REPORTS_CSV, index=False)
    pd.DataFrame(projections).to_csv(dest / PROJECTIONS_CSV, index=False)
    pd.DataFrame(lesion_rows, columns=["uid", "filename", "role", "kind", "zone", "x", "y", "area", "sentence",
                                       "mask_file"]).to_csv(dest / LESIONS_CSV, index=False)
    pd.DataFrame({"uid": list(splits), "split": list(splits.values())}).to_csv(dest / PATIENT_SPLITS_CSV,
                                                                             index=False)
    if make_zip:
        write_zip(dest, (ZIP_NAME, MARKER))
    marker = json.loads((dest / MARKER).read_text())
    (dest / MARKER).write_text(json.dumps({**marker, "complete": True}))
    print(f"Demo dataset generated: {2 * n_reports} images, {n_masks} masks in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)  # stderr: not a compared output
    return dest


_SIGNATURE = inspect.signature(make_demo_dataset)


def demo_params(**kwargs) -> dict:
    """`make_demo_dataset`'s keyword arguments (without dest) with defaults filled in, JSON-normalized
    (tuples become lists) so that they compare equal to the ones stored in `demo.json`."""
    bound = _SIGNATURE.bind(None, **kwargs)
    bound.apply_defaults()
    params = {k: v for k, v in bound.arguments.items() if k != "dest"}
    return json.loads(json.dumps(params))


def lesion_groups(root: str | Path, cases: pd.DataFrame) -> list[tuple[str, str, list[dict]]]:
    """The demo images of labeled `cases` (columns `uid`, `filename`, `image_path`, `mask_path`)
    that hold two or more lesions with a mask: the cases' own images when they show an undescribed
    lesion too (all of them in the `forced` setting) or, in the union setting, an enlarged heart
    (a lesion of kind "cardiomegaly"), and the test patients' probe images
    (`demo_probe/*_pair.png`, `realistic` setting).

    Returns (image id, image path, lesions) per image; each lesion is its `LESIONS_CSV` row plus
    `mask` (the path of its mask), the described one first.
    """
    root = Path(root)
    lesions = pd.read_csv(root / LESIONS_CSV, keep_default_na=False)
    by_image = {name: group for name, group in lesions.groupby("filename")}
    pairs = lesions[lesions["role"] == "pair_target"].set_index("uid")["filename"]
    groups = []
    for case in cases.itertuples():
        group = by_image.get(case.filename)
        if group is not None and (group["role"] == "target").any():  # the target and the others
            target = dict(group[group["role"] == "target"].iloc[0])
            target["mask"] = str(root / target["mask_file"]) if target["mask_file"] else case.mask_path
            others = [dict(d, mask=str(root / d["mask_file"]))
                      for d in group[group["role"].isin(("distractor", "heart"))].to_dict("records")
                      if d["mask_file"]]
            if others:
                groups.append((case.filename, case.image_path, [target, *others]))
        if case.uid in pairs.index:  # realistic: the patient's probe image
            both = [dict(r, mask=str(root / r["mask_file"])) for r in by_image[pairs[case.uid]].to_dict("records")]
            groups.append((pairs[case.uid], str(root / pairs[case.uid]), both))
    return groups


def crowded_images(root: str | Path, cases: pd.DataFrame) -> set[str]:
    """The image paths of labeled `cases` (columns `filename`, `image_path`) whose image shows a
    lesion its report does not describe (a distractor)."""
    lesions = pd.read_csv(Path(root) / LESIONS_CSV, keep_default_na=False)
    crowded = set(lesions.loc[lesions["role"] == "distractor", "filename"])
    return set(cases.loc[cases["filename"].isin(crowded), "image_path"])


def probe_items(root: str | Path, cases: pd.DataFrame) -> pd.DataFrame:
    """The two-lesion probe of a demo dataset for its labeled `cases` (see `lesion_groups`): each
    image asked about its described lesion and about each other lesion with the sentence that
    describes it, with its own lesion's mask and the other's.

    Returns one row per (image, text): pair_id, image_path, text, mask_path, other_mask_path, role
    ("target" / "other"), same_kind (whether the two lesions are of one kind).
    """
    rows = []
    for image_id, image, (target, *others) in lesion_groups(root, cases):
        for k, other in enumerate(others):
            pair = image_id if image_id.startswith(PROBE_DIR) else f"{image_id}#{k + 1}"
            for own, that, role in ((target, other, "target"), (other, target, "other")):
                rows.append({"pair_id": pair, "image_path": image, "text": own["sentence"],
                             "mask_path": own["mask"], "other_mask_path": that["mask"], "role": role,
                             "same_kind": target["kind"] == other["kind"]})
    return pd.DataFrame(rows, columns=["pair_id", "image_path", "text", "mask_path",
                                       "other_mask_path", "role", "same_kind"])


def report_items(root: str | Path, cases: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Whole reports for the per-sentence test: each image of `lesion_groups` (two or three
    lesions) with a report made of one sentence per lesion (the dataset's own, held-out phrasings
    for test patients) and one or two normal sentences that deny none of them, in a seeded
    shuffled order.

    Returns one row per (report, lesion): report_id, image_path, report, sentence (the lesion's,
    a sentence of `report`), mask_path (its mask), kind, n_lesions.
    """
    rows = []
    for image_id, image, lesions in lesion_groups(root, cases):
        rng = np.random.default_rng([seed, zlib.crc32(image_id.encode())])
        kinds = {lesion["kind"] for lesion in lesions}
        normals = {topic: text for topic, denied, text in (NORMALS[i] for i in rng.permutation(len(NORMALS)))
                   if not kinds & set(denied) and not (topic == "heart" and "cardiomegaly" in kinds)}
        sentences = [lesion["sentence"] for lesion in lesions] + list(normals.values())[:int(rng.integers(1, 3))]
        text = " ".join(sentences[i] for i in rng.permutation(len(sentences)))
        rows += [{"report_id": image_id, "image_path": image, "report": text, "sentence": lesion["sentence"],
                  "mask_path": lesion["mask"], "kind": lesion["kind"], "n_lesions": len(lesions)}
                 for lesion in lesions]
    return pd.DataFrame(rows, columns=["report_id", "image_path", "report", "sentence", "mask_path",
                                       "kind", "n_lesions"])
