"""Scoring a trained `Segmenter` on held-out cases, and the counterfactual that swaps left and right.

Metrics are computed at the model's input resolution (masks resized with nearest neighbour), per
image (see `model.metrics` for the empty-mask convention) with bootstrap 95% intervals over cases.
The test split is meant to be touched only here, for the final report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.anatomy import IMAGE_HALVES, SIDES, image_half
from ..training.datasets import labeled_arrays
from ..inference.segmenter import EMPTY_AREA, Segmenter
from ..data.io import load_masks
from ..model.metrics import bootstrap_ci, dice_per_image, follows_text, iou_per_image, pointing_hits, pooled_dice
from ..text.places import names_side, swap_sides
from ..training.paste import mirror_overlaps, paste_mirror
from ..text.sentences import POSITIVE, describes_finding, names_lesion

TEXTS = ("report", "shuffled", "swapped")  # how `evaluate` gives the cases' texts


def image_side(prob: np.ndarray) -> str:
    """Which half of the image holds most predicted probability mass: "image-left" / "image-right".

    By the radiological convention the image's left half shows the patient's RIGHT side."""
    half = prob.shape[-1] // 2
    return IMAGE_HALVES[0] if prob[..., :half].sum() >= prob[..., -half:].sum() else IMAGE_HALVES[1]


def expected_image_side(text: str) -> str | None:
    """The image half a text's side word points to (patient's right -> image-left)."""
    side = names_side(text)
    return image_half(side) if side in SIDES else None


def evaluate(segmenter: Segmenter, cases: pd.DataFrame, *, texts: str = "report",
             cache_dir: str | Path | None = None, n_boot: int = 1000, seed: int = 0
             ) -> tuple[pd.DataFrame, dict]:
    """Score `segmenter` on `cases` (one split). Returns (per-case table, summary).

    texts: which texts the cases are given (`TEXTS`): "report" (each case's own), "shuffled"
    (permuted across cases, seeded: a model that reads the text should fail), "swapped" (left and
    right exchanged in each). Each then goes through the segmenter's text mode (`ReportReader`).
    """
    if texts not in TEXTS:
        raise ValueError(f"texts must be one of {TEXTS}, got {texts!r}")
    arrays = labeled_arrays(cases, segmenter.image_size, cache_dir)
    given = list(arrays.cases["text"])
    if texts == "shuffled":
        given = [given[i] for i in np.random.default_rng(seed).permutation(len(given))]
    elif texts == "swapped":
        given = [swap_sides(t) for t in given]
    probs = segmenter.predict_arrays(arrays.images, given)
    masks = torch.from_numpy(arrays.masks)[:, None].bool()
    pred = probs >= segmenter.threshold
    per_case = pd.DataFrame({
        "case_id": arrays.cases["case_id"], "uid": arrays.cases["uid"], "text": given,
        "dice": dice_per_image(pred, masks).numpy(), "iou": iou_per_image(pred, masks).numpy(),
        "pointing_hit": pointing_hits(probs, masks).numpy().astype(float),
        "true_area": masks.flatten(1).float().mean(1).numpy(),
        "pred_area": pred.flatten(1).float().mean(1).numpy(),
        "pred_side": [image_side(p[0].numpy()) for p in probs],
    })
    summary = {"n": len(per_case), "texts": texts, "threshold": segmenter.threshold,
               "text_model": segmenter.info.get("text_model"),
               "text_model_is_tiny": segmenter.info.get("text_model_is_tiny"),
               "pooled_dice": pooled_dice(pred, masks)}
    for metric in ("dice", "iou", "pointing_hit"):
        mean, lo, hi = bootstrap_ci(per_case[metric].to_numpy(), n_boot=n_boot, seed=seed)
        summary.update({metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi})
    return per_case, summary


def best_median_worst(scores: pd.Series) -> list:
    """Index labels of the best, the median and the worst score (ties keep the first)."""
    order = scores.sort_values(ascending=False, kind="stable").index
    return [order[0], order[len(order) // 2], order[-1]]


def counterfactual_sides(segmenter: Segmenter, cases: pd.DataFrame, *,
                         cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """For each case whose text names one side: predict with the text as written and with left and
    right swapped, and record on which image half the predicted mass lies.

    `moved_share`: share of those cases whose prediction moves to the other half when the words are
    swapped; `correct_side_share`: share whose original prediction lies on the side the text names;
    `emptied_share`: share whose swapped text, pointing where nothing lies, gives an empty mask
    (under EMPTY_AREA of the image); `follows_share`: moved or emptied, either way not the lesion
    the words no longer name.
    """
    sided = cases[[expected_image_side(t) is not None for t in cases["text"]]]
    columns = ["case_id", "text", "expected_side", "side", "swapped_side", "moved", "emptied"]
    if sided.empty:
        return pd.DataFrame(columns=columns), {"n_sided": 0, "moved_share": float("nan"),
                                               "correct_side_share": float("nan"),
                                               "emptied_share": float("nan"),
                                               "follows_share": float("nan")}
    arrays = labeled_arrays(sided, segmenter.image_size, cache_dir)
    texts = list(arrays.cases["text"])
    both = []
    for variant in (texts, [swap_sides(t) for t in texts]):
        probs = segmenter.predict_arrays(arrays.images, variant)
        both.append([image_side(p[0].numpy()) for p in probs])
    swapped_area = (probs >= segmenter.threshold).flatten(1).float().mean(1).numpy()
    table = pd.DataFrame({"case_id": arrays.cases["case_id"], "text": texts,
                          "expected_side": [expected_image_side(t) for t in texts],
                          "side": both[0], "swapped_side": both[1]})
    table["moved"] = table["side"] != table["swapped_side"]
    table["emptied"] = swapped_area < EMPTY_AREA
    return table[columns], {"n_sided": len(table), "moved_share": float(table["moved"].mean()),
                            "correct_side_share": float((table["side"] == table["expected_side"]).mean()),
                            "emptied_share": float(table["emptied"].mean()),
                            "follows_share": float((table["moved"] | table["emptied"]).mean())}


def two_lesion_probe(segmenter: Segmenter, items: pd.DataFrame, *,
                     cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Whether the mask follows the text: images that hold two lesions, each asked about with a text
    that describes one of them. An item follows its text when more predicted probability lies in
    the described lesion's mask than in the other one's.

    items: one row per (image, text) with `image_path`, `text`, `mask_path` (the described
    lesion) and `other_mask_path` (the other lesion), e.g. `data.demo.generate.probe_items` for the demo.
    Returns (items with `mass_described`, `mass_other`, `follows`, summary with `follows_share`).
    """
    columns = ["image_path", "text", "mask_path", "other_mask_path"]
    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise ValueError(f"probe items lack column(s) {missing}; expected {columns}")
    if items.empty:
        return items.assign(follows=pd.Series(dtype=bool)), {"n_items": 0, "follows_share": float("nan")}
    arrays = labeled_arrays(items, segmenter.image_size, cache_dir)
    probs = segmenter.predict_arrays(arrays.images, list(arrays.cases["text"]))[:, 0]
    others = torch.from_numpy(load_masks(list(arrays.cases["other_mask_path"]), segmenter.image_size))
    own = torch.from_numpy(arrays.masks)
    table = arrays.cases.assign(mass_described=(probs * own).flatten(1).sum(1).numpy(),
                                mass_other=(probs * others).flatten(1).sum(1).numpy())
    table["follows"] = table["mass_described"] > table["mass_other"]
    summary = {"n_items": len(table), "n_images": table["image_path"].nunique(),
               "follows_share": float(table["follows"].mean())}
    if "same_kind" in table:  # lesions of one kind: only the place tells them apart
        for name, part in (("same_kind", table[table["same_kind"]]),
                           ("other_kind", table[~table["same_kind"].astype(bool)])):
            summary[f"follows_share_{name}"] = float(part["follows"].mean()) if len(part) else float("nan")
            summary[f"n_items_{name}"] = len(part)
    return table, summary


def mirror_probe(segmenter: Segmenter, cases: pd.DataFrame, *,
                 cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The reading probe for any labeled data, the real masks included: the described lesion is
    copied to its mirror place (`training.paste.paste_mirror`), then the image is asked about twice, with
    the case's text and with its sides swapped. The mask follows the text when more probability
    lies in the original lesion for the text as written and in the copy for the swapped text.

    Cases whose model text names no single side, or whose lesion touches its mirror place, are
    left out. Returns (one row per case, summary with `follows_share` over both questions and
    `both_share`, the cases where both follow)."""
    columns = ["case_id", "text", "follows_text", "follows_swapped", "both"]
    sided = cases[[names_side(segmenter.model_text(t)) in SIDES for t in cases["text"]]]
    arrays = labeled_arrays(sided, segmenter.image_size, cache_dir) if len(sided) else None
    keep = ~mirror_overlaps(arrays.masks) if arrays is not None else np.zeros(0, bool)
    if not keep.any():
        return pd.DataFrame(columns=columns), {"n_cases": 0, "follows_share": float("nan"),
                                               "both_share": float("nan")}
    own = torch.from_numpy(arrays.masks[keep])
    images, copies = paste_mirror(torch.from_numpy(arrays.images[keep]), own)
    texts = list(arrays.cases["text"][keep])
    follows = []
    for variant, described, other in ((texts, own, copies), ([swap_sides(t) for t in texts], copies, own)):
        probs = segmenter.predict_arrays(images.numpy(), variant)[:, 0]
        follows.append(follows_text(probs, described, other).numpy())
    table = pd.DataFrame({"case_id": arrays.cases["case_id"][keep].to_numpy(), "text": texts,
                          "follows_text": follows[0], "follows_swapped": follows[1]})
    table["both"] = table["follows_text"] & table["follows_swapped"]
    return table[columns], {"n_cases": len(table),
                            "follows_share": float(np.mean(follows[0].tolist() + follows[1].tolist())),
                            "both_share": float(table["both"].mean())}


def normal_reports(reports: pd.DataFrame) -> list[str]:
    """The texts of `reports` (column `text`) that describe nothing present, in their order."""
    return [t for t in reports["text"] if isinstance(t, str) and t.strip() and not describes_finding(t)]


def empty_on_normal(segmenter: Segmenter, cases: pd.DataFrame, texts: list[str], *,
                    cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Each image of `cases` asked with a normal report (`texts`, used in turn): the predicted area
    should be empty. `empty_share`: share of images whose mask covers less than EMPTY_AREA."""
    if not texts or cases.empty:
        return pd.DataFrame(columns=["case_id", "text", "pred_area"]), {
            "n": 0, "empty_share": float("nan"), "mean_area": float("nan")}
    arrays = labeled_arrays(cases, segmenter.image_size, cache_dir)
    asked = [texts[i % len(texts)] for i in range(len(arrays.cases))]
    probs = segmenter.predict_arrays(arrays.images, asked)
    area = (probs >= segmenter.threshold).flatten(1).float().mean(1).numpy()
    table = pd.DataFrame({"case_id": arrays.cases["case_id"], "text": asked, "pred_area": area})
    return table, {"n": len(table), "empty_share": float((area < EMPTY_AREA).mean()),
                   "mean_area": float(area.mean())}


def other_findings(segmenter: Segmenter, cases: pd.DataFrame, *,
                   cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The positive sentences of the cases' reports that name no lung lesion ("Mild
    cardiomegaly.", `sentences.names_lesion`), each asked alone on every image of `cases`, as
    `ground_report` asks it: its mask should be empty, since what it describes is not what the
    masks mark. `empty_share`: share of the (sentence, image) pairs whose mask covers less than
    EMPTY_AREA; `n_sentences`: how many such sentences (unique) the reports hold."""
    arrays = labeled_arrays(cases, segmenter.image_size, cache_dir)
    others = list(dict.fromkeys(
        text for report in arrays.cases["text"]
        for text, label in segmenter.reader.labeled_sentences(report)
        if label == POSITIVE and not names_lesion(text)))
    rows = []
    for image, case_id in zip(arrays.images, arrays.cases["case_id"]) if others else ():
        area = (segmenter.predict_sentences(image, others) >= segmenter.threshold).flatten(1).float().mean(1)
        rows += [{"case_id": case_id, "text": t, "pred_area": float(a)} for t, a in zip(others, area)]
    table = pd.DataFrame(rows, columns=["case_id", "text", "pred_area"])
    empty = float((table["pred_area"] < EMPTY_AREA).mean()) if len(table) else float("nan")
    return table, {"n": len(table), "n_sentences": len(others), "empty_share": empty}


REPORT_ITEM_COLUMNS = ["report_id", "image_path", "report", "sentence", "mask_path"]


def cluster_ci(values: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0
               ) -> tuple[float, float, float]:
    """Mean of `values` [N] with a percentile-bootstrap 95% interval that resamples whole groups
    (`groups` [N], e.g. the report a sentence belongs to: sentences of one image are not
    independent). Returns (mean, low, high)."""
    values, groups = np.asarray(values, dtype=float), np.asarray(groups)
    if values.ndim != 1 or len(values) == 0 or len(groups) != len(values):
        raise ValueError(f"values and groups must be non-empty and of one length, got {values.shape} "
                         f"and {groups.shape}")
    names, index = np.unique(groups, return_inverse=True)
    sums, counts = np.bincount(index, values), np.bincount(index)
    picks = np.random.default_rng(seed).integers(0, len(names), size=(n_boot, len(names)))
    means = sums[picks].sum(1) / counts[picks].sum(1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), float(low), float(high)


def per_sentence(segmenter: Segmenter, items: pd.DataFrame, *, cache_dir: str | Path | None = None,
                 n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Whole reports read sentence by sentence, each sentence's mask scored against its own lesion.

    items: one row per (report, described lesion), e.g. `data.demo.generate.report_items`: `report_id`,
    `image_path`, `report` (the whole text), `sentence` (the lesion's sentence, one sentence of
    the report) and `mask_path` (its lesion). Each report is grounded once
    (`Segmenter.predict_sentences`: the image encoded once, each positive sentence decoded alone).
    A sentence is `on_own` when more predicted probability lies in its own lesion than in any
    other lesion of the image; a sentence the filter does not keep as positive gets an empty mask.

    Returns (one row per sentence: dice, on_own, located, area, mass_own, mass_other, kept; a
    summary with `dice` and `on_own_share` and 95% intervals that resample whole reports).
    """
    missing = [c for c in REPORT_ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(f"report items lack column(s) {missing}; expected {REPORT_ITEM_COLUMNS}")
    if items.empty:
        return items.assign(dice=pd.Series(dtype=float)), {"n_sentences": 0, "n_reports": 0}
    arrays = labeled_arrays(items, segmenter.image_size, cache_dir)
    table = arrays.cases.copy()
    size = segmenter.image_size
    columns = {name: np.zeros(len(table)) for name in ("dice", "area", "mass_own", "mass_other")}
    kept = np.zeros(len(table), bool)
    for _, rows in table.groupby("report_id", sort=False):
        first = rows.index[0]
        positives = [text for text, label in segmenter.reader.labeled_sentences(rows.at[first, "report"]) if label == POSITIVE]
        probs = segmenter.predict_sentences(arrays.images[first], positives)[:, 0]
        masks = torch.from_numpy(arrays.masks[rows.index]).float()  # [K, S, S], one per lesion
        for k, i in enumerate(rows.index):
            sentence = " ".join(str(table.at[i, "sentence"]).split())
            kept[i] = sentence in positives
            prob = probs[positives.index(sentence)] if kept[i] else torch.zeros(size, size)
            mass = (prob[None] * masks).flatten(1).sum(1)
            pred = prob >= segmenter.threshold
            columns["dice"][i] = dice_per_image(pred[None, None], masks[k][None, None].bool())[0]
            columns["area"][i] = pred.float().mean()
            columns["mass_own"][i] = mass[k]
            columns["mass_other"][i] = float(torch.cat([mass[:k], mass[k + 1:]]).max()) if len(rows) > 1 else 0.0
    table = table.assign(**columns, kept=kept)
    table["on_own"] = table["mass_own"] > table["mass_other"]
    table["located"] = table["area"] >= EMPTY_AREA
    summary = {"n_sentences": len(table), "n_reports": table["report_id"].nunique(),
               "threshold": segmenter.threshold, "kept_share": float(table["kept"].mean()),
               "located_share": float(table["located"].mean())}
    for name, values in (("dice", table["dice"]), ("on_own_share", table["on_own"])):
        mean, lo, hi = cluster_ci(values.to_numpy(float), table["report_id"].to_numpy(), n_boot, seed)
        summary.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
    return table, summary
