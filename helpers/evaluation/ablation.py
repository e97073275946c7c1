"""Experiments: train many Phase-2 variants and score them on the test split (the ablations).

Each variant changes a few settings of the base run (fusion, Phase-1 initialisation, upsampling) or
how the test texts are given (shuffled across cases); the table shows whether the model reads the
text and which choices matter, with bootstrap intervals and the spread over seeds.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Collection, Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..core.drive import local_work_dir
from ..core.settings import AblationConfig, FinetuneConfig
from .scores import (counterfactual_sides, empty_on_normal, evaluate, mirror_probe,
                         two_lesion_probe)
from ..inference.segmenter import Segmenter
from ..core.layout import BEST_FILE, LAST_FILE, history_file
from ..model.metrics import bootstrap_ci
from ..training.finetune import finetune
from ..training.methods import active_methods, image_only
from .sentence_scores import other_findings, per_sentence

CASES_FILE = "ablation_cases.csv"
# the per-run figures beside Dice, IoU and pointing, each averaged over the seeds
RUN_EXTRAS = ("dice_alone", "dice_fallback", "moved", "emptied", "follows", "mirror_follows", "normal_empty", "other_empty",
              "probe_follows", "probe_same_kind", "probe_same_lung", "probe_empty", "probe_empty_fallback",
              "sentence_on_own", "sentence_dice", "not_lesion_dice", "not_lesion_on_own")
SCORES_FILE, SCORED_CASES_FILE = "scores.json", "scores_cases.csv"  # one row's results, kept


@dataclasses.dataclass
class Variant:
    """One row of the ablation table: what to train (overrides of the base settings) and which
    texts the test cases are given (`scores.TEXTS`)."""

    name: str
    overrides: dict
    texts: str = "report"
    seeds: Sequence[int] | None = None  # None: all seeds of the ablation settings


def _text_variant(fusion: str, text_mode: str) -> str:
    return f"text ({fusion}, {text_mode})"


def ablation_variants(base: FinetuneConfig, settings: AblationConfig,
                      phase1_encoders: dict[str, str] | None = None) -> list[Variant]:
    """The ablations: text vs shuffled text vs image only; the fusions, each with the text modes;
    mismatched-text negatives; the text methods of a group (`training.methods`: the place training,
    none of it and each method left out; the per-sentence training), the epoch chosen without the
    place probe, and the place prior;
    Phase-1 initialisation vs none and per objective; transposed-conv upsampling."""
    # the image-only control reads no text: no place prior, no text method (`methods.image_only`)
    control = dataclasses.asdict(image_only(dataclasses.replace(base, fusion="none")))
    variants = [Variant(_text_variant(base.fusion, base.text_mode), {}),
                Variant(f"shuffled test text ({base.fusion}, {base.text_mode})", {}, "shuffled"),
                Variant("image only (none)", {k: v for k, v in control.items() if getattr(base, k) != v})]
    for fusion in settings.fusions:
        for mode in dict.fromkeys((base.text_mode, *settings.text_modes)):
            if (fusion, mode) != (base.fusion, base.text_mode):
                variants.append(Variant(_text_variant(fusion, mode),
                                        {"fusion": fusion, "text_mode": mode}))
    variants += [Variant(f"negatives {rate:g}", {"negative_rate": rate})
                 for rate in settings.negative_rates if rate != base.negative_rate]
    grouped = [method for method, _ in active_methods(base) if method.group]
    place = [method.setting for method in grouped if method.group == "place"]
    if settings.place_each:  # each method left out; the place training's when it has several
        variants += [Variant(f"without {m.setting}", {m.setting: 0.0}) for m in grouped
                     if m.group != "place" or len(place) > 1]
        if base.select_on_probe:  # the epoch the place probe helps choose
            variants.append(Variant("epoch by Dice alone", {"select_on_probe": False}))
    if settings.with_place and place:
        variants.append(Variant("no place training", {name: 0.0 for name in place}))
    if settings.with_place and base.place_prior:
        variants.append(Variant("no place prior", {"place_prior": False}))
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
                  text_cache_dir: str | Path | None = None, probe: pd.DataFrame | None = None,
                  normal_texts: Sequence[str] = (), reports: pd.DataFrame | None = None,
                  crowded: Collection[str] = (), progress: bool = True
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and evaluate every variant for every seed on the test split.

    `main_checkpoint`, when given, is reused as the base model of the first seed instead of being
    trained again. Returns (summary table, one row per variant and seed). Variants sharing the
    same training settings and seed are trained once (e.g. text vs shuffled test text).
    `probe` (items of `scores.two_lesion_probe`) adds the share of texts the mask follows;
    every row with the cases' own texts also gets the mirror probe (`scores.mirror_probe`) and,
    given `normal_texts`, the share of test images left empty when asked with a normal report;
    given `reports` (items of `sentence_scores.per_sentence`), each sentence's mask on its own
    finding. `crowded`: the image paths that hold a lesion their report does not describe; the
    per-case table marks the others `alone` (their Dice is `dice_alone`).

    Each row's results are kept in its folder (`scores.json`, `scores_cases.csv`), so a run that
    was cut off continues with the first row not scored. Where the run folder is on Drive (Colab)
    the models are trained on this machine's disk and only their history and scores go to the run
    folder: their weights (~400 MB each) would fill a free Drive.
    """
    out = Path(out_dir)
    test = cases[cases["split"] == "test"].reset_index(drop=True)
    trained: dict[tuple, Segmenter] = {}
    runs, per_case = [], []
    variants = ablation_variants(base, settings, phase1_encoders)
    jobs = [(v, seed) for v in variants for seed in v.seeds or settings.seeds]
    if progress:  # the cost up front: how many trainings, how many already there
        todo = {_key(_settings(base, v, seed)): _run_dir(out, v, seed) for v, seed in jobs
                if not (main_checkpoint and not v.overrides and seed == settings.seeds[0])}
        done = sum((d / LAST_FILE).exists() or (d / SCORES_FILE).exists() for d in todo.values())
        print(f"{len(jobs)} ablation rows: {len(todo)} trainings of up to {base.epochs} epochs "
              f"({done} of them started or finished before), then a test evaluation per row")
    for variant, seed in tqdm(jobs, desc="ablations", unit="row", disable=not progress):
        cfg = _settings(base, variant, seed)
        key = _key(cfg)
        main = bool(main_checkpoint) and not variant.overrides and seed == settings.seeds[0]
        scored = None if main else _kept_scores(_run_dir(out, variant, seed), cfg, variant)
        if scored is None:
            if key not in trained:
                if main:  # the model of notebook 03, trained before: scored anew each time
                    path = Path(main_checkpoint)
                else:
                    path = _train(cfg, cases, _run_dir(out, variant, seed), cache_dir,
                                  text_cache_dir, progress)
                trained[key] = Segmenter.from_checkpoint(path, device=cfg.device,
                                                         text_cache_dir=text_cache_dir)
            scored = _score(trained[key], variant, seed, test, settings.bootstrap, cache_dir,
                            normal_texts, probe, reports)
            if not main:
                _keep_scores(_run_dir(out, variant, seed), cfg, variant, *scored)
        row, cases_eval = scored
        alone = ~cases_eval["case_id"].map(dict(zip(test["case_id"], test["image_path"]))).isin(set(crowded))
        runs.append({**row, "dice_alone": float(cases_eval.loc[alone, "dice"].mean())})
        per_case.append(cases_eval.assign(variant=variant.name, seed=seed, alone=alone))
    runs_frame, cases_frame = pd.DataFrame(runs), pd.concat(per_case, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    cases_frame.to_csv(out / CASES_FILE, index=False)  # for paired comparisons of variants
    return summarize_runs(runs_frame, cases_frame, settings.bootstrap), runs_frame


def _train(cfg: FinetuneConfig, cases: pd.DataFrame, run_dir: Path, cache_dir, text_cache_dir,
           progress: bool) -> Path:
    """Train one variant (a finished run is reused: resume=True); its best checkpoint's path. On
    Colab the weights stay on this machine's disk and the run folder gets the history."""
    weights = local_work_dir(run_dir) or run_dir
    finetune(cfg, cases, weights, cache_dir=cache_dir, text_cache_dir=text_cache_dir, resume=True,
             progress=progress)
    if weights != run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights / history_file(BEST_FILE), run_dir / history_file(BEST_FILE))
    return weights / BEST_FILE


