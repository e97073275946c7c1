"""The source of the numbered notebooks: their cells are written here and `notebooks/*.ipynb` are
generated from them (a test fails when the two differ). One source keeps the parameters, setup and
banner cells that the four notebooks share identical.

Regenerate, then store the smoke-run outputs that nbval compares:

    .venv/bin/python tools/build_notebooks.py
    rm -rf runs/smoke data/smoke
    CXR_SMOKE=1 .venv/bin/python -m helpers notebooks --mode smoke --out notebooks --restart

Cells whose output legitimately varies (timings, losses) start with `# NBVAL_IGNORE_OUTPUT`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
IGNORE = "# NBVAL_IGNORE_OUTPUT\n"

sys.path.insert(0, str(NOTEBOOKS.parent))
from helpers.colab import colab_badge  # noqa: E402  (stdlib only)
from helpers.layout import DRIVE_RUNS_ROOT, REPO_PLACEHOLDER, REPO_URL  # noqa: E402

SETUP_MD = f"""## Setup
On Colab this cell clones the project (or updates the clone: `git pull --ff-only`), installs its
runtime requirements, mounts Google Drive, where the run folder of the series lives
(`{DRIVE_RUNS_ROOT}/<mode>`: each notebook runs on its own machine, they share that folder), and
shows the device. Elsewhere it only makes the `helpers` package importable. Its output varies by
machine and is not compared by the tests."""

SETUP = f"""import os, subprocess, sys
from pathlib import Path

REPO_URL = "{REPO_URL}"  # generated from helpers/layout.py
if "google.colab" in sys.modules and not Path("helpers").is_dir():
    if not Path("/content/project/.git").is_dir():
        if "{REPO_PLACEHOLDER}" in REPO_URL:
            raise SystemExit("REPO_URL is a placeholder: set it (here and in helpers/layout.py of your copy) "
                             "to your copy of this project, e.g. https://github.com/<you>/cxr-text-localization.git")
        clone = subprocess.run(["git", "clone", "-q", REPO_URL, "/content/project"], capture_output=True,
                               text=True, env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})
        if clone.returncode:
            raise SystemExit(f"Cannot clone REPO_URL {{REPO_URL}} ({{clone.stderr.strip()}}): set REPO_URL "
                             "in this cell to a reachable copy of this project")
    os.chdir("/content/project")
ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
sys.path.insert(0, str(ROOT))
from helpers import colab

if colab.on_colab():
    print("project:", colab.update_clone(ROOT))
    colab.install_requirements(ROOT)
    colab.mount_drive(OUT_DIR, DATA_SOURCE, MASKS_SOURCE)
from helpers.pipeline import relative, resolve_run

RUN = resolve_run(DATA_SOURCE, MASKS_SOURCE, MODE, OUT_DIR)
print(f"run folder: {{relative(RUN.run_dir)}}; mode {{RUN.mode}}")
print(colab.check_device(RUN.mode, DEVICE))"""

SOURCE_01 = """DATA_SOURCE = "demo"  # "demo", a folder, a .zip, a Drive path (/content/drive/MyDrive/...), a Drive link or file id
MASKS_SOURCE = None   # the hand-drawn masks when the data has no masked/ folder (the Kaggle download has none):
                      # a folder, a .zip, a Drive path or link; None: only the dataset's masked/"""
SOURCE_LATER = """DATA_SOURCE = None    # None: what notebook 01 recorded in the run folder (run.json), else "demo"
MASKS_SOURCE = None   # None: what notebook 01 recorded"""
COMMON_PARAMS = """MODE = None           # "real" | "demo" | "smoke"; None: smoke under CXR_SMOKE=1, else as recorded / by the data
OUT_DIR = None        # the run folder of the series; None: on Colab the Drive folder, elsewhere runs/<mode>
DEVICE = None         # None: the GPU when there is one; "cpu" to run the real preset on a CPU on purpose"""

def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, ignore: bool = False):
    return new_code_cell((IGNORE if ignore else "") + text.strip("\n"))


BANNER = ("> **Stored outputs come from the smoke test** (64 px images, one epoch, a tiny text model "
          "with random weights), which checks that every cell runs; they say nothing about how well "
          "the method works. The demo's real figures are in the README. This notebook is generated "
          "from `tools/build_notebooks.py`: edit it there.")


