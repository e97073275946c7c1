"""Evaluation on held-out cases and the ablations that show whether the model reads the text.

Metrics are computed at the model's input resolution (masks resized with nearest neighbour), per
image (see `helpers.metrics` for the empty-mask convention) with bootstrap 95% intervals over cases.
The test split is meant to be touched only here, for the final report.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .config import AblationConfig, FinetuneConfig
from .inference import Segmenter, predict_arrays
from .metrics import bootstrap_ci, dice_per_image, iou_per_image, pointing_hits, pooled_dice
from .text import names_side, swap_sides
from .train import BEST_FILE, finetune, labeled_arrays

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
    probs = predict_arrays(segmenter.model, arrays.images, segmenter.embed(texts), segmenter.device)
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
        probs = predict_arrays(segmenter.model, arrays.images, segmenter.embed(variant),
                               segmenter.device)
        both.append([image_side(p[0].numpy()) for p in probs])
    table = pd.DataFrame({"case_id": arrays.cases["case_id"], "text": texts,
                          "expected_side": [expected_image_side(t) for t in texts],
                          "side": both[0], "swapped_side": both[1]})
    table["moved"] = table["side"] != table["swapped_side"]
    return table[columns], {"n_sided": len(table), "moved_share": float(table["moved"].mean()),
                            "correct_side_share": float((table["side"] == table["expected_side"]).mean())}


@dataclasses.dataclass
class Variant:
    """One row of the ablation table: what to train (overrides of the base settings) and how the
    test texts are given."""

    name: str
    overrides: dict
    text_mode: str = "report"
    seeds: Sequence[int] | None = None  # None: all seeds of the ablation settings


def ablation_variants(base: FinetuneConfig, settings: AblationConfig,
                      phase1_encoders: dict[str, str] | None = None) -> list[Variant]:
    """The ablations of the Phase-2 issue: text vs shuffled text vs image only; the fusion
    variants; Phase-1 initialisation vs none and per objective; transposed-conv upsampling."""
    main = f"text ({base.fusion})"
    variants = [Variant(main, {}), Variant(f"shuffled test text ({base.fusion})", {}, "shuffled"),
                Variant("image only (none)", {"fusion": "none"})]
    variants += [Variant(f"text ({f})", {"fusion": f}) for f in settings.fusions if f != base.fusion]
    if settings.with_init:
        variants.append(Variant("no Phase-1 init", {"pretrained_encoder": None}))
        for objective, path in (phase1_encoders or {}).items():
            if path != base.pretrained_encoder:
                variants.append(Variant(f"Phase-1 {objective} init", {"pretrained_encoder": path}))
    if settings.with_upsampling:
        other = "transpose" if base.upsampling == "interp" else "interp"
        variants.append(Variant(f"{other} upsampling", {"upsampling": other}, seeds=settings.seeds[:1]))
    return variants


def run_ablations(cases: pd.DataFrame, out_dir: str | Path, base: FinetuneConfig,
                  settings: AblationConfig, *, phase1_encoders: dict[str, str] | None = None,
                  main_checkpoint: str | Path | None = None, cache_dir: str | Path | None = None,
                  text_cache_dir: str | Path | None = None, progress: bool = False
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and evaluate every variant for every seed on the test split.

    `main_checkpoint`, when given, is reused as the base model of the first seed instead of being
    trained again. Returns (summary table, one row per variant and seed). Variants sharing the
    same training settings and seed are trained once (e.g. text vs shuffled test text).
    """
    out = Path(out_dir)
    test = cases[cases["split"] == "test"].reset_index(drop=True)
    trained: dict[tuple, Segmenter] = {}
    runs, per_case = [], []
    for variant in ablation_variants(base, settings, phase1_encoders):
        for seed in variant.seeds or settings.seeds:
            cfg = dataclasses.replace(base, seed=seed, **variant.overrides)
            key = tuple(sorted(dataclasses.asdict(cfg).items()))
            if key not in trained:
                if main_checkpoint and not variant.overrides and seed == settings.seeds[0]:
                    path = Path(main_checkpoint)
                else:
                    tag = "".join(c if c.isalnum() else "_" for c in variant.name).strip("_")
                    run_dir = out / f"{tag}_seed{seed}"
                    # a finished run (best_model.pth and its history) is reused: resume=True
                    finetune(cfg, cases, run_dir, cache_dir=cache_dir, text_cache_dir=text_cache_dir,
                             resume=True, progress=progress)
                    path = run_dir / BEST_FILE
                trained[key] = Segmenter.from_checkpoint(path, device=cfg.device,
                                                         text_cache_dir=text_cache_dir)
            seg = trained[key]
            cases_eval, summary = evaluate(seg, test, text_mode=variant.text_mode, cache_dir=cache_dir,
                                           n_boot=settings.bootstrap, seed=seed)
            row = {"variant": variant.name, "seed": seed, **{k: summary[k] for k in
                   ("dice", "iou", "pointing_hit", "pooled_dice", "n")}}
            if variant.text_mode == "report" and cfg.fusion != "none":
                row["moved_share"] = counterfactual_sides(seg, test, cache_dir=cache_dir)[1]["moved_share"]
            runs.append(row)
            per_case.append(cases_eval.assign(variant=variant.name, seed=seed))
    runs_frame = pd.DataFrame(runs)
    return summarize_runs(runs_frame, pd.concat(per_case), settings.bootstrap), runs_frame


def summarize_runs(runs: pd.DataFrame, per_case: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """One row per variant: mean over cases of all seeds with a bootstrap 95% interval, and the
    standard deviation of the per-seed means when there is more than one seed."""
    rows = []
    for name, group in per_case.groupby("variant", sort=False):
        row = {"variant": name, "seeds": group["seed"].nunique(), "n_cases": len(group)}
        seeds = runs[runs["variant"] == name]
        for metric in ("dice", "iou", "pointing_hit"):
            mean, lo, hi = bootstrap_ci(group[metric].to_numpy(), n_boot=n_boot, seed=0)
            sd = seeds[metric].std(ddof=1) if len(seeds) > 1 else float("nan")
            row.update({metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi, f"{metric}_sd": sd})
        if "moved_share" in seeds:
            row["moved_share"] = seeds["moved_share"].mean()
        rows.append(row)
    return pd.DataFrame(rows)
