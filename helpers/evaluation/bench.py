"""`python -m helpers bench`: throughput, in images per second, measured in one run on the same
data and model: the straightforward notebook pipeline against ours.

Straightforward: every item opens and resizes its PNG (and mask) with PIL on every epoch, and the
text encoder runs on every batch, in float32, in a plain loop. Ours: the real training code, a few
steps of `finetune` / `pretrain` (the preprocessing cache, each unique text encoded once, the
DataLoader settings of `loop.make_loader`, channels_last + autocast on CUDA, the scheduler), so the
figure is the speed of what users run. The model-alone row (forward + backward on a batch already
in memory) is the compute limit that a perfect input pipeline would reach.

Reading a whole report sentence by sentence (`Segmenter.ground_report`: one image encoding, one
decoding per positive sentence) is timed against one `predict` of the same report, end to end from
the PNG file (texts encoded anew each time, as for a new report), at `GROUNDING_SIZE` px with the
default fusion (`cross_attn`), and for the model alone: with a decoder per text and with the shared
decoder (`shared_decoder`: the decoder runs once per image, each text only a light head).
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..data.cache import build_image_cache
from ..data.catalog import load_catalog
from ..core.settings import TINY_TEXT_MODEL, FinetuneConfig, PretrainConfig, pick_device, smoke_mode
from ..data.io import normalize
from ..training.datasets import LabeledCases, train_augmentation
from ..inference.segmenter import Segmenter
from ..data.io import load_gray, load_mask
from ..model.losses import DiceBCELoss
from ..model.unet import MultimodalUnet
from ..data.split import split_cases
from ..data.demo.generate import make_demo_dataset
from ..text.encoders import EmbeddingCache, TextEncoder, load_text_encoder
from ..text.tiny_clip import make_tiny_clip
from ..training.loop import amp_dtype, describe_precision, make_loader
from ..training.finetune import finetune
from ..training.pretrain import pretrain
from ..training.methods import METHODS, MethodContext, active_methods, method_texts, method_uses
from ..text.reader import ReportReader


GROUNDING_SIZE = 256
GROUNDING_REPORT = ("Mild cardiomegaly. Patchy opacity at the left lung base. Small right pleural "
                    "effusion. A 1.2 cm nodule in the right upper lobe. Streaky atelectasis in the "
                    "left mid lung. No pneumothorax. The trachea is midline.")  # 5 positive sentences


class StraightforwardCases(Dataset):
    """The usual first version: decode, resize and augment from the PNG files on every access."""

    def __init__(self, cases: pd.DataFrame, size: int):
        self.cases, self.size = cases.reset_index(drop=True), size
        self.transform = train_augmentation()

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int):
        row = self.cases.iloc[i]
        image = torch.tensor(load_gray(row["image_path"], self.size))[None]
        mask = torch.tensor(load_mask(row["mask_path"], self.size))[None]
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return normalize(image.as_subclass(torch.Tensor)), mask.as_subclass(torch.Tensor).float(), row["text"]


def _rate(run: Callable[[], int], warmup: Callable[[], int] | None = None) -> float:
    """Images per second of `run()` (which returns how many images it processed)."""
    if warmup is not None:
        warmup()
    start = time.perf_counter()
    n = run()
    return n / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _epoch(loader: Iterable, limit: int | None = None) -> int:
    n = 0
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        n += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
    return n


def benchmark_text_model(workdir: Path, name: str | None, device: torch.device) -> tuple[TextEncoder, str]:
    """The text encoder for the text-cost rows and its honest description."""
    if name:
        return load_text_encoder(name, device, cache_dir=workdir / "tiny-clip"), name
    if smoke_mode():
        return load_text_encoder(TINY_TEXT_MODEL, device, cache_dir=workdir / "tiny-clip"), "tiny CLIP (smoke)"
    # ViT-B/32's text tower: 12 layers, width 512, 8 heads, 512-d projection; random weights cost
    # the same as the real ones, so the bench needs no download.
    path = make_tiny_clip(workdir / "clip-b32-size", hidden_size=512, num_layers=12, num_heads=8,
                          projection_dim=512)
    return TextEncoder(path, device), "CLIP text model of ViT-B/32 size with random weights (real weights not available offline)"


def _real_loop_rate(train: Callable[[int], object], steps: int) -> float:
    """Images per second of the real training loop's steps (loading, augmentation, forward,
    backward, optimizer and scheduler; validation and checkpoints excluded, as in the other rows),
    over `steps` steps after a one-step run (the first step pays for allocation and kernels)."""
    train(1)
    return float(train(steps).history["images_per_s"].iloc[-1])


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # the first call pays for allocation and kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def model_alone_rate(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray, text_dim: int,
                     dev: torch.device, steps: int) -> float:
    """Images per second of `model` (a `MultimodalUnet`) training on one batch already in memory
    (uint8 images and masks [B, S, S], random text embeddings): forward + backward + AdamW step
    under the loop's autocast, channels_last on CUDA. The compute limit of a perfect loader."""
    dtype = amp_dtype(dev)
    x0 = normalize(torch.from_numpy(np.asarray(images))[:, None]).to(dev)
    y0 = torch.from_numpy(np.asarray(masks))[:, None].float().to(dev)
    e0 = torch.randn(len(x0), text_dim, device=dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
        x0 = x0.to(memory_format=torch.channels_last)
    criterion, optimizer = DiceBCELoss(10.0), torch.optim.AdamW(model.parameters(), 1e-4)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)

    def alone(n_steps: int) -> int:
        for _ in range(n_steps):
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = criterion(model(x0, e0), y0)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        _sync(dev)
        return n_steps * len(x0)

    return _rate(lambda: alone(steps), warmup=lambda: alone(1))