def header(name: str, title: str, intro: str, params: str) -> list:
    sources = SOURCE_01 if name.startswith("01") else SOURCE_LATER
    where = ("Set `DATA_SOURCE` (and `MASKS_SOURCE`) here once: they are recorded in the run folder "
             "and notebooks 02-04 read them." if name.startswith("01") else
             "`DATA_SOURCE = None` reads what notebook 01 recorded in the run folder.")
    return [md(f"{colab_badge(name)}\n\n# {title}\n\n{BANNER}\n\n{intro}"),
            md("## Parameters\nEvery setting you may change is here. `None` keeps the value of the "
               "preset for the mode: `real` (GPU, full sizes), `demo` (CPU, minutes), `smoke` "
               f"(tests, seconds). {where}"),
            code(sources + "\n" + COMMON_PARAMS + ("\n" + params if params else "")),
            md(SETUP_MD), code(SETUP, ignore=True)]


SIZE_CELL = """from helpers.pipeline import folder_size

print("run folder:", folder_size(prep.paths.root))"""


def footer() -> list:
    return [md("## Disk use\nThe run folder's size (on Colab it counts against your Drive quota)."),
            code(SIZE_CELL, ignore=True)]


NB01 = header(
    "01_data_setup_and_exploration.ipynb",
    "01 · Data setup and exploration",
    "We fetch the Indiana University chest X-ray collection (or the built-in demo dataset that has "
    "the same layout), check it, catalog images, reports and hand-drawn pathology masks, look at "
    "what is in it, and split the labeled cases by patient for the next notebooks.",
    'DATA_DIR = None      # where datasets land (default data/<mode>)') + [
    md("## Fetch, validate and catalog\n`prepare` fetches the source (a zip is copied to local disk and "
       "extracted once) and the masks when they come apart (`MASKS_SOURCE`), checks the layout and "
       "the CSVs, pairs every mask with its image, and collects the problems it found instead of "
       "stopping at the first one. It records `DATA_SOURCE`, `MASKS_SOURCE` and the mode in the run "
       "folder (`run.json`) for notebooks 02-04. Without any mask, exploration and Phase 1 still run; "
       "Phase 2 needs the masks."),
    code("""from helpers import plots
from helpers.catalog import mask_geometry
from helpers.pipeline import prepare, relative

prep = prepare(DATA_SOURCE, MODE, masks=MASKS_SOURCE, data_dir=DATA_DIR, out_dir=OUT_DIR)
catalog = prep.catalog
print(f"mode: {prep.preset.mode}; dataset root: {relative(catalog.root)}")
if not prep.has_masks:
    print(f"Phase 2 needs masks: {prep.masks_message}")
catalog.summary()"""),
    md("## Problems report\nOrphan masks (no image), images listed but missing, unreadable images, "
       "reports without text, empty masks and masks whose size differs from their image. None of "
       "them stops the pipeline; each is listed here so you can fix the source if you want. The "
       "demo dataset carries a few on purpose."),
    code("""catalog.problems  # file: relative to the dataset root"""),
    md("## What is in the collection\nImages by projection (frontal and lateral), reports, masks, and "
       "the labeled cases (mask + image + text) that Phase 2 learns from. Phase 1 uses every image."),
    code("""fig = plots.plot_counts(catalog.summary())
plots.save_figure(fig, prep.paths.figures / "01_counts.png")"""),
    md("## How long are the reports?\nThe text of a case is its *findings*, or its *impression* when "
       "the findings are empty; de-identification tokens (`XXXX`) are removed. CLIP reads at most 77 "
       "tokens: longer texts are truncated. We count words and the tokens of the text encoder that "
       "Phase 2 will use."),
    code("""from helpers.text import load_text_encoder

encoder = load_text_encoder(prep.preset.finetune.text_model, cache_dir=prep.paths.text_models,
                            fallback=prep.preset.finetune.text_fallback)
texts = catalog.reports["text"].tolist()
n_tokens = encoder.count_tokens(texts)
print("text encoder: " + ("the tiny offline CLIP with random weights" if encoder.is_tiny else encoder.name))
print(f"{sum(n > encoder.max_length for n in n_tokens)} of {len(texts)} report texts exceed {encoder.max_length} tokens")
fig = plots.plot_text_lengths(catalog.reports["n_words"], n_tokens, max_tokens=encoder.max_length)"""),
    md("## Frequent finding terms"),
    code("""fig = plots.plot_term_frequencies(texts, top=20)"""),
    md("## Where the masks are\nMask area as a share of the image, and where mask centroids sit by "
       "side and zone. By the radiological convention the patient's right is on the image's left."),
    code("""if prep.has_masks:
    geometry = mask_geometry(prep.cases["mask_path"].tolist())
    fig = plots.plot_mask_stats(geometry["area"], geometry[["cx", "cy"]].dropna().to_numpy())
    plots.save_figure(fig, prep.paths.figures / "01_mask_positions.png")
else:
    print("no masks: set MASKS_SOURCE to see where they are")"""),
    md("## Labeled cases\nEach image with the contour of its mask and the text it comes with."),
    code("""from helpers.io import load_gray, load_mask

sample = prep.cases.head(8)
if len(sample):
    fig = plots.plot_case_grid([load_gray(p, 256) for p in sample["image_path"]],
                             [load_mask(p, 256) for p in sample["mask_path"]],
                             sample["text"].tolist(), titles=sample["case_id"].tolist())
    plots.save_figure(fig, prep.paths.figures / "01_labeled_cases.png")"""),
    md("## Split by patient\nTrain, validation and test are split by patient (`uid`) so that no "
       "patient's images are on both sides. The split is saved and reused by the next notebooks; the "
       "test split is used once, for the final report in notebook 03."),
    code("""if prep.has_masks:
    print(f"split saved to {relative(prep.paths.splits)}")
    display(prep.cases.groupby("split").agg(cases=("case_id", "size"), patients=("uid", "nunique")))
else:
    print(f"no split: {prep.masks_message}")"""),
] + footer()

