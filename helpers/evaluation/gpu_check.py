"""`python -m helpers gpu-check` (`make gpu-check`): what the real preset does on a GPU, a few
steps of each, in under 5 minutes on one GPU without internet, and a JSON of what it measured.

On the demo data at 256 px with the real preset's other settings (batch sizes, the masked
objective, `cross_attn` with the place prior and the place training) and the tiny offline CLIP
(the text model's weights are the one thing the real preset downloads): Phase 1 and Phase 2 for a
few steps of the real loop (autocast in the dtype the GPU gets, channels_last, loader workers),
the resume (interrupted after epoch 1, resumed, compared with an uninterrupted run), the data
loader alone and the model alone (the bench's rows), `predict` and `ground_report` of the trained
Phase-2 model. The JSON holds images per second, the peak GPU memory, the dtype, and pass/fail with
the error for each step. Without a GPU it says so and does nothing (exit 0); `--device cpu` runs
the same steps on the CPU at smoke sizes under `CXR_SMOKE=1` (the tests).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..core.checkpoint import load_checkpoint
from ..core.settings import TINY_TEXT_MODEL, default_num_workers, pick_device, preset, smoke_mode
from ..data.catalog import load_catalog
from ..data.demo.generate import make_demo_dataset
from ..data.split import split_cases
from ..inference.segmenter import Segmenter
from ..model.unet import MultimodalUnet
from ..text.encoders import load_text_encoder
from ..training.finetune import finetune
from ..training.loop import amp_dtype, describe_precision
from ..training.pretrain import pretrain
from .bench import GROUNDING_REPORT, _epoch, _rate, _real_loop_rate, method_loader, model_alone_rate

NO_GPU = ("No GPU on this machine (torch.cuda.is_available() is False): the GPU check has nothing "
          "to run. On Colab: Runtime > Change runtime type > GPU. `--device cpu` runs the same "
          "steps on the CPU (with CXR_SMOKE=1 at test sizes).")


def plan(dev: torch.device, smoke: bool = False) -> dict:
    """What the check runs with on `dev`: the real preset's settings at 256 px (smoke: 64 px, a
    few tiny batches), the autocast dtype and the loader workers the training would pick."""
    p = preset("smoke" if smoke else "real", "demo")
    size = 64 if smoke else 256
    dtype = amp_dtype(dev)
    return {"device": str(dev), "image_size": size, "steps": 1 if smoke else 20,
            "pretrain_batch": p.pretrain.batch_size, "finetune_batch": p.finetune.batch_size,
            "demo_reports": 8 if smoke else 96, "workers": default_num_workers(dev),
            "encoder": "resnet18" if smoke else p.pretrain.encoder,
            "dtype": str(dtype).removeprefix("torch.") if dtype else "float32",
            "grad_scaler": dtype == torch.float16, "channels_last": dev.type == "cuda",
            "precision": describe_precision(dev)}


def run_gpu_check(out: str | Path = "runs/gpu-check.json", device: str = "auto",
                  workdir: str | Path | None = None) -> dict:
    """Run the check and write its JSON to `out`; returns it. RuntimeError naming the steps that
    failed, after the JSON is written. Without CUDA (and `device` left to "auto") it prints that
    there is no GPU and returns {"gpu": None} (no file)."""
    dev = pick_device(device)
    if dev.type != "cuda" and device == "auto":
        print(NO_GPU)
        return {"gpu": None}
    smoke = smoke_mode()
    cfg = plan(dev, smoke)
    report = {"gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
              "torch": torch.__version__, "python": platform.python_version(), "plan": cfg,
              "steps": {}, "images_per_s": {}}
    print(f"GPU check on {report['gpu'] or dev}: {cfg['precision']}, {cfg['image_size']} px, "
          f"{cfg['workers']} loader workers")
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    work = Path(workdir or tmp.name)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    state: dict = {}

    def step(name: str, run: Callable[[], object]) -> None:
        start = time.perf_counter()
        try:
            detail = run()
            report["steps"][name] = {"pass": True, "seconds": round(time.perf_counter() - start, 1),
                                     **(detail if isinstance(detail, dict) else {})}
        except Exception as err:  # every step is tried; the JSON says which failed and why
            report["steps"][name] = {"pass": False, "seconds": round(time.perf_counter() - start, 1),
                                     "error": f"{type(err).__name__}: {err}",
                                     "where": traceback.format_exc(limit=-3)}
        print(f"{name:<14} {'pass' if report['steps'][name]['pass'] else 'FAIL'} "
              f"({report['steps'][name]['seconds']} s)" + (f": {report['steps'][name].get('error')}"
                                                           if not report["steps"][name]["pass"] else ""))

    real = preset("smoke" if smoke else "real", "demo")
    pre = dataclasses.replace(real.pretrain, image_size=cfg["image_size"], epochs=2, device=str(dev),
                              warmup_epochs=0.5, max_images=cfg["pretrain_batch"] * (2 if smoke else 4),
                              encoder=cfg["encoder"])
    fine = dataclasses.replace(real.finetune, image_size=cfg["image_size"], epochs=2, device=str(dev),
                               text_model=TINY_TEXT_MODEL, warmup_epochs=0.5, encoder=cfg["encoder"])
    rates = report["images_per_s"]

    def data() -> dict:
        size = cfg["image_size"]
        root = make_demo_dataset(work / "data", n_reports=cfg["demo_reports"],
                                 n_masks=cfg["demo_reports"] * 3 // 4, image_size=(size, size + size // 8),
                                 make_zip=False, quirks=False)
        state["catalog"] = catalog = load_catalog(root)
        state["cases"] = split_cases(catalog.cases, val_fraction=0.15, test_fraction=0.15)
        return {"images": len(catalog.images), "cases": len(state["cases"])}

    def phase1() -> dict:
        paths = state["catalog"].image_paths()
        rates["phase1"] = _real_loop_rate(lambda n: pretrain(
            dataclasses.replace(pre, max_images=None if not smoke else pre.max_images), paths, work / "phase1", cache_dir=work / "cache",
            progress=False, max_steps=n), cfg["steps"])
        state["encoder"] = work / "phase1" / "my_pretrained_encoder.pth"
        return {"images_per_s": rates["phase1"]}

    def resume() -> dict:
        """Phase 1 interrupted after epoch 1 and resumed, against an uninterrupted run."""
        paths = state["catalog"].image_paths()

        def stop(row: dict) -> None:
            if row["epoch"] == 1:
                raise KeyboardInterrupt

        os.environ["CXR_LAST_SAVE_S"], saved = "0", os.environ.get("CXR_LAST_SAVE_S")
        try:
            straight = pretrain(pre, paths, work / "straight", cache_dir=work / "cache", progress=False)
            try:
                pretrain(pre, paths, work / "resumed", cache_dir=work / "cache", progress=False,
                         on_epoch_end=stop)
            except KeyboardInterrupt:
                pass
            resumed = pretrain(pre, paths, work / "resumed", cache_dir=work / "cache", resume=True,
                               progress=False)
        finally:
            if saved is None:
                del os.environ["CXR_LAST_SAVE_S"]
            else:
                os.environ["CXR_LAST_SAVE_S"] = saved
        a, b = (load_checkpoint(r.last_path)["model"] for r in (straight, resumed))
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        return {"identical": diff == 0.0, "max_abs_difference": diff,
                "note": "GPU kernels (cuDNN) may differ in the last bits between two runs"}

    def phase2() -> dict:
        cases = state["cases"]
        cfg2 = dataclasses.replace(fine, pretrained_encoder=str(state["encoder"]),
                                   allow_seen_patients=True)
        rates["phase2"] = _real_loop_rate(lambda n: finetune(
            cfg2, cases, work / "phase2", cache_dir=work / "cache", text_cache_dir=work / "text",
            progress=False, max_steps=n), cfg["steps"])
        state["model"] = work / "phase2" / "best_model.pth"
        return {"images_per_s": rates["phase2"]}

    def arrays():
        from ..training.datasets import labeled_arrays

        return labeled_arrays(state["cases"], cfg["image_size"], work / "cache")

    def loader() -> dict:
        a = arrays()
        batches = method_loader(list(a.cases["text"]), a.images, a.masks, fine, cfg["finetune_batch"], dev,
                                generator=torch.Generator().manual_seed(0))
        rates["loader"] = _rate(lambda: _epoch(batches), warmup=lambda: _epoch(batches, 1))
        return {"images_per_s": rates["loader"]}

    def model_alone() -> dict:
        a = arrays()
        images, masks = a.images, a.masks
        encoder = load_text_encoder(TINY_TEXT_MODEL, dev, cache_dir=work / "text")
        model = MultimodalUnet(cfg["encoder"], text_dim=encoder.dim).to(dev)
        batch = cfg["finetune_batch"]
        rates["model_alone"] = model_alone_rate(model, np.resize(images, (batch, *images.shape[1:])),
                                                np.resize(masks, (batch, *masks.shape[1:])),
                                                encoder.dim, dev, cfg["steps"])
        return {"images_per_s": rates["model_alone"]}

    def inference() -> dict:
        seg = Segmenter.from_checkpoint(state["model"], device=dev, text_cache_dir=work / "text")
        image = state["catalog"].image_paths()[0]
        prob = seg.predict(image, "Patchy opacity at the left lung base.")
        grounding = seg.ground_report(image, GROUNDING_REPORT)
        if prob.ndim != 2 or not np.isfinite(prob).all():
            raise ValueError(f"predict gave {prob.shape} with non-finite values")
        return {"predict_shape": list(prob.shape), "sentences": len(grounding.sentences)}

    for name, run in (("data", data), ("phase1", phase1), ("resume", resume), ("phase2", phase2),
                      ("loader", loader), ("model_alone", model_alone), ("inference", inference)):
        step(name, run)
    if dev.type == "cuda":
        report["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(dev) / 1e9, 2)
    report["pass"] = all(s["pass"] for s in report["steps"].values())
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"written: {out}")
    if tmp is not None:
        tmp.cleanup()
    failed = [name for name, s in report["steps"].items() if not s["pass"]]
    if failed:
        raise RuntimeError(f"GPU check: {', '.join(failed)} failed (details in {out})")
    return report
