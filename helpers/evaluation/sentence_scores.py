"""Scoring a report read sentence by sentence: each sentence's mask against its own finding
(`per_sentence`), and the sentences of findings the masks do not draw, which should mark nothing
(`other_findings`). Which findings the masks draw is the model's masks' vocabulary
(`Segmenter.vocabulary`, `text.vocabulary`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..inference.segmenter import EMPTY_AREA, Segmenter
from ..model.metrics import dice_per_image
from ..text.regions import sentence_place
from ..text.sentences import POSITIVE, names_lesion
from ..text.vocabulary import MaskVocabulary
from ..training.datasets import labeled_arrays
from .scores import located_mask


def other_findings(segmenter: Segmenter, cases: pd.DataFrame, *,
                   cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The positive sentences of the cases' reports whose finding the masks do not draw (the
    masks' vocabulary; "Mild cardiomegaly." where they draw lung lesions only), each asked alone
    on every image of `cases`, as `ground_report` asks it: its mask should be empty.
    `empty_share`: share of those (sentence, image) pairs whose mask covers less than EMPTY_AREA;
    `n_sentences`: how many such sentences (unique) the reports hold.

    A drawn finding that is no lung lesion ("Mild cardiomegaly." where the masks draw the heart)
    is reported apart, under `drawn`: each such sentence asked on its own case's image,
    `located_share` (its mask, the low-confidence one included, is not empty) and
    `in_place_share` (the share whose mask's centroid lies where the sentence's place words
    point, e.g. the heart). The table has one row per pair: case_id, text, drawn, pred_area,
    in_place (NaN where it does not apply)."""
    vocabulary = getattr(segmenter, "vocabulary", None) or MaskVocabulary()
    arrays = labeled_arrays(cases, segmenter.image_size, cache_dir)
    positives = [[text for text, label in segmenter.reader.labeled_sentences(report) if label == POSITIVE]
                 for report in arrays.cases["text"]]
    others = list(dict.fromkeys(t for texts in positives for t in texts if not vocabulary.describes_drawn(t)))
    rows = []
    for k, (image, case_id) in enumerate(zip(arrays.images, arrays.cases["case_id"])):
        apart = [t for t in dict.fromkeys(positives[k]) if vocabulary.describes_drawn(t) and not names_lesion(t)]
        if not others + apart:
            continue
        probs = segmenter.predict_sentences(image, others + apart)[:, 0].numpy()
        for text, prob in zip(others + apart, probs):
            drawn = text in apart
            mask = located_mask(segmenter, prob, text)[0] if drawn else prob >= segmenter.threshold
            place = sentence_place(text)
            ys, xs = np.nonzero(mask)
            in_place = (float(place.contains((xs.mean() + 0.5) / mask.shape[1], (ys.mean() + 0.5) / mask.shape[0],
                                             strict=False)) if drawn and place is not None and mask.any()
                        else float("nan"))
            rows.append({"case_id": case_id, "text": text, "drawn": drawn, "pred_area": float(mask.mean()),
                         "in_place": in_place})
    table = pd.DataFrame(rows, columns=["case_id", "text", "drawn", "pred_area", "in_place"])
    table["drawn"] = table["drawn"].astype(bool)
    undrawn, drawn = table[~table["drawn"]], table[table["drawn"]]
    empty = float((undrawn["pred_area"] < EMPTY_AREA).mean()) if len(undrawn) else float("nan")
    apart = {"n": len(drawn), "n_sentences": drawn["text"].nunique(),
             "located_share": float((drawn["pred_area"] > 0).mean()) if len(drawn) else float("nan"),
             "in_place_share": float(drawn["in_place"].mean()) if drawn["in_place"].notna().any() else float("nan")}
    return table, {"n": len(undrawn), "n_sentences": len(others), "empty_share": empty, "drawn": apart}


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

    items: one row per (report, described lesion), e.g. `synthetic.report_items`: `report_id`,
    `image_path`, `report` (the whole text), `sentence` (the lesion's sentence, one sentence of
    the report) and `mask_path` (its lesion). Each report is grounded once
    (`Segmenter.predict_sentences`: the image encoded once, each positive sentence decoded alone).
    A sentence is `on_own` when more predicted probability lies in its own lesion than in any
    other lesion of the image; a sentence the filter does not keep as positive gets an empty mask.
    Each mask is scored as thresholded and with the low-confidence fallback of a drawn finding
    (`Segmenter.locate`: `dice_fallback`, `located_fallback`, `low_confidence`).

    Returns (one row per sentence: dice, on_own, located, area, mass_own, mass_other, kept and the
    fallback's columns; a summary with `dice` and `on_own_share` and 95% intervals that resample
    whole reports, `located_share` and `dice_fallback`, `located_share_fallback`,
    `low_confidence_share`; `not_lesion`: n, dice, dice_fallback and on_own_share of the
    sentences that name no lung lesion, e.g. the heart's where the masks draw it).
    """
    missing = [c for c in REPORT_ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(f"report items lack column(s) {missing}; expected {REPORT_ITEM_COLUMNS}")
    if items.empty:
        return items.assign(dice=pd.Series(dtype=float)), {"n_sentences": 0, "n_reports": 0}
    arrays = labeled_arrays(items, segmenter.image_size, cache_dir)
    table = arrays.cases.copy()
    size = segmenter.image_size
    columns = {name: np.zeros(len(table)) for name in ("dice", "area", "mass_own", "mass_other",
                                                       "dice_fallback", "area_fallback")}
    kept, low = np.zeros(len(table), bool), np.zeros(len(table), bool)
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
            fallback, low[i] = located_mask(segmenter, prob.numpy(), sentence) if kept[i] else (pred.numpy(), False)
            fallback = torch.from_numpy(fallback)
            columns["dice_fallback"][i] = dice_per_image(fallback[None, None], masks[k][None, None].bool())[0]
            columns["area_fallback"][i] = fallback.float().mean()
    table = table.assign(**columns, kept=kept, low_confidence=low)
    table["on_own"] = table["mass_own"] > table["mass_other"]
    table["located"] = table["area"] >= EMPTY_AREA
    table["located_fallback"] = (table["area_fallback"] >= EMPTY_AREA) | table["low_confidence"]
    summary = {"n_sentences": len(table), "n_reports": table["report_id"].nunique(),
               "threshold": segmenter.threshold, "kept_share": float(table["kept"].mean()),
               "located_share": float(table["located"].mean()),
               "located_share_fallback": float(table["located_fallback"].mean()),
               "low_confidence_share": float(table["low_confidence"].mean()),
               "dice_fallback": float(table["dice_fallback"].mean())}
    for name, values in (("dice", table["dice"]), ("on_own_share", table["on_own"])):
        mean, lo, hi = cluster_ci(values.to_numpy(float), table["report_id"].to_numpy(), n_boot, seed)
        summary.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
    apart = table[[not names_lesion(str(t)) for t in table["sentence"]]]
    if len(apart):  # e.g. "Mild cardiomegaly." where the masks draw the heart
        summary["not_lesion"] = {"n": len(apart), "dice": float(apart["dice"].mean()),
                                 "dice_fallback": float(apart["dice_fallback"].mean()),
                                 "on_own_share": float(apart["on_own"].mean())}
    return table, summary