NB02 = header(
    "02_phase1_pretraining.ipynb",
    "02 · Phase 1: self-supervised pretraining",
    "A U-Net with a ResNet34 encoder learns what chest X-rays look like from every image of the "
    "collection, without labels, by reconstructing them. Phase 2 starts from this encoder, so that "
    "the few labeled masks go further.",
    """OBJECTIVES = None      # e.g. ["masked"]; None: the preset's (real and demo train both, so notebook 03 can compare them)
IMAGE_SIZE = None      # 256 on a GPU
EPOCHS = None
BATCH_SIZE = None
LR = None
ENCODER = None         # "resnet34"
MAX_IMAGES = None      # None: all images
FRONTAL_ONLY = None    # False: frontal and lateral images
RESUME = True          # continue from last.pth when a run was interrupted""") + [
    md("## Data\nThe same dataset as notebook 01 (fetched once, reused). Phase 1 uses every readable "
       "image, labeled or not, except the images of the patients in Phase 2's validation and test "
       "splits: the final test must be on patients the model has never seen."),
    code("""from helpers import plots
from helpers.config import override
from helpers.inference import reconstruct_examples
from helpers.pipeline import describe, prepare, relative
from helpers.train import pretrain
from helpers.unlabeled import iu_pretrain_paths

prep = prepare(DATA_SOURCE, MODE, masks=MASKS_SOURCE, out_dir=OUT_DIR)
print(describe(prep))
cfg = override(prep.preset.pretrain, image_size=IMAGE_SIZE, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR,
               encoder=ENCODER, max_images=MAX_IMAGES, frontal_only=FRONTAL_ONLY, device=DEVICE)
objectives = OBJECTIVES or (["masked"] if prep.preset.mode == "smoke" else ["masked", "reconstruct"])
image_paths = iu_pretrain_paths(prep.catalog.images, prep.cases, frontal_only=cfg.frontal_only)""", ignore=True),
    code("""print(f"mode {prep.preset.mode}: {len(image_paths)} images, objectives {objectives}, "
      f"{cfg.image_size} px, {cfg.epochs} epoch(s) of batch {cfg.batch_size}")"""),
    md("## Two objectives\n*reconstruct* is the plain autoencoder: output = input, mean squared error. "
       "It has a known shortcut: the U-Net's top skip connection carries the input at full resolution "
       "to the output, so it can copy the image while the deep encoder learns little. *masked* hides "
       "a random half of the patches under noise and weights the loss on them up: what is hidden "
       "cannot be copied through a skip, only inferred from the anatomy around it, which is what the "
       "encoder should learn. Notebook 03 measures which initialisation helps Phase 2 more."),
    md("## Train\nImages are decoded and resized once into a cache; each epoch ends with a validation "
       "loss on held-out images, `last.pth` (for resuming) and, at the best validation loss, "
       "`my_pretrained_encoder.pth`. On a GPU mixed precision is used."),
    code("""import dataclasses

results = {}
for objective in objectives:
    run_cfg = dataclasses.replace(cfg, objective=objective)
    results[objective] = pretrain(run_cfg, image_paths, prep.paths.phase1(objective),
                                  cache_dir=prep.paths.cache, resume=RESUME)""", ignore=True),
    md("## Loss curves"),
    code("""for objective, result in results.items():
    fig = plots.plot_history(result.history)
    fig.suptitle(f"Phase 1, {objective}")
    plots.save_figure(fig, prep.paths.figures / f"02_history_{objective}.png")""", ignore=True),
    code("""import pandas as pd

pd.DataFrame([{"objective": o, "first val_loss": r.history["val_loss"].iloc[0],
               "last val_loss": r.history["val_loss"].iloc[-1], "best epoch": r.best_epoch,
               "images/s": r.images_per_second, "train time s": r.seconds} for o, r in results.items()]).round(4)""",
         ignore=True),
    md("## Reconstructions\nInput, the input with hidden patches (masked objective), and the output "
       "for a few held-out images."),
    code("""from helpers.datasets import build_image_cache

cache = build_image_cache(image_paths[:4], cfg.image_size, prep.paths.cache / "examples", progress=False)
for objective, result in results.items():
    ex = reconstruct_examples(result.best_path, cache.array, dataclasses.replace(cfg, objective=objective))
    fig = plots.plot_reconstructions(ex["inputs"], ex["masked"], ex["outputs"])
    fig.suptitle(objective)
    plots.save_figure(fig, prep.paths.figures / f"02_reconstructions_{objective}.png")"""),
    md("## Saved files\n`my_pretrained_encoder.pth` holds the encoder's weights with the settings, "
       "epoch and validation loss; it loads with `torch.load(..., weights_only=True)`."),
    code("""for objective, result in results.items():
    print(relative(result.best_path), "|", relative(result.last_path))"""),
] + footer()