def method_loader(texts: list[str], images: np.ndarray, masks: np.ndarray, cfg: FinetuneConfig,
                  batch: int, dev: torch.device, generator: torch.Generator | None = None) -> Iterable:
    """The training loader with the text methods of `cfg` (`training.methods`: copies pasted,
    texts swapped, ...) on cached uint8 images and masks [N, S, S] of the reports `texts`; every
    text asks with row 0 (the rows only index a text table)."""
    methods = active_methods(cfg)
    reader = ReportReader(cfg.text_mode)
    context = MethodContext(list(texts), [reader.model_text(t) for t in texts], masks, reader)
    text_rows = {kind: [0] * len(images) for kind in ("report", *method_texts(methods, context))}
    dataset = LabeledCases(images, masks, [0] * len(images), method_uses(methods, context, text_rows),
                           augment=True, undescribed=cfg.undescribed_weight)
    return make_loader(dataset, batch, shuffle=True, device=dev, generator=generator)


def grounding_cost(encoder: TextEncoder, image_path: str, dev: torch.device, size: int,
                   repeats: int, shared_decoder: bool = False) -> dict[str, float]:
    """Seconds (medians over `repeats`) of `predict` and `ground_report` for `GROUNDING_REPORT` on
    one image file, with a fresh `cross_attn` ResNet34 U-Net with the place prior at `size` px
    (random weights cost the same as trained ones), and of the model alone: one forward, and one
    encoding + a decoding per sentence."""
    model = MultimodalUnet("resnet34", text_dim=encoder.dim, fusion="cross_attn",
                           token_dim=encoder.token_dim, place_prior=True,
                           shared_decoder=shared_decoder).to(dev)
    seg = Segmenter(model, encoder, size, 0.5, dev)
    n = len(seg.ground_report(image_path, GROUNDING_REPORT).sentences)

    def fresh(run: Callable[[], object]) -> Callable[[], object]:
        def call() -> None:  # a new report's texts are encoded anew
            seg.embeddings = EmbeddingCache(encoder, with_tokens=True, places=True)
            run()
            _sync(dev)
        return call

    x = normalize(torch.from_numpy(np.zeros((1, 1, size, size), np.uint8))).to(dev)
    emb, tokens = torch.randn(n, model.input_dim, device=dev), torch.randn(n, 8, encoder.token_dim, device=dev)
    mask = torch.ones(n, 8, dtype=torch.bool, device=dev)
    with torch.no_grad():
        forward = _median_seconds(fresh(lambda: model(x, emb[:1], tokens[:1], mask[:1])), repeats)
        split = _median_seconds(fresh(lambda: model.decode(model.encode_image(x), emb, tokens, mask)), repeats)
    return {"sentences": n, "predict": _median_seconds(fresh(lambda: seg.predict(image_path, GROUNDING_REPORT)), repeats),
            "ground_report": _median_seconds(fresh(lambda: seg.ground_report(image_path, GROUNDING_REPORT)), repeats),
            "forward": forward, "encode_and_decodes": split}


