"""Sharing a trained model: a run's checkpoint exported as a model folder (`config.json`,
`model.safetensors`, a `README.md` model card with the run's figures), pushed to the model hub, and
opened again from wherever it is (notebook 04). The command line: `python -m helpers export`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .core.layout import MODEL_CONFIG_FILE, RunPaths


def export_model(checkpoint: str | Path, out: str | Path, *, license: str | None = None,
                 push: str | None = None, private: bool | None = None, text_model: str | None = None,
                 text_cache_dir: str | Path | None = None):
    """Export `checkpoint` (`best_model.pth`) to the folder `out` with its figures
    (`evaluation.json` beside it) and its run's data source (`run.json` of the run folder, when
    the checkpoint lies in one); with `push` ("owner/name"), upload the folder to the model hub
    (token: `HF_TOKEN`, on Colab a secret). `license`: the model's licence (None:
    `pretrained.DEFAULT_LICENSE`). `text_model`: the text encoder to name instead of the recorded
    one (e.g. the hub name of a local folder that is not on this machine). Returns the folder."""
    from .inference.pretrained import DEFAULT_LICENSE, push_folder
    from .inference.segmenter import Segmenter
    from .pipeline import read_run_settings, relative

    checkpoint = Path(checkpoint)
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu", text_model=text_model,
                                    text_cache_dir=text_cache_dir)
    run = checkpoint.resolve().parent.parent
    data = read_run_settings(run) if RunPaths(run).settings.is_file() else None
    folder = seg.save_pretrained(out, license=license or DEFAULT_LICENSE, data=data, repo_id=push)
    print(f"exported {relative(checkpoint)} to {relative(folder)}")
    if push:
        print(f"pushed to {push_folder(folder, push, private=private)}")
    return folder


def _fresh(folder: Path, checkpoint: Path) -> bool:
    """Whether `folder` holds an export at least as new as `checkpoint`."""
    config = folder / MODEL_CONFIG_FILE
    return config.is_file() and config.stat().st_mtime >= checkpoint.stat().st_mtime


def open_model(source: str | Path | None, prep, device: str | None = None):
    """The model notebook 04 looks at, as a `Segmenter`.

    source None: this run's exported model (`RunPaths.model`), exported now from its
    `best_model.pth` when missing or older (in smoke mode the checkpoint is trained first); a run
    folder: its exported model when up to date, else its `best_model.pth`; a `best_model.pth`; an
    exported model's folder; a model hub id ("owner/name", downloaded)."""
    from .inference.segmenter import Segmenter
    from .pipeline import ensure_phase2

    cache = prep.paths.text_models
    if source is None:
        checkpoint = ensure_phase2(prep)
        if not _fresh(prep.paths.model, checkpoint):
            export_model(checkpoint, prep.paths.model, text_cache_dir=cache)
        return Segmenter.from_pretrained(prep.paths.model, device=device, text_cache_dir=cache)
    path = Path(source).expanduser()
    if path.is_file():
        return Segmenter.from_checkpoint(path, device=device, text_cache_dir=cache)
    run = RunPaths(path)
    if path.is_dir() and not (path / MODEL_CONFIG_FILE).is_file() and run.best_model.is_file():
        if _fresh(run.model, run.best_model):
            return Segmenter.from_pretrained(run.model, device=device, text_cache_dir=cache)
        return Segmenter.from_checkpoint(run.best_model, device=device, text_cache_dir=cache)
    return Segmenter.from_pretrained(str(source), device=device, text_cache_dir=cache)


def cmd_export(args) -> None:
    export_model(args.checkpoint, args.out, license=args.license, push=args.push,
                 private=args.private, text_model=args.text_model)


def add_export_parser(sub) -> None:
    """The `export` command of `python -m helpers`."""
    p = sub.add_parser("export", help="a checkpoint as a model folder (config, safetensors, model "
                       "card), optionally pushed to the model hub")
    p.add_argument("--checkpoint", required=True, help="best_model.pth (its evaluation.json beside it "
                   "gives the card's figures: run `evaluate` first)")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--push", default=None, metavar="OWNER/NAME", help="upload the folder to the model "
                   "hub as this repository (token: the HF_TOKEN environment variable or Colab secret)")
    p.add_argument("--private", action=argparse.BooleanOptionalAction, default=None,
                   help="with --push: create the repository private (default: the hub's default)")
    p.add_argument("--license", default=None, help="the model's licence, a hub licence id (default: "
                   "the terms of the IU data it learned from, cc-by-nc-nd-4.0)")
    p.add_argument("--text-model", default=None, help="the text encoder to name instead of the recorded "
                   "one: a hub name, or a local folder (copied into the export)")
    p.set_defaults(func=cmd_export)
