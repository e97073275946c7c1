"""Scoring a trained `Segmenter` on held-out cases, and the counterfactual that swaps left and right.

Metrics are computed at the model's input resolution (masks resized with nearest neighbour), per
image (see `helpers.metrics` for the empty-mask convention) with bootstrap 95% intervals over cases.
The test split is meant to be touched only here, for the final report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .datasets import labeled_arrays
from .inference import Segmenter
from .io import load_masks
from .metrics import bootstrap_ci, dice_per_image, iou_per_image, pointing_hits, pooled_dice
from .text import names_side, swap_sides

TEXT_MODES = ("report", "shuffled", "swapped")


def image_side(prob: np.ndarray) -> str:
    """Which half of the image holds most predicted probability mass: "image-left" / "image-right".

    By the radiological convention the image's left half shows the patient's RIGHT side."""
    half = prob.shape[-1] // 2
    return "image-left" if prob[..., :half].sum() >= prob[..., -half:].sum() else "image-right"


def expected_image_side(text: str) -> str | None:
    """The image half a text's side word points to (patient's right -> image-left)."""
    side = names_side(text)
    return {"right": "image-left", "left": "image-right"}.get(side or "")


def evaluate(segmenter: Segmenter, cases: pd.DataFrame, *, text_mode: str = "report",
             cache_dir: str | Path | None = None, n_boot: int = 1000, seed: int = 0
             ) -> tuple[pd.DataFrame, dict]:
    """Score `segmenter` on `cases` (one split). Returns (per-case table, summary).

    text_mode: "report" (each case's own text), "shuffled" (texts permuted across cases, seeded: a
    model that reads the text should fail), "swapped" (left and right exchanged in each text).
    """
    if text_mode not in TEXT_MODES:
        raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {text_mode!r}")
    arrays = labeled_arrays(cases, segmenter.image_size, cache_dir)
    texts = list(arrays.cases["text"])
    if text_mode == "shuffled":
        texts = [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))]
    elif text_mode == "swapped":
        texts = [swap_sides(t) for t in texts]
    probs = segmenter.predict_arrays(arrays.images, texts)
    masks = torch.from_numpy(arrays.masks)[:, None].bool()
    pred = probs >= segmenter.threshold
    per_case = pd.DataFrame({
        "case_id": arrays.cases["case_id"], "uid": arrays.cases["uid"], "text": texts,
        "dice": dice_per_image(pred, masks).numpy(), "iou": iou_per_image(pred, masks).numpy(),
        "pointing_hit": pointing_hits(probs, masks).numpy().astype(float),
        "true_area": masks.flatten(1).float().mean(1).numpy(),
        "pred_area": pred.flatten(1).float().mean(1).numpy(),
        "pred_side": [image_side(p[0].numpy()) for p in probs],
    })
    summary = {"n": len(per_case), "text_mode": text_mode, "threshold": segmenter.threshold,
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
    swapped; `correct_side_share`: share whose original prediction lies on the side the text names.
    """
    sided = cases[[expected_image_side(t) is not None for t in cases["text"]]]
    columns = ["case_id", "text", "expected_side", "side", "swapped_side", "moved"]
    if sided.empty:
        return pd.DataFrame(columns=columns), {"n_sided": 0, "moved_share": float("nan"),
                                               "correct_side_share": float("nan")}
    arrays = labeled_arrays(sided, segmenter.image_size, cache_dir)
    texts = list(arrays.cases["text"])
    both = []
    for variant in (texts, [swap_sides(t) for t in texts]):
        probs = segmenter.predict_arrays(arrays.images, variant)
        both.append([image_side(p[0].numpy()) for p in probs])
    table = pd.DataFrame({"case_id": arrays.cases["case_id"], "text": texts,
                          "expected_side": [expected_image_side(t) for t in texts],
                          "side": both[0], "swapped_side": both[1]})
    table["moved"] = table["side"] != table["swapped_side"]
    return table[columns], {"n_sided": len(table), "moved_share": float(table["moved"].mean()),
                            "correct_side_share": float((table["side"] == table["expected_side"]).mean())}


def two_lesion_probe(segmenter: Segmenter, items: pd.DataFrame, *,
                     cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The direct test that the mask follows the text: images that hold two lesions, each asked about with a text
    that describes one of them. An item follows its text when more predicted probability lies in
    the described lesion's mask than in the other one's.

    items: one row per (image, text) with `image_path`, `text`, `mask_path` (the described
    lesion) and `other_mask_path` (the other lesion), e.g. `synthetic.probe_items` for the demo.
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
    return table, {"n_items": len(table), "n_images": table["image_path"].nunique(),
                   "follows_share": float(table["follows"].mean())}
