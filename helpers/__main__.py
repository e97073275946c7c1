"""Command line: `python -m helpers <command> ...` runs the same functions as the notebooks.

    prepare   fetch, catalog and split a dataset; print the summary and the problems found
    pretrain  Phase 1: self-supervised autoencoder -> my_pretrained_encoder.pth
    finetune  Phase 2: multimodal U-Net -> best_model.pth
    evaluate  score a checkpoint on a split (per-case CSV + summary with 95% intervals)
    ablate    train and evaluate the ablation variants, print the table
    predict   mask and overlay for one image and one text
    export    a checkpoint as a model folder (config, safetensors, model card); --push to the hub
    bench     throughput of the data pipeline and training steps (images/s)
    gpu-check both phases, resume and inference for a few steps on a GPU (< 5 min), as JSON
    notebooks execute the numbered notebooks headless (used by `make demo`)

Several GPUs or machines: `torchrun --nproc_per_node N -m helpers pretrain ...` (or `finetune`)
runs the same command as N data-parallel processes (see helpers/core/distributed.py and
docs/phase1-at-scale.md).

The settings flags are generated from the settings dataclasses (`core.settings.settings_flags`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core import settings as config
from .core import distributed as dist
from .predict import add_predict_parser
from .share import add_export_parser
from .core.studies import STUDIES, study_help, study_settings


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="dataset: demo, a folder, a .zip, a Drive link, "
                        "kaggle:<owner>/<dataset> (default: what the run folder's run.json records, "
                        "else demo)")
    parser.add_argument("--masks", default=None, help="the hand-drawn masks when the dataset has no "
                        "masked/ folder: a folder, a .zip, a Drive path or link")
    parser.add_argument("--mode", choices=config.MODES, default=None,
                        help="settings preset (default: smoke under CXR_SMOKE=1, demo for the demo "
                             "data, real otherwise)")


def _encoder_start(cfg, args):
    """Phase 2's `--encoder-weights imagenet|FILE`: start from ImageNet weights without Phase 1
    (a Phase-1 encoder, `--pretrained-encoder`, carries its own start)."""
    if not getattr(args, "encoder_weights", None):
        return cfg
    if cfg.pretrained_encoder:
        raise ValueError("--encoder-weights and --pretrained-encoder exclude each other: a Phase-1 "
                         "encoder carries its start (pretrain it with --encoder-weights imagenet)")
    return config.override(cfg, {"pretrained_encoder": args.encoder_weights})


def ablation_settings(preset: config.Preset, args) -> tuple[config.FinetuneConfig, config.AblationConfig]:
    """`ablate`'s Phase-2 and ablation settings: the preset's, the `--study`'s, then the flags."""
    finetune, ablation = study_settings(args.study, preset.finetune, preset.ablation)
    return (_encoder_start(config.apply_flags(finetune, args, "finetune"), args),
            config.apply_flags(ablation, args, "ablation"))


def cmd_prepare(args) -> None:
    from .pipeline import prepare

    prep = prepare(args.data, args.mode, masks=args.masks, out_dir=args.out)
    print(json.dumps(prep.catalog.summary(), indent=1))
    if prep.has_masks:
        print(prep.cases["split"].value_counts().to_string())
    else:
        print(f"Phase 2 cannot run yet: {prep.masks_message}")
    if len(prep.catalog.problems):
        print(f"{len(prep.catalog.problems)} problem(s):")
        print(prep.catalog.problems.to_string(index=False))
    print(f"split saved to {prep.paths.splits}")


def cmd_pretrain(args) -> None:
    from .core.settings import preset
    from .core.layout import RUNS_ROOT, RunPaths
    from .pipeline import prepare
    from .training.pretrain import pretrain
    from .data.unlabeled import iu_patients, iu_pretrain_paths, list_unlabeled

    if args.data == "none" and not args.unlabeled:
        raise ValueError("--data none needs --unlabeled sources")
    if args.data == "none":  # Phase 1 on other collections only: no IU dataset to prepare
        settings = preset(args.mode, "none")
        run, paths = RunPaths(Path(args.out) if args.out else RUNS_ROOT / settings.mode), []
    else:
        with dist.main_first():  # rank 0 fetches / generates the data and writes the split
            prep = prepare(args.data, args.mode, masks=args.masks, out_dir=args.out)
        settings, run = prep.preset, prep.paths
    cfg = config.apply_flags(settings.pretrain, args, "pretrain")
    if args.data != "none":
        paths = iu_pretrain_paths(prep.catalog.images, prep.cases, frontal_only=cfg.frontal_only)
        if not dist.is_distributed():  # read from the run folder's cache when it holds them
            paths = prep.stage_images(cfg.image_size, paths)
        print(f"{args.data or prep.run.data_source}: {len(paths)} image(s)")
    if args.unlabeled:
        extra = list_unlabeled(args.unlabeled)
        print(extra.report())
        print("(images of --unlabeled sources are used as given: keep Phase 2's test patients out "
              "of them yourself)")
        known = set(paths)
        paths += [p for p in extra.paths if p not in known]
    patients = iu_patients(prep.catalog.images, paths) if args.data != "none" else []
    result = pretrain(cfg, paths, run.phase1(cfg.objective, cfg.encoder_weights), cache_dir=run.cache,
                      resume=args.resume, patients=patients)
    print(f"best val_loss {result.best_value:.5f} at epoch {result.best_epoch}; "
          f"{result.images_per_second:.1f} images/s (all processes); saved {result.best_path}")


