"""Settings: run mode (real / demo / smoke), per-phase dataclasses and their presets, device choice.

Every setting a user may change lives in one of the dataclasses below; notebooks and the CLI build
them from a preset and override single fields.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
import os
from dataclasses import dataclass, field

import torch

SMOKE_ENV = "CXR_SMOKE"
MODE_ENV = "CXR_MODE"  # set by `python -m helpers notebooks` for the notebooks it runs
DEFAULT_TEXT_MODEL = "openai/clip-vit-base-patch32"
TINY_TEXT_MODEL = "tiny-clip"  # sentinel: build the tiny offline CLIP text model (tests, offline demo)
MODES = ("real", "demo", "smoke")


def smoke_mode() -> bool:
    """True when the environment asks for the seconds-long smoke run (`CXR_SMOKE=1`)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes"}


def demo_variant(data_source: object) -> str | None:
    """For a demo source, the settings it names: "" for "demo" (the preset's), "forced" for
    "demo:forced", "forced,union" for "demo:forced,union" (`sources.demo_options` reads them); None
    for any other source."""
    name = str(data_source)
    if name == "demo" or name.startswith("demo:"):
        return name[len("demo:"):]
    return None


def mode_from_env() -> str | None:
    """The run mode the environment asks for: "smoke" under `CXR_SMOKE=1`, else `CXR_MODE` when it
    names a mode, else None. The one place that reads the mode from the environment."""
    if smoke_mode():
        return "smoke"
    return os.environ[MODE_ENV] if os.environ.get(MODE_ENV) in MODES else None


def resolve_mode(mode: str | None = None, data_source: str = "demo") -> str:
    """`mode` if given; else the environment's (`mode_from_env`), then demo for the demo data and
    real for any other source."""
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return mode
    return mode_from_env() or ("demo" if demo_variant(data_source) is not None else "real")


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


def setting(default, help: str):
    """A settings field: its default and the help text that the command line (`--flag`), the
    notebooks' settings tables and the checks read. Every field of the dataclasses below is one."""
    return field(default=default, metadata={"help": help})