BENCH_PARTS = ("loading", "phase2", "phase1", "grounding")  # what `run_bench` can measure


def run_bench(image_size: int | None = None, batch_size: int | None = None, device: str = "auto",
              text_model: str | None = None, n_images: int | None = None, steps: int | None = None,
              source_size: int | None = None, workdir: str | Path | None = None,
              parts: Sequence[str] | None = None) -> pd.DataFrame:
    """Measure and print the table; returns it (columns measurement, value, unit, note). `parts`
    (default all of `BENCH_PARTS`): data loading, the Phase-2 steps (and the model alone), the
    Phase-1 step, a report read sentence by sentence; a ratio is given when both its rows are."""
    parts = list(BENCH_PARTS if parts is None else parts)
    if set(parts) - set(BENCH_PARTS):
        raise ValueError(f"unknown bench part(s) {sorted(set(parts) - set(BENCH_PARTS))}; the parts: "
                         f"{', '.join(BENCH_PARTS)}")
    dev = pick_device(device)
    smoke = smoke_mode()
    size = image_size or (64 if smoke else 256 if dev.type == "cuda" else 128)
    batch = batch_size or (4 if smoke else 32 if dev.type == "cuda" else 8)
    n_images = n_images or (12 if smoke else 256 if dev.type == "cuda" else 64)
    steps = steps or (2 if smoke else 20 if dev.type == "cuda" else 4)
    # The real collection's PNGs are large; decoding them is what the cache saves.
    source_size = source_size or (128 if smoke else 1024)
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    work = Path(workdir or tmp.name)
    rows: list[dict] = []
    got: dict[str, float] = {}

    def row(name: str, value: float, unit: str = "images/s", note: str = "", key: str = "") -> None:
        rows.append({"measurement": name, "value": value, "unit": unit, "note": note})
        got[key or name] = value
        print(f"{name:<62} {value:10.1f}  {note}", flush=True)

    print(f"device {dev}, image size {size}, batch {batch}, {n_images} images of ~{source_size} px, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"precision: {describe_precision(dev)}")
    root = make_demo_dataset(work / "data", n_reports=n_images, n_masks=n_images,
                             image_size=(source_size, source_size + source_size // 8),
                             make_zip=False, quirks=False)
    cases = split_cases(load_catalog(root).cases, val_fraction=0.1, test_fraction=0.1)
    if {"phase2", "grounding"} & set(parts):
        encoder, text_note = benchmark_text_model(work, text_model, dev)
        print(f"text encoder: {text_note}")

    start = time.perf_counter()
    cache = build_image_cache(sorted(cases["image_path"]), size, work / "cache", progress=False)
    print(f"cache build: {len(cache.paths)} images in {time.perf_counter() - start:.2f} s "
          f"({cache.array.nbytes / 2**20:.1f} MiB)")
    index = cache.index_of()
    images = np.stack([cache.array[index[p]] for p in cases["image_path"]])
    masks = np.stack([load_mask(p, size) for p in cases["mask_path"]])
    naive_loader = torch.utils.data.DataLoader(StraightforwardCases(cases, size), batch_size=batch,
                                               shuffle=True)
    if "loading" in parts:
        ours_loader = make_loader(LabeledCases(images, masks, list(range(len(images))), augment=True),
                                  batch, shuffle=True, device=dev)
        place_loader = method_loader(list(cases["text"]), images, masks, FinetuneConfig(), batch, dev)
        row("data loading + augmentation, straightforward (PIL/item)", _rate(lambda: _epoch(naive_loader)),
            key="naive_load")
        row("data loading + augmentation, ours (cache)",
            _rate(lambda: _epoch(ours_loader), warmup=lambda: _epoch(ours_loader, 1)), key="ours_load")
        row("data loading + augmentation + place training, ours",
            _rate(lambda: _epoch(place_loader), warmup=lambda: _epoch(place_loader, 1)),
            note=", ".join(f"{method.name} {share:g}" for method, share in active_methods(FinetuneConfig())))
    if "phase2" in parts:
        _phase2_rows(row, encoder, cases, images, masks, naive_loader, dev, size, batch, steps, work)
    if "phase1" in parts:
        pre_cfg = dataclasses.replace(PretrainConfig(), image_size=size, batch_size=batch, epochs=1,
                                      warmup_epochs=0.0, device=str(dev), val_fraction=0.1)
        phase1 = _real_loop_rate(
            lambda n: pretrain(pre_cfg, cache.paths, work / "pretrain", cache_dir=work / "cache",
                               progress=False, max_steps=n), steps)
        row("Phase-1 training step, ours (end to end)", phase1, note="a few steps of pretrain(), masked")

    ratios = {name: got[a] / got[b] for name, a, b in (
        ("Phase-2 training, ours / straightforward", "ours_step", "naive_step"),
        ("Phase-2 training, ours / model-alone limit", "ours_step", "limit"),
        ("data loading, ours / straightforward", "ours_load", "naive_load"),
        ("Phase-2 training, with place training / without", "ours_step", "plain_step")) if a in got and b in got}
    gsize = 64 if smoke else GROUNDING_SIZE
    for shared in (False, True) if "grounding" in parts else ():
        cost = grounding_cost(encoder, cases["image_path"].iloc[0], dev, gsize, 1 if smoke else 5,
                              shared_decoder=shared)
        n, decoder = cost["sentences"], "shared decoder" if shared else "decoder per text"
        print(f"a report with {n} positive sentences, {gsize} px, cross_attn, {decoder}, one image "
              f"of ~{source_size} px:")
        row(f"predict, one mask for the report, {decoder} (ms)", 1000 * cost["predict"], "ms",
            "end to end")
        row(f"ground_report, a mask per sentence, {decoder} (ms)", 1000 * cost["ground_report"],
            "ms", f"1 encoding + {n} decodings")
        ratios[f"ground_report ({n} sentences) / predict, {decoder}"] = cost["ground_report"] / cost["predict"]
        ratios[f"model: 1 encoding + {n} decodings / 1 forward, {decoder}"] = (
            cost["encode_and_decodes"] / cost["forward"])
    for name, value in ratios.items():
        print(f"{name + ':':<66} {value:6.2f}x")
        rows.append({"measurement": name, "value": value, "unit": "ratio", "note": ""})
    if tmp is not None:
        tmp.cleanup()
    return pd.DataFrame(rows)


def _phase2_rows(row: Callable, encoder: TextEncoder, cases: pd.DataFrame, images: np.ndarray,
                 masks: np.ndarray, naive_loader: Iterable, dev: torch.device, size: int, batch: int,
                 steps: int, work: Path) -> None:
    """The Phase-2 rows: a straightforward training step, ours with and without the text
    methods (the real loop), and the model alone on a batch in memory."""
    model = MultimodalUnet("resnet34", text_dim=encoder.dim).to(dev)
    criterion = DiceBCELoss(10.0)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)

    def naive_steps(n_steps: int) -> int:
        n = 0
        while n < n_steps * batch:
            for x, y, text in naive_loader:
                loss = criterion(model(x.to(dev), encoder.encode(list(text)).to(dev)), y.to(dev))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n += len(x)
                if n >= n_steps * batch:
                    break
        _sync(dev)
        return n

    row("Phase-2 training step, straightforward (end to end)",
        _rate(lambda: naive_steps(steps), warmup=lambda: naive_steps(1)),
        note="PIL, text encoder per batch, fp32", key="naive_step")
    # Ours: the real loop. The text encoder is a local folder, loaded as finetune always does.
    fine_cfg = dataclasses.replace(FinetuneConfig(), image_size=size, batch_size=batch,
                                   text_model=encoder.name, fusion="concat", device=str(dev),
                                   epochs=1, warmup_epochs=0.0)
    row("Phase-2 training step, ours (end to end)", _real_loop_rate(
        lambda n: finetune(fine_cfg, cases, work / "finetune", cache_dir=work / "cache",
                           progress=False, max_steps=n), steps),
        note="a few steps of finetune()" + (", channels_last + autocast" if dev.type == "cuda" else ""),
        key="ours_step")
    plain_cfg = dataclasses.replace(fine_cfg, **{m.setting: 0.0 for m in METHODS.values()})
    row("Phase-2 training step, ours without place training", _real_loop_rate(
        lambda n: finetune(plain_cfg, cases, work / "finetune-plain", cache_dir=work / "cache",
                           progress=False, max_steps=n), steps),
        note="the same loop, no copies pasted, no texts swapped", key="plain_step")

    row("Phase-2 model alone (forward + backward, batch in memory)",
        model_alone_rate(model, images[:batch], masks[:batch], encoder.dim, dev, steps),
        note="compute limit", key="limit")
