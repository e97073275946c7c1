"""Scoring a trained `Segmenter` on held-out cases, and the counterfactual that swaps left and right.

Metrics are computed at the model's input resolution (masks resized with nearest neighbour), per
image (see `model.metrics` for the empty-mask convention) with bootstrap 95% intervals over cases.
The test split is meant to be touched only here, for the final report. The masks are scored as
thresholded and, as `_fallback` / `low_confidence`, with the low-confidence mask that a described
drawn finding gets when nothing passes the threshold (`Segmenter.locate`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.split import model_split
from ..core.anatomy import IMAGE_HALVES, SIDES, image_half
from ..training.datasets import LabeledArrays, labeled_arrays
from ..inference.results import save_results
from ..inference.segmenter import EMPTY_AREA, Segmenter
from ..data.io import load_masks
from ..model.metrics import bootstrap_ci, dice_per_image, follows_text, iou_per_image, pointing_hits, pooled_dice
from ..text.places import names_side, swap_sides
from ..text.regions import Place
from ..text.vocabulary import MaskVocabulary, staying_parts
from ..training.paste import mirror_overlaps, paste_mirror
from ..text.sentences import describes_finding

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


def held_out(segmenter: Segmenter, cases: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The cases a score may count: those of the patients the model was trained on are left out
    (with a warning), unless `cases` are its training split on purpose (their `split` column says
    "train"). Uses the split the model carries (`ModelRecord.patients`); a model that carries none
    keeps every case. Returns (kept cases, {"model_split": the model's splits the kept cases belong
    to, e.g. "test", or None; "n_left_out": how many were left out})."""
    keys = segmenter.record.patients if segmenter.record is not None else {}
    if not keys:
        return cases, {"model_split": None, "n_left_out": 0}
    theirs = model_split(cases, keys)
    asked = cases["split"] if "split" in cases else pd.Series(None, index=cases.index, dtype=object)
    leave = (theirs == "train") & (asked != "train")
    if leave.any():
        warnings.warn(f"{int(leave.sum())} of {len(cases)} cases are of patients the model was trained on: "
                      "left out of the scores.", stacklevel=3)
    if (theirs == "val").any() and (asked != "val").all():
        warnings.warn(f"{int((theirs == 'val').sum())} cases are of the patients the model's epoch and "
                      "threshold were chosen on (its validation split): their scores are optimistic.",
                      stacklevel=3)
    kept = cases[~leave]
    seen = sorted(set(theirs[~leave].dropna()))
    return kept, {"model_split": "+".join(seen) or None, "n_left_out": int(leave.sum())}


def located_mask(segmenter: Segmenter, prob: np.ndarray, text: str) -> tuple[np.ndarray, bool]:
    """The mask of `text` from its probabilities [S, S], the low-confidence fallback of a drawn
    finding included (`Segmenter.locate`), and whether the fallback acted; a segmenter without
    `locate` (a stand-in): the thresholded mask."""
    if hasattr(segmenter, "locate"):
        return segmenter.locate(prob, text)
    return np.asarray(prob) >= segmenter.threshold, False