def setting_help(cls) -> dict[str, str]:
    """Field name -> help text of the settings dataclass `cls` (or of an instance)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def settings_text(cfg) -> str:
    """Every setting of the dataclass instance `cfg`, one a line: name, value, help (what a
    notebook's settings dict or the same-named `--flag` may change). Absolute paths are shown
    relative to the working folder, so the listing does not depend on where the project lies."""
    def shown(name: str) -> str:
        value = getattr(cfg, name)
        return repr(os.path.relpath(value) if isinstance(value, str) and os.path.isabs(value) else value)

    width = max(len(shown(name)) for name in setting_help(cfg))
    return "\n".join(f"{name:<22} {shown(name):<{min(width, 32)}}  {text}"
                     for name, text in setting_help(cfg).items())


@dataclass
class DemoDataConfig:
    """Size of the generated demo dataset (see `data.demo.generate.make_demo_dataset`)."""

    n_reports: int = setting(300, "reports (patients), each with a frontal and a lateral image")
    n_masks: int = setting(200, "hand-drawn-style masks, one per labeled frontal image")
    image_size: tuple[int, int] = setting((224, 288), "min and max side of the generated images, px")
    seed: int = setting(0, "seed of the generator")
    distractors: str = setting("realistic", '"realistic": most labeled images show only the described '
                                            'lesion, as in the real collection; "forced": two '
                                            "undescribed lesions on every labeled image")
    union: bool = setting(False, "masks as the real ones may be: the heart drawn for cardiomegaly, one "
                                 "mask holding every described finding, some reports of cardiomegaly "
                                 'alone ("demo:union")')


@dataclass
class SplitConfig:
    """The split of the labeled cases by patient (a dataset's patient_splits.csv wins)."""

    val_fraction: float = setting(0.15, "share of patients for validation")
    test_fraction: float = setting(0.15, "share of patients for the test")
    seed: int = setting(42, "seed of the split")


def redefault(cls, name: str, default):
    """The field `name` of the settings dataclass `cls` with another default, its help kept (a
    phase whose default differs from the shared one)."""
    return setting(default, setting_help(cls)[name])


@dataclass
class TrainingConfig:
    """The settings both phases share (the defaults are Phase 1's where the phases differ)."""

    image_size: int = setting(256, "side of the square training images, px (Phase 2: as in Phase 1)")
    epochs: int = setting(20, "training epochs (Phase 2: at most, see patience)")
    batch_size: int = setting(32, "images per batch (per GPU under torchrun)")
    lr: float = setting(1e-3, "peak learning rate (AdamW, warm-up then cosine); Phase 2: of the "
                              "decoder, fusion and head")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    warmup_epochs: float = setting(1.0, "epochs of linear learning-rate warm-up")
    encoder: str = setting("resnet34", "smp encoder name (Phase 2: as in Phase 1)")
    augment: bool = setting(True, "small random affine and brightness/contrast augmentation")
    num_workers: int | None = setting(None, "DataLoader workers; none: 0 on the CPU, up to 4 beside "
                                            "a GPU")
    device: str = setting("auto", '"auto" (CUDA, then MPS, else CPU), "cpu", "cuda", "cuda:1", ...')
    seed: int = setting(42, "seed of initialisation, shuffling and augmentation")


@dataclass
class PretrainConfig(TrainingConfig):
    """Phase 1: self-supervised U-Net autoencoder."""

    objective: str = setting("masked", '"reconstruct" (plain MSE) or "masked" (hidden patches, '
                                       "see helpers/model/losses.py)")
    frontal_only: bool = setting(False, "frontal images only (else frontal and lateral)")
    max_images: int | None = setting(None, "use at most this many images; none: all")
    val_fraction: float = setting(0.05, "share of the images held out for the validation loss")
    mask_ratio: float = setting(0.5, "masked objective: share of the patches hidden")
    patch_size: int = setting(16, "masked objective: patch side at 256 px, scaled with the image size")
    hidden_weight: float = setting(4.0, "masked objective: loss weight of the hidden patches")
    encoder_weights: str | None = setting(None, 'encoder start: none (random), "imagenet" '
                                                "(downloaded by smp) or a weights file")


@dataclass
class FinetuneConfig(TrainingConfig):
    """Phase 2: multimodal U-Net fine-tuning.

    The defaults of `fusion` and `text_mode` read the text best in the ablation of docs/studies/ (3 seeds,
    realistic demo reports): cross-attention to the text's tokens, given only the sentences that
    describe something present. The baseline design (sentence embedding concatenated at the
    bottleneck, docs/studies/fusion-and-text-modes.md) is one change away: fusion="concat", text_mode="raw".
    """

    # The rates and batch that converge on ~170 labeled cases (docs/README.md): 3e-4 / 1e-4 at
    # batch 16 stopped while validation Dice was still rising.
    epochs: int = redefault(TrainingConfig, "epochs", 60)
    batch_size: int = redefault(TrainingConfig, "batch_size", 8)
    encoder_lr: float = setting(5e-4, "peak learning rate of the image encoder")
    text_model: str = setting(DEFAULT_TEXT_MODEL, "text encoder: a Hugging Face name or a local "
                                                  f'save_pretrained folder; "{TINY_TEXT_MODEL}": the '
                                                  "tiny offline CLIP with random weights")
    text_fallback: bool = setting(False, "use the tiny offline CLIP when the model hub is "
                                         "unreachable (demo)")
    fusion: str = setting("cross_attn", 'how the text conditions the U-Net: "concat", "film", '
                                        '"film_multi", "cross_attn" or "none" (image only: no text '
                                        "is read, so no place prior and no text method either)")
    text_mode: str = setting("positive", '"raw": the findings as written; "positive": only the '
                                         "sentences that describe something present (normal and "
                                         "negated ones dropped)")
    negative_rate: float = setting(0.0, "share of training items given another case's text whose "
                                        "lesion lies elsewhere, with an empty target")
    upsampling: str = setting("interp", '"interp" (smp\'s interpolation) or "transpose" (transposed '
                                        "convolutions)")
    pretrained_encoder: str | None = setting(None, 'path to my_pretrained_encoder.pth; "imagenet" '
                                                   "or a weights file: ImageNet, no Phase 1; none: "
                                                   "from scratch")
    freeze_encoder_epochs: int = setting(0, "epochs with the image encoder frozen")
    patience: int = setting(15, "early stopping: epochs without a better validation score")
    select_on_probe: bool = setting(True, "the best epoch has the best mean of validation Dice and "
                                          "the validation place probe (val_follows), not Dice alone")
    dice_weight: float = setting(1.0, "weight of the Dice loss")
    bce_weight: float = setting(1.0, "weight of the class-weighted BCE loss")
    concordant_flip: float = setting(0.0, "probability of flipping image and mask AND swapping "
                                          "left/right in the text")
    # Training that makes the place in the text matter where one picture would do without it
    # (docs/studies/place-training.md; shares of the training items, one method per item: the text methods of
    # helpers/training/methods.py, where each field below is named):
    paste_prob: float = setting(0.5, "copy the lesion to its mirror place or the lung's other level; "
                                     "the text as written, or with the place swapped, says which "
                                     "copy is meant")
    swap_prob: float = setting(0.1, "sides swapped in the text, empty target (nothing lies there)")
    null_rate: float = setting(0.15, "the report's normal and negated sentences, empty target")
    sentence_prob: float = setting(0.15, "one sentence of the report alone, as a report is read "
                                         "sentence by sentence: the one that names the lesion "
                                         "with its mask, or the others with an empty target")
    undescribed_weight: bool = setting(True, "in those items, a lesion the text does not describe "
                                              "is a negative weighted like a positive pixel")
    place_prior: bool = setting(True, "the text's side and level words as coarse maps for the "
                                      "decoder (fusion.PlacePrior)")
    shared_decoder: bool = setting(False, "the decoder reads the image alone, once per image; the "
                                          "text picks from its features in a light head, so a "
                                          "report's sentences cost little more than one text")
    shuffle_text: bool = setting(False, "ablation: train with the texts shuffled across cases")
    allow_seen_patients: bool = setting(False, "use a Phase-1 encoder that saw validation/test "
                                               "patients on purpose (recorded)")


@dataclass
class AblationConfig:
    """What the ablation trains beside the main model (`evaluation.ablation`)."""

    seeds: tuple[int, ...] = setting((0, 1, 2), "train every variant with each seed")
    fusions: tuple[str, ...] = setting(("concat", "film", "film_multi", "cross_attn"),
                                       "the other fusions to train")
    text_modes: tuple[str, ...] = setting((), "also train each fusion with these text modes")
    negative_rates: tuple[float, ...] = setting((), "also train the main model with these shares of "
                                                    "mismatched-text negatives")
    with_upsampling: bool = setting(True, 'also train upsampling="transpose" once')
    with_init: bool = setting(True, "also compare Phase-1 initialisation with none, per objective")
    with_place: bool = setting(True, "also train the main model without the place training")
    place_each: bool = setting(False, "also train it without each place-training method in turn, and "
                                      "with the epoch chosen by validation Dice alone")
    bootstrap: int = setting(1000, "bootstrap resamples of the 95% intervals")


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
        # The light set by default (the full one, `studies.ablation_set(p, "full")`: ~21 trainings): one
        # seed, the controls, the baseline design, no place training, no place prior, and the
        # Phase-1 init rows.
        p.ablation = dataclasses.replace(p.ablation, seeds=(0,), fusions=("concat",),
                                         text_modes=("raw",), with_upsampling=False, with_init=True)
    if mode == "demo":
        # Sized for about 25 minutes of `make demo` on 2 CPU cores: one seed, and only the
        # controls and the baseline design beside the default (the 3-seed study: `make ablate`).
        p.pretrain = dataclasses.replace(p.pretrain, image_size=96, epochs=4, batch_size=16, lr=2e-3,
                                         warmup_epochs=0.5, patch_size=16)
        # 40 epochs: with the place training the level words are read only after ~30 (docs/studies/)
        p.finetune = dataclasses.replace(p.finetune, image_size=96, epochs=40, patience=15,
                                         warmup_epochs=0.5, text_fallback=True)
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


def override(cfg, changes: dict | None = None, **fields):
    """A copy of the settings dataclass `cfg` with `fields` whose value is not None replaced
    (notebook parameters left at None keep the preset's value), then `changes` (field name ->
    value, e.g. a notebook's `FINETUNE = {"fusion": "concat"}`; None is a value there). A name
    that is not a field is a ValueError that lists the fields."""
    merged = {k: v for k, v in fields.items() if v is not None} | dict(changes or {})
    unknown = sorted(set(merged) - set(setting_help(cfg)))
    if unknown:
        raise ValueError(f"{type(cfg).__name__} has no setting {', '.join(unknown)}; its settings: "
                         f"{', '.join(setting_help(cfg))}")
    return dataclasses.replace(cfg, **merged)


# --- Command-line flags from the settings (`python -m helpers ...`) ---------------------------

def _parse(kind):
    """argparse `type` for one value of a settings field annotated `kind`; `none` for Optional."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (types.UnionType, typing.Union):  # X | None
        inner = _parse(args[0])
        return lambda text: None if text.lower() == "none" else inner(text)
    return kind


def settings_flags(parser: argparse.ArgumentParser, cls, section: str) -> None:
    """One flag per field of the settings dataclass `cls`, its help and each preset's default: `--x/--no-x` for a bool, several values for a tuple, `none` for an Optional.
    A flag not given leaves the preset's value (the parsed namespace lacks it)."""
    hints = typing.get_type_hints(cls)
    presets = {mode: getattr(preset(mode), section) for mode in MODES}
    group = parser.add_argument_group(f"{section} settings ({cls.__name__}, helpers/core/settings.py)")
    for name, text in setting_help(cls).items():
        kind = hints[name]
        values = {mode: getattr(cfg, name) for mode, cfg in presets.items()}
        default = (f"default {values['real']}" if len(set(map(repr, values.values()))) == 1 else
                   "default " + ", ".join(f"{mode} {value}" for mode, value in values.items()))
        kw = dict(dest=f"{section}.{name}", default=argparse.SUPPRESS, metavar=name.upper(),
                  help=f"{text} ({default})".replace("%", "%%"))
        if kind is bool:
            kw.update(action=argparse.BooleanOptionalAction, metavar=None)
        elif typing.get_origin(kind) is tuple:
            kw.update(type=_parse(typing.get_args(kind)[0]), nargs="*")
        else:
            kw["type"] = _parse(kind)
        group.add_argument("--" + name.replace("_", "-"), **kw)


def apply_flags(cfg, args: argparse.Namespace, section: str):
    """`cfg` with the settings flags of `section` that were given."""
    changes = {dest.split(".", 1)[1]: tuple(v) if isinstance(v, list) else v
               for dest, v in vars(args).items() if dest.startswith(section + ".")}
    return override(cfg, changes)
