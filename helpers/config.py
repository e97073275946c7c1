"""Settings: run mode (real / demo / smoke), per-phase dataclasses and their presets, device choice.

Every setting a user may change lives in one of the dataclasses below; notebooks and the CLI build
them from a preset and override single fields.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch

SMOKE_ENV = "CXR_SMOKE"
DEFAULT_TEXT_MODEL = "openai/clip-vit-base-patch32"
TINY_TEXT_MODEL = "tiny-clip"  # sentinel: build the tiny offline CLIP text model (tests, offline demo)
MODES = ("real", "demo", "smoke")


def smoke_mode() -> bool:
    """True when the environment asks for the seconds-long smoke run (`CXR_SMOKE=1`)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes"}


def resolve_mode(mode: str | None = None, data_source: str = "demo") -> str:
    """`mode` if given; else smoke under `CXR_SMOKE=1`, then `CXR_MODE`, then demo for the demo
    data and real for any other source."""
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return mode
    if smoke_mode():
        return "smoke"
    if os.environ.get("CXR_MODE") in MODES:  # set by `python -m helpers notebooks`
        return os.environ["CXR_MODE"]
    return "demo" if str(data_source) == "demo" else "real"


def pick_device(preference: str = "auto") -> torch.device:
    """`auto` takes CUDA when present, then Apple MPS, else the CPU."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_num_workers(device: torch.device | str | None = None) -> int:
    """DataLoader workers: none on the CPU (the cache makes loading cheap and workers would steal
    cores from compute), up to 4 beside an accelerator."""
    dev = torch.device(device) if device is not None else pick_device()
    if dev.type == "cpu":
        return 0
    return max(0, min(4, (os.cpu_count() or 2) - 1))


@dataclass
class DemoDataConfig:
    """Size of the generated demo dataset (see `helpers.synthetic.make_demo_dataset`)."""

    n_reports: int = 300
    n_masks: int = 200
    image_size: tuple[int, int] = (224, 288)  # min and max side of the generated images
    seed: int = 0


@dataclass
class SplitConfig:
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42


@dataclass
class PretrainConfig:
    """Phase 1: self-supervised U-Net autoencoder."""

    image_size: int = 256
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    objective: str = "masked"  # "reconstruct" (plain MSE) or "masked" (hidden patches, see losses)
    encoder: str = "resnet34"
    frontal_only: bool = False
    max_images: int | None = None
    val_fraction: float = 0.05
    mask_ratio: float = 0.5
    patch_size: int = 16  # at 256 px; scaled with the image size
    hidden_weight: float = 4.0
    augment: bool = True
    num_workers: int | None = None  # None: default_num_workers(device)
    device: str = "auto"
    seed: int = 42
    encoder_weights: str | None = None  # None: random start; "imagenet" or a weights file (smp)


@dataclass
class FinetuneConfig:
    """Phase 2: multimodal U-Net fine-tuning."""

    image_size: int = 256
    epochs: int = 40
    batch_size: int = 16
    lr: float = 3e-4
    encoder_lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    encoder: str = "resnet34"
    text_model: str = DEFAULT_TEXT_MODEL
    text_fallback: bool = False  # demo: use the tiny offline CLIP when the model hub is unreachable
    # The defaults read the text best in the README's ablation (3 seeds, realistic demo reports):
    # cross-attention to the text's tokens, given only the sentences that describe something
    # present. The specified design is one flag away: fusion="concat", text_mode="raw".
    fusion: str = "cross_attn"  # "concat" | "film" | "film_multi" | "cross_attn" | "none"
    text_mode: str = "positive"  # "raw": the findings as written; "positive": only sentences that
    #                              describe something present (normal and negated ones dropped)
    negative_rate: float = 0.0  # share of training items given another case's text whose lesion
    #                             lies elsewhere, with an empty target: teaches the model to check
    upsampling: str = "interp"  # "interp" (smp) | "transpose"
    pretrained_encoder: str | None = None  # my_pretrained_encoder.pth; "imagenet" (or an ImageNet
    #                                        weights file): ImageNet, no Phase 1; None: from scratch
    freeze_encoder_epochs: int = 0
    patience: int = 10  # early stopping on validation Dice
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    concordant_flip: float = 0.0  # probability of flipping image+mask AND swapping left/right in text
    augment: bool = True
    shuffle_text: bool = False  # ablation: train with texts shuffled across cases
    num_workers: int | None = None
    device: str = "auto"
    seed: int = 42
    allow_seen_patients: bool = False  # use a Phase-1 encoder that saw val/test patients on purpose


@dataclass
class AblationConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    fusions: tuple[str, ...] = ("concat", "film", "film_multi", "cross_attn")
    text_modes: tuple[str, ...] = ()  # also train each fusion with these text modes
    negative_rates: tuple[float, ...] = ()  # also train the base with mismatched-text negatives
    with_upsampling: bool = True  # also train upsampling="transpose" once
    with_init: bool = True  # Phase-1 init vs none, reconstruct vs masked
    bootstrap: int = 1000


@dataclass
class Preset:
    mode: str
    demo: DemoDataConfig = field(default_factory=DemoDataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)


def preset(mode: str | None = None, data_source: str = "demo") -> Preset:
    """The settings of one way to run: `real` (GPU, full sizes), `demo` (CPU, minutes), `smoke`
    (tests, seconds)."""
    mode = resolve_mode(mode, data_source)
    p = Preset(mode=mode)
    if mode == "real":
        # The light set by default (the full one, `ablation_set(p, "full")`: ~21 trainings): one
        # seed, the controls, the specified design, and the Phase-1 init rows (the open question).
        p.ablation = dataclasses.replace(p.ablation, seeds=(0,), fusions=("concat",),
                                         text_modes=("raw",), with_upsampling=False, with_init=True)
    if mode == "demo":
        # Sized for about 12 minutes of `make demo` on 2 CPU cores: one seed, and only the
        # controls and the specified design beside the default (the 3-seed study: `make ablate`).
        p.pretrain = dataclasses.replace(p.pretrain, image_size=96, epochs=4, batch_size=16, lr=2e-3,
                                         warmup_epochs=0.5, patch_size=16)
        p.finetune = dataclasses.replace(p.finetune, image_size=96, epochs=24, batch_size=8, lr=1e-3,
                                         encoder_lr=5e-4, patience=10, warmup_epochs=0.5,
                                         text_fallback=True)
        p.ablation = dataclasses.replace(p.ablation, seeds=(0,), fusions=("concat",),
                                         text_modes=("raw",), with_upsampling=False, with_init=False)
    elif mode == "smoke":
        p.demo = DemoDataConfig(n_reports=20, n_masks=16, image_size=(96, 128), seed=0)
        p.pretrain = dataclasses.replace(p.pretrain, image_size=64, epochs=1, batch_size=8,
                                         warmup_epochs=0.2, patch_size=8, max_images=24)
        p.finetune = dataclasses.replace(p.finetune, image_size=64, epochs=1, batch_size=4,
                                         text_model=TINY_TEXT_MODEL, patience=1)
        p.ablation = AblationConfig(seeds=(0,), fusions=("concat",), with_upsampling=False,
                                    with_init=False, bootstrap=100)
    return p


ABLATION_SETS = ("light", "full")


def ablation_set(p: Preset, which: str | None) -> AblationConfig | None:
    """The ablations to run: "light" (the preset's), "full" (3 seeds, four fusions, both text
    modes, upsampling and Phase-1 init: ~21 Phase-2 trainings), None / "none" (skip)."""
    if which in (None, "none", False):
        return None
    if which == "light":
        return p.ablation
    if which == "full":
        return dataclasses.replace(AblationConfig(), text_modes=("raw",),
                                   bootstrap=p.ablation.bootstrap)
    raise ValueError(f"ablations must be one of {ABLATION_SETS} or None, got {which!r}")


def override(cfg, **changes):
    """A copy of the settings dataclass `cfg` with the fields whose new value is not None replaced
    (notebook parameters left at None keep the preset's value)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