def located_masks(segmenter: Segmenter, probs: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """`located_mask` of each map of `probs` [N, 1, S, S]: (bool [N, 1, S, S], low confidence bool [N])."""
    out = [located_mask(segmenter, p[0].numpy(), t) for p, t in zip(probs, texts)]
    masks = np.stack([m for m, _ in out]) if out else np.zeros((0, *probs.shape[2:]), bool)
    return torch.from_numpy(masks)[:, None], np.array([low for _, low in out], bool)


def evaluate(segmenter: Segmenter, cases: pd.DataFrame, *, texts: str = "report",
             cache_dir: str | Path | None = None, n_boot: int = 1000, seed: int = 0
             ) -> tuple[pd.DataFrame, dict]:
    """Score `segmenter` on `cases` (one split). Returns (per-case table, indexed like `cases`;
    summary: the split's name (`split` column), the counts, the figures with 95% intervals).

    texts: which texts the cases are given (`TEXTS`): "report" (each case's own), "shuffled"
    (permuted across cases, seeded: a model that reads the text should fail), "swapped" (left and
    right exchanged in each). Each then goes through the segmenter's text mode (`ReportReader`).
    Cases of the patients the model was trained on are left out (`held_out`).
    """
    if texts not in TEXTS:
        raise ValueError(f"texts must be one of {TEXTS}, got {texts!r}")
    cases, seen = held_out(segmenter, cases)
    if cases.empty:
        raise ValueError("no case left to score: all are of patients the model was trained on")
    arrays = labeled_arrays(cases.assign(_row=cases.index), segmenter.image_size, cache_dir)
    given = list(arrays.cases["text"])
    if texts == "shuffled":
        given = [given[i] for i in np.random.default_rng(seed).permutation(len(given))]
    elif texts == "swapped":
        given = [swap_sides(t) for t in given]
    probs = segmenter.predict_arrays(arrays.images, given)
    masks = torch.from_numpy(arrays.masks)[:, None].bool()
    pred = probs >= segmenter.threshold
    fallback, low = located_masks(segmenter, probs, given)
    per_case = pd.DataFrame({
        "case_id": arrays.cases["case_id"], "uid": arrays.cases["uid"], "text": given,
        "dice": dice_per_image(pred, masks).numpy(), "iou": iou_per_image(pred, masks).numpy(),
        "pointing_hit": pointing_hits(probs, masks).numpy().astype(float),
        "true_area": masks.flatten(1).float().mean(1).numpy(),
        "pred_area": pred.flatten(1).float().mean(1).numpy(),
        "pred_side": [image_side(p[0].numpy()) for p in probs],
        "dice_fallback": dice_per_image(fallback, masks).numpy(), "low_confidence": low,
    }).set_index(pd.Index(arrays.cases["_row"].to_numpy()))
    splits = sorted(set(cases["split"])) if "split" in cases else []
    summary = {"split": "+".join(splits) or None, "n": len(per_case),
               "n_patients": int(arrays.cases["uid"].nunique()), **seen, "texts": texts,
               "threshold": segmenter.threshold,
               "text_model": segmenter.info.get("text_model"),
               "text_model_is_tiny": segmenter.info.get("text_model_is_tiny"),
               "pooled_dice": pooled_dice(pred, masks), "low_confidence_share": float(low.mean())}
    for metric in ("dice", "iou", "pointing_hit", "dice_fallback"):
        mean, lo, hi = bootstrap_ci(per_case[metric].to_numpy(), n_boot=n_boot, seed=seed)
        summary.update({metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi})
    return per_case, summary


def save_evaluation(checkpoint: str | Path, summary: dict, **probes: dict | None) -> Path:
    """Keep the figures of `checkpoint` (`evaluate`'s summary, with the probes' summaries given by
    name, e.g. `counterfactual=...`, `mirror_probe=...`; None ones skipped) in `evaluation.json`
    beside it, under the split they were scored on (`inference.results`); the model card reads
    them. Returns the file's path."""
    return save_results(checkpoint, {**summary, **{k: v for k, v in probes.items() if v is not None}})


def best_median_worst(scores: pd.Series) -> list:
    """Index labels of the best, the median and the worst score (ties keep the first)."""
    order = scores.sort_values(ascending=False, kind="stable").index
    return [order[0], order[len(order) // 2], order[-1]]


def counterfactual_sides(segmenter: Segmenter, cases: pd.DataFrame, *,
                         cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """For each case whose text names one side: predict with the text as written and with left and
    right swapped, and record on which image half the predicted mass lies. A case whose mask holds
    a drawn finding that stays where it is under the swap (`vocabulary.staying_parts`: the heart
    of "Mild cardiomegaly.", or a lesion whose own sentence names no side) is left out
    (`n_left_out`): its mask should neither move nor empty.

    `moved_share`: share of those cases whose prediction moves to the other half when the words are
    swapped; `correct_side_share`: share whose original prediction lies on the side the text names;
    `emptied_share`: share whose swapped text, pointing where nothing lies, gives an empty mask
    (under EMPTY_AREA of the image); `follows_share`: moved or emptied, either way not the lesion
    the words no longer name.
    """
    sided = cases[[expected_image_side(t) is not None for t in cases["text"]]]
    columns = ["case_id", "text", "expected_side", "side", "swapped_side", "moved", "emptied"]
    if sided.empty:
        return pd.DataFrame(columns=columns), {"n_sided": 0, "n_left_out": 0, "moved_share": float("nan"),
                                               "correct_side_share": float("nan"),
                                               "emptied_share": float("nan"),
                                               "follows_share": float("nan")}
    arrays = labeled_arrays(sided, segmenter.image_size, cache_dir)
    vocabulary = getattr(segmenter, "vocabulary", None) or MaskVocabulary()
    moving = np.array([(k := staying_parts(t, m, vocabulary, swap_sides)) is not None and not k.any()
                       for t, m in zip(arrays.cases["text"], arrays.masks)], dtype=bool)
    n_left_out = int((~moving).sum())
    if not moving.any():
        return pd.DataFrame(columns=columns), {"n_sided": 0, "n_left_out": n_left_out,
                                               "moved_share": float("nan"), "correct_side_share": float("nan"),
                                               "emptied_share": float("nan"), "follows_share": float("nan")}
    arrays = LabeledArrays(arrays.cases[moving].reset_index(drop=True), arrays.images[moving], arrays.masks[moving])
    texts = list(arrays.cases["text"])
    both = []
    for variant in (texts, [swap_sides(t) for t in texts]):
        probs = segmenter.predict_arrays(arrays.images, variant)
        both.append([image_side(p[0].numpy()) for p in probs])
    swapped_area = (probs >= segmenter.threshold).flatten(1).float().mean(1).numpy()
    swapped_mask = located_masks(segmenter, probs, [swap_sides(t) for t in texts])[0]
    table = pd.DataFrame({"case_id": arrays.cases["case_id"], "text": texts,
                          "expected_side": [expected_image_side(t) for t in texts],
                          "side": both[0], "swapped_side": both[1]})
    table["moved"] = table["side"] != table["swapped_side"]
    table["emptied"] = swapped_area < EMPTY_AREA
    table["emptied_fallback"] = swapped_mask.flatten(1).float().mean(1).numpy() < EMPTY_AREA
    return table[columns + ["emptied_fallback"]], {
        "n_sided": len(table), "n_left_out": n_left_out, "moved_share": float(table["moved"].mean()),
        "correct_side_share": float((table["side"] == table["expected_side"]).mean()),
        "emptied_share": float(table["emptied"].mean()),
        "follows_share": float((table["moved"] | table["emptied"]).mean()),
        "emptied_share_fallback": float(table["emptied_fallback"].mean()),
        "follows_share_fallback": float((table["moved"] | table["emptied_fallback"]).mean())}


def two_lesion_probe(segmenter: Segmenter, items: pd.DataFrame, *,
                     cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Whether the mask follows the text: images that hold two lesions, each asked about with a text
    that describes one of them. An item follows its text when more predicted probability lies in
    the described lesion's mask than in the other one's.

    items: one row per (image, text) with `image_path`, `text`, `mask_path` (the described
    lesion) and `other_mask_path` (the other lesion), e.g. `data.demo.generate.probe_items` for the demo.
    Returns (items with `mass_described`, `mass_other`, `follows`, `same_lung` and of the mask,
    as thresholded and with the low-confidence fallback: `empty`, `hit` (more of it on the
    described lesion than on the other); summary with `follows_share`, those shares, and
    `follows_share_` of the pairs in one lung / in other lungs (and of one kind / of other kinds
    given a `same_kind` column)).
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
    for name, masks in (("", probs[:, None] >= segmenter.threshold),
                        ("_fallback", located_masks(segmenter, probs[:, None], list(table["text"]))[0])):
        masks = masks[:, 0].float()
        table[f"empty{name}"] = ~masks.flatten(1).any(1).numpy()
        table[f"hit{name}"] = ((masks * own).flatten(1).sum(1) > (masks * others).flatten(1).sum(1)).numpy()
    table["low_confidence"] = table["empty"] & ~table["empty_fallback"]
    table["same_lung"] = same_lung(own, others)
    summary = {"n_items": len(table), "n_images": table["image_path"].nunique(),
               "follows_share": float(table["follows"].mean())}
    summary.update({f"{k}_share{f}": float(table[k + f].mean())
                    for k in ("empty", "hit") for f in ("", "_fallback")})
    summary["low_confidence_share"] = float(table["low_confidence"].mean())
    # lesions of one kind, or in one lung (only the level words tell): the harder pairs
    for column in ("same_kind", "same_lung") if "same_kind" in table else ("same_lung",):
        for name, part in ((column, table[table[column].astype(bool)]),
                           (column.replace("same", "other"), table[~table[column].astype(bool)])):
            summary[f"follows_share_{name}"] = float(part["follows"].mean()) if len(part) else float("nan")
            summary[f"n_items_{name}"] = len(part)
    return table, summary


def same_lung(masks: torch.Tensor, others: torch.Tensor) -> np.ndarray:
    """bool [N]: whether each pair of masks [N, S, S] lies in one lung, their centroids in one
    half of the image and neither on the heart (`regions.HEART_BOX`)."""
    def centroid(m: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        m = m.float()
        total = m.flatten(1).sum(1).clamp(min=1)
        ys, xs = (torch.arange(n, dtype=torch.float32) + 0.5 for n in m.shape[-2:])
        return (((m.sum(1) * xs).sum(1) / total / m.shape[-1]).numpy(),
                ((m.sum(2) * ys).sum(1) / total / m.shape[-2]).numpy())
    (xa, ya), (xb, yb) = centroid(masks), centroid(others)
    heart = Place(heart=True)
    return ((xa < 0.5) == (xb < 0.5)) & ~heart.contains(xa, ya) & ~heart.contains(xb, yb)


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
    fallback = located_masks(segmenter, probs, asked)[0].flatten(1).float().mean(1).numpy()
    table = pd.DataFrame({"case_id": arrays.cases["case_id"], "text": asked, "pred_area": area})
    return table, {"n": len(table), "empty_share": float((area < EMPTY_AREA).mean()),
                   "mean_area": float(area.mean()),
                   "empty_share_fallback": float((fallback < EMPTY_AREA).mean())}