NB03 = header(
    "03_phase2_multimodal_finetuning.ipynb",
    "03 · Phase 2: text-guided segmentation",
    "The Phase-1 encoder is fused with a frozen text encoder (CLIP ViT-B/32 by default); the U-Net "
    "decoder turns the fused features into the mask of the finding the text describes. Then we "
    "check, with ablations and a two-lesion probe, that the mask really follows the text.\n\n"
    "Fusions: `concat` (the specified design: the text embedding tiled over the deepest feature "
    "map, concatenated and fused back by a convolution), `film_multi` (the text scales and shifts "
    "the features at every scale), `cross_attn` (every image position attends to the text's "
    "tokens at the three deepest scales). Text modes: `raw` (the findings as written) or "
    "`positive` (only the sentences that describe something present: normal statements and "
    "negations such as \"No left effusion.\" are dropped, so they neither mislead the model nor "
    "push the finding past the text encoder's 77 tokens). The presets' defaults follow the "
    "ablation table in the README.",
    """TEXT_MODEL = None          # a Hugging Face name or local path; None: CLIP ViT-B/32 (real), tiny offline CLIP (demo, smoke)
FUSION = None              # "concat" (specified), "film", "film_multi", "cross_attn", "none" (image only); None: the preset's
TEXT_MODE = None           # "raw" or "positive" (only sentences that describe something present); None: the preset's
NEGATIVE_RATE = None       # share of training items given another case's text and an empty mask
UPSAMPLING = None          # "interp" (smp) or "transpose" (transposed convolutions)
PHASE1_OBJECTIVE = "masked"  # which Phase-1 encoder to start from; None: from scratch
IMAGE_SIZE = None          # must match Phase 1
EPOCHS = None
BATCH_SIZE = None
LR = None
ENCODER_LR = None
FREEZE_ENCODER_EPOCHS = None
CONCORDANT_FLIP = None     # probability of flipping image+mask AND swapping left/right in the text
RUN_ABLATIONS = True
RESUME = True""") + [
    md("## Data and settings"),
    code("""from helpers import plots
from helpers.config import override
from helpers.pipeline import describe, ensure_phase1, prepare, relative
from helpers.train import finetune

prep = prepare(DATA_SOURCE, MODE, masks=MASKS_SOURCE, out_dir=OUT_DIR)
print(describe(prep))
prep.require_masks()  # Phase 2 learns from the hand-drawn masks: stops here without them
# The Phase-1 encoder of notebook 02 (in smoke mode a quick one is trained when missing; otherwise a
# missing one is an error: set PHASE1_OBJECTIVE = None to train from scratch on purpose)
encoder_path = ensure_phase1(prep, PHASE1_OBJECTIVE, DEVICE) if PHASE1_OBJECTIVE else None
cfg = override(prep.preset.finetune, text_model=TEXT_MODEL, fusion=FUSION, upsampling=UPSAMPLING,
               image_size=IMAGE_SIZE, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, encoder_lr=ENCODER_LR,
               freeze_encoder_epochs=FREEZE_ENCODER_EPOCHS, concordant_flip=CONCORDANT_FLIP, device=DEVICE,
               text_mode=TEXT_MODE, negative_rate=NEGATIVE_RATE,
               pretrained_encoder=str(encoder_path) if encoder_path else None)
print(f"Phase-1 encoder: {relative(cfg.pretrained_encoder) if cfg.pretrained_encoder else 'none (from scratch, on purpose)'}")
print(f"text encoder requested: {cfg.text_model}"
      + (" (the tiny offline CLIP with random weights is used when the model hub is unreachable)" if cfg.text_fallback else ""))""", ignore=True),
    code("""print(prep.cases["split"].value_counts().to_string())
print(f"fusion {cfg.fusion}, text mode {cfg.text_mode}, {cfg.image_size} px, up to {cfg.epochs} epoch(s), "
      f"Phase-1 init: {'yes' if cfg.pretrained_encoder else 'no'}")"""),
    md("## What the model reads\nReal findings are mostly normal statements and negations. With "
       "`text_mode=\"positive\"` the model is given only the sentences that describe something "
       "present (a small NegEx-style rule set, `helpers.sentences`); when a report has none, it "
       "gets the whole text. Here are three training reports, split into what is kept and what is "
       "dropped."),
    code("""from helpers.explorer import sentence_table

sentence_table(prep.cases.loc[prep.cases["split"] == "train", "text"].head(3))"""),
    md("## Train\nLoss: Dice + BCE with a positive-class weight from the training masks' foreground "
       "share, computed in float32. Each unique text is encoded once by the frozen text encoder and "
       "cached. The best epoch by validation Dice is kept as `best_model.pth`, with the threshold "
       "chosen on validation."),
    code("""result = finetune(cfg, prep.cases, prep.paths.phase2, cache_dir=prep.paths.cache,
                  text_cache_dir=prep.paths.text_models, resume=RESUME)""", ignore=True),
    code("""print(f"{relative(result.best_path)}: {len(result.history)} epoch(s) of history with "
      f"{', '.join(result.history.columns)}")
fig = plots.plot_history(result.history)
plots.save_figure(fig, prep.paths.figures / "03_history.png")"""),
    md("## Test set: the final report\nPer-image Dice and IoU at the validation threshold, the "
       "pointing game (is the most probable pixel inside the true mask?), each with a bootstrap 95% "
       "interval, and the pixel-pooled Dice. The test split is used here for the first time."),
    code("""import pandas as pd
from helpers.evaluation import counterfactual_sides, evaluate
from helpers.inference import Segmenter

segmenter = Segmenter.from_checkpoint(result.best_path, text_cache_dir=prep.paths.text_models)
print(segmenter.describe())
test = prep.cases[prep.cases["split"] == "test"].reset_index(drop=True)
per_case, summary = evaluate(segmenter, test, cache_dir=prep.paths.cache)
pd.Series(summary)""", ignore=True),
    code("""print(f"{len(per_case)} test cases scored: {', '.join(per_case.columns)}")"""),
    md("## Predictions\nGreen: the hand-drawn mask; red: the predicted one; the heat map is the "
       "predicted probability."),
    code("""from helpers.datasets import labeled_arrays

arrays = labeled_arrays(test, segmenter.image_size, prep.paths.cache)
probs = [segmenter.predict(im, t) for im, t in zip(arrays.images, arrays.cases["text"])]
fig = plots.plot_prediction_grid(arrays.images, arrays.masks, probs, arrays.cases["text"].tolist(),
                               dices=per_case["dice"].tolist(), threshold=segmenter.threshold, n=8)
plots.save_figure(fig, prep.paths.figures / "03_test_predictions.png")"""),
    md("## Does the model read the text?\nA counterfactual check: swap *left* and *right* in each test "
       "text that names a side and see whether the predicted mask moves to the other side of the "
       "image."),
    code("""sides, side_summary = counterfactual_sides(segmenter, test, cache_dir=prep.paths.cache)
print(f"{side_summary['n_sided']} of {len(test)} test texts name one side")"""),
    code("""side_summary  # moved_share: moved to the other half; correct_side_share: on the named side""",
         ignore=True),
    md("## Does the mask follow the text? The two-lesion probe\nThe direct test of the mission. "
       "Every labeled demo image holds the described lesion and two others; for each other lesion "
       "we ask twice, once with a sentence describing the target and once with one describing the "
       "other lesion (phrased as the test reports are, never seen in training). The mask follows "
       "its text when more predicted probability lies in the described lesion than in the other. "
       "A model that ignores the text follows half of the texts at best. (The real collection has "
       "no second lesion's mask; a table of your own in the same columns works the same way.)"),
    code("""from helpers.evaluation import two_lesion_probe
from helpers.pipeline import demo_probe

probe = demo_probe(prep)
if probe is not None:
    probe_table, probe_summary = two_lesion_probe(segmenter, probe, cache_dir=prep.paths.cache)
    print(f"{probe_summary['n_items']} probe texts on {probe_summary['n_images']} test images")"""),
    code("""if probe is not None:
    print(f"the mask follows its text for {probe_summary['follows_share']:.0%} of them")""", ignore=True),
    md("## Ablations\n(a) the model with the report text; (b) the same model with the test texts "
       "shuffled across cases; (c) an image-only model; the other fusions; Phase-1 initialisation "
       "vs none and per objective. Each is trained with the same settings and scored on the test "
       "split, with 95% bootstrap intervals (and the SD over seeds when the preset runs several). "
       "`moved_share` is the counterfactual above for each text model."),
    code("""from helpers.experiments import run_ablations

if RUN_ABLATIONS:
    table, runs = run_ablations(prep.cases, prep.paths.ablations, cfg, prep.preset.ablation,
                                phase1_encoders=prep.paths.phase1_encoders(), main_checkpoint=result.best_path,
                                cache_dir=prep.paths.cache, text_cache_dir=prep.paths.text_models,
                                probe=probe)
    table.to_csv(prep.paths.ablations / "ablation_table.csv", index=False)
    display(table.round(3))""", ignore=True),
    code("""if RUN_ABLATIONS:
    print("variants:", ", ".join(table["variant"]))
    fig = plots.plot_ablation(table, metric="dice")
    plots.save_figure(fig, prep.paths.figures / "03_ablation.png")"""),
    md("## Saved files"),
    code("""print(relative(result.best_path))
print(relative(prep.paths.ablations / "ablation_table.csv"))"""),
] + footer()