def cmd_finetune(args) -> None:
    from .pipeline import prepare
    from .training.finetune import finetune

    with dist.main_first():  # rank 0 fetches / generates the data and writes the split
        prep = prepare(args.data, args.mode, masks=args.masks, out_dir=args.out)
    prep.require_masks()
    cfg = _encoder_start(config.apply_flags(prep.preset.finetune, args, "finetune"), args)
    if not dist.is_distributed():
        prep.stage_images(cfg.image_size, prep.cases["image_path"])
    result = finetune(cfg, prep.cases, prep.paths.phase2, cache_dir=prep.paths.cache,
                      text_cache_dir=prep.paths.text_models, resume=args.resume)
    print(f"best epoch {result.best_epoch} (val_select {result.best_value:.4f}); saved {result.best_path}")


def cmd_evaluate(args) -> None:
    from .evaluation.scores import (counterfactual_sides, empty_on_normal, evaluate, mirror_probe,
                                    normal_reports, save_evaluation, two_lesion_probe)
    from .evaluation.sentence_scores import other_findings, per_sentence
    from .inference.segmenter import Segmenter
    from .pipeline import demo_probe, demo_reports, prepare

    prep = prepare(args.data, args.mode, masks=args.masks, out_dir=args.out_dir)
    prep.require_masks()
    seg = Segmenter.from_checkpoint(args.checkpoint, text_cache_dir=prep.paths.text_models)
    prep.stage_images(seg.image_size, prep.cases["image_path"])
    cases = prep.cases[prep.cases["split"] == args.split].reset_index(drop=True)
    texts = "shuffled" if args.shuffle_text else "swapped" if args.swap_sides else "report"
    per_case, summary = evaluate(seg, cases, texts=texts, cache_dir=prep.paths.cache)
    cases = cases.loc[per_case.index]  # without the model's training patients (`held_out`)
    summary["counterfactual"] = counterfactual_sides(seg, cases, cache_dir=prep.paths.cache)[1]
    summary["mirror_probe"] = mirror_probe(seg, cases, cache_dir=prep.paths.cache)[1]
    summary["normal_reports"] = empty_on_normal(seg, cases, normal_reports(prep.catalog.reports),
                                                cache_dir=prep.paths.cache)[1]
    summary["other_findings"] = other_findings(seg, cases, cache_dir=prep.paths.cache)[1]
    probe = demo_probe(prep, args.split)
    if probe is not None:  # the demo data has the second lesions' masks
        summary["two_lesion_probe"] = two_lesion_probe(seg, probe, cache_dir=prep.paths.cache)[1]
    if args.per_sentence:  # reports that describe several lesions of one image: the demo's
        sentences, summary["per_sentence"] = per_sentence(seg, demo_reports(prep, args.split, required=True),
                                                          cache_dir=prep.paths.cache)
    print(f"model: {seg.describe()}")
    print(json.dumps(summary, indent=1, default=float))
    print(f"figures kept for the model card: {save_evaluation(args.checkpoint, summary)}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        per_case.to_csv(args.out, index=False)
        print(f"per-case results: {args.out}")
        if args.per_sentence:
            sentences.to_csv(Path(args.out).with_suffix(".sentences.csv"), index=False)


def cmd_ablate(args) -> None:
    import pandas as pd

    from .evaluation.scores import normal_reports
    from .evaluation.ablation import CASES_FILE, differences_to, run_ablations
    from .pipeline import demo_crowded, demo_probe, demo_reports, prepare

    prep = prepare(args.data, args.mode, masks=args.masks, out_dir=args.out)
    prep.require_masks()
    base, settings = ablation_settings(prep.preset, args)
    prep.stage_images(base.image_size, prep.cases["image_path"])
    table, runs = run_ablations(prep.cases, prep.paths.ablations, base, settings,
                                phase1_encoders=prep.paths.phase1_encoders(),
                                cache_dir=prep.paths.cache, text_cache_dir=prep.paths.text_models,
                                probe=demo_probe(prep), normal_texts=normal_reports(prep.catalog.reports),
                                reports=demo_reports(prep), crowded=demo_crowded(prep),
                                progress=args.progress)
    print(table.round(3).to_string(index=False))
    table.to_csv(prep.paths.ablations / "ablation_table.csv", index=False)
    runs.to_csv(prep.paths.ablations / "ablation_runs.csv", index=False)
    per_case = pd.read_csv(prep.paths.ablations / CASES_FILE)
    main = table["variant"].iloc[0]
    diffs = pd.concat([differences_to(part, main, n_boot=settings.bootstrap).assign(cases=cases)
                       for cases, part in (("all", per_case), ("alone", per_case[per_case["alone"]]))])
    print(f"Dice of {main} minus each other variant, paired on (seed, case), with a bootstrap 95% "
          "interval, on all test cases and on those whose image shows no undescribed lesion (alone):")
    print(diffs.round(3).to_string(index=False))
    diffs.to_csv(prep.paths.ablations / "ablation_differences.csv", index=False)


def cmd_bench(args) -> None:
    from .evaluation.bench import run_bench

    run_bench(image_size=args.image_size, batch_size=args.batch_size, device=args.device,
              text_model=args.text_model, n_images=args.n_images, steps=args.steps, parts=args.parts)


def cmd_gpu_check(args) -> None:
    from .evaluation.gpu_check import run_gpu_check
    run_gpu_check(args.out, device=args.device)


def cmd_notebooks(args) -> None:
    from .notebooks import run_notebooks

    run_notebooks(args.out, mode=args.mode, names=args.only, timeout=args.cell_timeout,
                  restart=args.restart)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="fetch, catalog and split a dataset")
    _common(p)
    p.add_argument("--out", default=None, help="run folder (default runs/<mode>)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="Phase 1: self-supervised autoencoder")
    _common(p)
    p.add_argument("--out", default=None, help="run folder (default runs/<mode>)")
    p.add_argument("--resume", action="store_true", help="continue from last.pth")
    p.add_argument("--unlabeled", nargs="+", default=None, metavar="SOURCE",
                   help="more unlabeled images: folders of PNG/JPEG, .csv/.txt lists of paths "
                        "(with --data none: these only)")
    config.settings_flags(p, config.PretrainConfig, "pretrain")
    p.set_defaults(func=cmd_pretrain)

    for name, func, text in (("finetune", cmd_finetune, "Phase 2: multimodal U-Net"),
                             ("ablate", cmd_ablate, "ablation table on the test split")):
        p = sub.add_parser(name, help=text)
        _common(p)
        p.add_argument("--out", default=None, help="run folder (default runs/<mode>)")
        p.add_argument("--resume", action="store_true", help="continue from last.pth")
        config.settings_flags(p, config.FinetuneConfig, "finetune")
        p.add_argument("--encoder-weights", default=None, metavar="imagenet|FILE",
                       help="start the image encoder from ImageNet weights, without Phase 1")
        if name == "ablate":
            p.add_argument("--study", choices=list(STUDIES), default=None,
                           help=f"a measured study's settings, changed by the flags given: {study_help()}")
            config.settings_flags(p, config.AblationConfig, "ablation")
            p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                           help="progress bars and each training's epochs")
        p.set_defaults(func=func)

    p = sub.add_parser("evaluate", help="score a checkpoint on a split")
    _common(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--shuffle-text", action="store_true", help="texts permuted across cases")
    p.add_argument("--swap-sides", action="store_true", help="left and right swapped in each text")
    p.add_argument("--per-sentence", action="store_true", help="also whole reports that describe 2-3 "
                   "lesions of an image, each sentence's mask scored against its own lesion (demo)")
    p.add_argument("--out", default=None, help="per-case CSV (--per-sentence: also <name>.sentences.csv)")
    p.add_argument("--out-dir", default=None, help="run folder holding splits.csv (default runs/<mode>)")
    p.set_defaults(func=cmd_evaluate)

    add_predict_parser(sub)

    p = sub.add_parser("bench", help="throughput in images/s")
    for flag in ("--image-size", "--batch-size", "--n-images", "--steps"):
        p.add_argument(flag, type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--text-model", default=None,
                   help="text encoder for the text-cost rows (default: a CLIP of ViT-B/32 size)")
    p.add_argument("--parts", nargs="+", metavar="PART", help="only: loading, phase2, phase1, grounding")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("gpu-check", help="a few steps of everything on the GPU, as JSON")
    p.add_argument("--out", default="runs/gpu-check.json", help="the JSON (default runs/gpu-check.json)")
    p.add_argument("--device", default="auto", help="cpu: the same steps on the CPU (tests)")
    p.set_defaults(func=cmd_gpu_check)

    p = sub.add_parser("notebooks", help="execute the notebooks headless")
    p.add_argument("--out", default=None, help="folder for the executed notebooks (default runs/<mode>)")
    p.add_argument("--mode", choices=config.MODES, default=None)
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01 02")
    p.add_argument("--restart", action="store_true",
                   help="run every notebook again (default: continue after the finished ones)")
    p.add_argument("--cell-timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    p.set_defaults(func=cmd_notebooks)
    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("pretrain", "finetune") and dist.launched_by_torchrun():
            from .core.settings import pick_device

            device = getattr(args, "pretrain.device", None) or getattr(args, "finetune.device", None)
            dist.init_from_env(pick_device(device or "auto"))  # NCCL on GPUs, gloo on CPUs
            dist.quiet_unless_main()
        args.func(args)
    except (ValueError, OSError, RuntimeError) as err:  # our errors say what to do: no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        dist.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