def _score(seg: Segmenter, variant: Variant, seed: int, test: pd.DataFrame, n_boot: int, cache_dir,
           normal_texts: Sequence[str], probe: pd.DataFrame | None, reports: pd.DataFrame | None
           ) -> tuple[dict, pd.DataFrame]:
    """One row of the table (and its per-case scores): `variant`'s texts on the test cases."""
    cases_eval, summary = evaluate(seg, test, texts=variant.texts, cache_dir=cache_dir,
                                   n_boot=n_boot, seed=seed)
    row = {"variant": variant.name, "seed": seed, **{k: summary[k] for k in
           ("dice", "iou", "pointing_hit", "pooled_dice", "n", "dice_fallback")}}
    if variant.texts == "report":
        row["other_empty"] = other_findings(seg, test, cache_dir=cache_dir)[1]["empty_share"]
        swap = counterfactual_sides(seg, test, cache_dir=cache_dir)[1]
        row.update({k: swap[f"{k}_share"] for k in ("moved", "emptied", "follows")})
        row["mirror_follows"] = mirror_probe(seg, test, cache_dir=cache_dir)[1]["follows_share"]
        if normal_texts:
            row["normal_empty"] = empty_on_normal(seg, test, normal_texts,
                                                  cache_dir=cache_dir)[1]["empty_share"]
        if probe is not None:
            found = two_lesion_probe(seg, probe, cache_dir=cache_dir)[1]
            row["probe_follows"] = found["follows_share"]
            row["probe_same_kind"] = found.get("follows_share_same_kind", float("nan"))
            row["probe_same_lung"] = found["follows_share_same_lung"]
            row["probe_empty"], row["probe_empty_fallback"] = found["empty_share"], found["empty_share_fallback"]
        if reports is not None and len(reports):
            read = per_sentence(seg, reports, cache_dir=cache_dir, n_boot=n_boot, seed=seed)[1]
            row["sentence_on_own"], row["sentence_dice"] = read["on_own_share"], read["dice"]
            if "not_lesion" in read:  # the heart's sentence, where the masks draw it
                row["not_lesion_dice"] = read["not_lesion"]["dice"]
                row["not_lesion_on_own"] = read["not_lesion"]["on_own_share"]
    return row, cases_eval