NB04 = header(
    "04_visualization.ipynb",
    "04 · Look at the predictions",
    "Load the trained model from notebook 03, look at the best, median and worst test cases, explore "
    "every case interactively, and ask the model about your own findings text.",
    """CHECKPOINT = None   # None: best_model.pth in the run folder (written by notebook 03)
THRESHOLD = None    # None: the threshold chosen on validation""") + [
    md("## Load the model\n`Segmenter` needs no training code: the checkpoint names the text encoder "
       "and holds the image size and the threshold."),
    code("""from helpers import explorer, plots
from helpers.datasets import labeled_arrays
from helpers.evaluation import best_median_worst, evaluate
from helpers.inference import Segmenter
from helpers.pipeline import describe, ensure_phase2, prepare, relative

prep = prepare(DATA_SOURCE, MODE, masks=MASKS_SOURCE, out_dir=OUT_DIR)
print(describe(prep))
prep.require_masks()
# notebook 03's best_model.pth from the run folder (in smoke mode trained here when missing)
checkpoint = ensure_phase2(prep, CHECKPOINT)
segmenter = Segmenter.from_checkpoint(checkpoint, text_cache_dir=prep.paths.text_models)
if THRESHOLD is not None:
    segmenter.threshold = THRESHOLD
print(f"{relative(checkpoint)}: {segmenter.describe()}")""", ignore=True),
    code("""print(f"fusion {segmenter.info['model']['fusion']}, text mode {segmenter.text_mode}, "
      f"{segmenter.image_size} px, text encoder tiny: {segmenter.info['text_model_is_tiny']}")"""),
    md("## Best, median and worst test cases\nA static view, for readers without widgets."),
    code("""test = prep.cases[prep.cases["split"] == "test"].reset_index(drop=True)
per_case, _ = evaluate(segmenter, test, cache_dir=prep.paths.cache)
picks = best_median_worst(per_case["dice"])
arrays = labeled_arrays(test.loc[picks], segmenter.image_size, prep.paths.cache)
probs = [segmenter.predict(im, t) for im, t in zip(arrays.images, arrays.cases["text"])]
fig = plots.plot_prediction_grid(arrays.images, arrays.masks, probs, arrays.cases["text"].tolist(),
                               dices=per_case.loc[picks, "dice"].tolist(), threshold=segmenter.threshold,
                               n=3, ncols=3)
plots.save_figure(fig, prep.paths.figures / "04_best_median_worst.png")"""),
    md("## Explorer\nPick a split and a case, move the threshold and the overlay opacity, edit the "
       "text (the model re-runs on the new text), and save the figure as PNG."),
    code("""box = explorer.explore(prep.cases, segmenter, save_dir=prep.paths.figures)
box""", ignore=True),
    md("What the explorer shows first: the first case, and the sentences the model reads of its text."),
    code("""print(box.controls["case"].value, "|", len(box.controls["case"].options), "cases")
print(box.given.value)"""),
    md("## Type your own finding\nThe same image with two texts that name different places: the "
       "model should move the mask with the words."),
    code("""from helpers.io import load_gray

TEXT_A = "Focal opacity in the right upper lobe."
TEXT_B = "Focal opacity in the left lower lobe."
image = load_gray(test.iloc[0]["image_path"])
fig = plots.plot_counterfactual(image, segmenter.predict(image, TEXT_A), segmenter.predict(image, TEXT_B),
                              TEXT_A, TEXT_B, threshold=segmenter.threshold)
plots.save_figure(fig, prep.paths.figures / "04_your_own_finding.png")"""),
    md("## Your own report\nPaste a whole findings text: the model is given the sentences shown as "
       "kept (with `text_mode=\"positive\"`; all of them with `raw`), and the mask is drawn for "
       "them."),
    code("""REPORT = ("The heart is normal in size. No pneumothorax. No left pleural effusion. "
          "There is patchy airspace opacity at the right lung base.")
chosen = segmenter.sentences(REPORT)
print("kept:   ", chosen.kept)
print("dropped:", chosen.dropped)
fig = plots.case_figure(image, segmenter.predict(image, REPORT), REPORT, threshold=segmenter.threshold)
plots.save_figure(fig, prep.paths.figures / "04_your_own_report.png")"""),
] + footer()


NOTEBOOK_CELLS = {"01_data_setup_and_exploration.ipynb": NB01,
                  "02_phase1_pretraining.ipynb": NB02,
                  "03_phase2_multimodal_finetuning.ipynb": NB03,
                  "04_visualization.ipynb": NB04}


def build() -> dict[str, nbformat.NotebookNode]:
    """The notebooks by file name, without outputs."""
    return {name: new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU", "colab": {"provenance": []}}) for name, cells in NOTEBOOK_CELLS.items()}


if __name__ == "__main__":
    NOTEBOOKS.mkdir(exist_ok=True)
    for name, nb in build().items():
        nbformat.write(nb, NOTEBOOKS / name)
    print("written to", NOTEBOOKS)