def _identity(cfg: FinetuneConfig, variant: Variant) -> dict:
    return json.loads(json.dumps({"settings": dataclasses.asdict(cfg), "texts": variant.texts}))


def _keep_scores(run_dir: Path, cfg: FinetuneConfig, variant: Variant, row: dict,
                 cases_eval: pd.DataFrame) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    cases_eval.to_csv(run_dir / SCORED_CASES_FILE, index=False)
    (run_dir / SCORES_FILE).write_text(json.dumps({**_identity(cfg, variant), "row": row}, indent=1))


def _kept_scores(run_dir: Path, cfg: FinetuneConfig, variant: Variant
                 ) -> tuple[dict, pd.DataFrame] | None:
    """The results an earlier run kept for this row with these settings, or None."""
    try:
        kept = json.loads((run_dir / SCORES_FILE).read_text())
        cases_eval = pd.read_csv(run_dir / SCORED_CASES_FILE, dtype={"case_id": str, "text": str},
                                 keep_default_na=False, na_values=[""])
    except (OSError, ValueError):
        return None
    same = {k: kept.get(k) for k in ("settings", "texts")} == _identity(cfg, variant)
    return (kept["row"], cases_eval) if same else None


def paired_difference(per_case: pd.DataFrame, a: str, b: str, metric: str = "dice",
                      n_boot: int = 1000) -> dict:
    """Mean of `metric` for variant `a` minus variant `b`, paired on the same (seed, case), with
    a bootstrap 95% interval over the pairs (from `ablation_cases.csv`)."""
    pairs = (per_case[per_case["variant"] == a].merge(
        per_case[per_case["variant"] == b], on=["seed", "case_id"], suffixes=("_a", "_b")))
    if pairs.empty:
        raise ValueError(f"no (seed, case) scored for both {a!r} and {b!r}")
    mean, lo, hi = bootstrap_ci((pairs[f"{metric}_a"] - pairs[f"{metric}_b"]).to_numpy(),
                                n_boot=n_boot, seed=0)
    return {"a": a, "b": b, "metric": metric, "difference": mean, "lo": lo, "hi": hi,
            "n_pairs": len(pairs), "seeds": pairs["seed"].nunique()}


def _settings(base: FinetuneConfig, variant: Variant, seed: int) -> FinetuneConfig:
    return dataclasses.replace(base, seed=seed, **variant.overrides)


def _key(cfg: FinetuneConfig) -> tuple:
    """Variants with equal settings are trained once."""
    return tuple(sorted(dataclasses.asdict(cfg).items()))


def _run_dir(out: Path, variant: Variant, seed: int) -> Path:
    tag = "".join(c if c.isalnum() else "_" for c in variant.name).strip("_")
    return out / f"{tag}_seed{seed}"


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
        for extra in RUN_EXTRAS:
            if extra in seeds:
                row[extra] = seeds[extra].mean()
                row[f"{extra}_sd"] = seeds[extra].std(ddof=1) if len(seeds) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def differences_to(per_case: pd.DataFrame, main: str, metric: str = "dice",
                   n_boot: int = 1000) -> pd.DataFrame:
    """`paired_difference(main, other)` for every other variant of `per_case` (one row each)."""
    others = [v for v in pd.unique(per_case["variant"]) if v != main]
    return pd.DataFrame([paired_difference(per_case, main, other, metric, n_boot) for other in others])
