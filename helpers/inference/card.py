"""The model card (`README.md` of an exported model): a YAML header the model hub reads
(`huggingface_hub.ModelCardData`: library_name, license, pipeline_tag, tags, language), then the
intended use, how to load the model, the data and its terms, the run's measured figures with their
95% intervals (`evaluation.json`, `inference.results`), the settings and the limits. Everything
comes from the model's `config.json` and the run: nothing is a placeholder.
"""
from __future__ import annotations

import json

from huggingface_hub import ModelCardData
from scipy.stats import binomtest

from ..core.environment import REPO_URL
from ..core.layout import MODEL_TEXT_ENCODER_DIR

TAGS = ["medical-imaging", "chest-x-ray", "radiology", "text-guided-segmentation", "image-segmentation",
        "unet", "pytorch"]
# The terms of the data a model learned from, by the kind of source.
IU_TERMS = ("the Indiana University chest X-ray collection (OpenI; Kaggle layout): CC BY-NC-ND 4.0 as "
            "stated by OpenI (attribution, no commercial use, no derivatives); the hand-drawn masks are "
            "not part of that download and come under their own source's terms")
DEMO_TERMS = ("the project's generated demo dataset (synthetic images and reports, no patient data): "
              "no terms beyond the project's own")
# The terms of the text encoders this project names; others: see the encoder's own card on the hub.
TEXT_ENCODER_TERMS = {
    "openai/clip-vit-base-patch32": "MIT licence (OpenAI's CLIP release); its model card puts any "
                                    "deployed use out of scope (research only)",
    "sentence-transformers/all-MiniLM-L6-v2": "Apache-2.0",
}
TINY_TERMS = "random weights built by this project offline; no terms of their own"


def wilson(share: float | None, n: int | None) -> tuple[float, float] | None:
    """Wilson 95% interval of a share of `n` independent items (None when there is none)."""
    if share is None or not n:
        return None
    ci = binomtest(round(share * n), n).proportion_ci(method="wilson")
    return float(ci.low), float(ci.high)


def _row(name: str, part: dict | None, value: str, n: str, interval: str = "wilson") -> list | None:
    """[name, value, low, high, n] from a summary `part`; intervals from `<value>_lo/_hi`, or the
    Wilson interval of a share. None when the figure was not measured."""
    if not part or part.get(value) is None:
        return None
    count = part.get(n)
    if interval == "wilson":
        ci = wilson(part[value], count)
    else:
        low, high = part.get(f"{value}_lo"), part.get(f"{value}_hi")
        ci = (low, high) if low is not None and high is not None else None
    return [name, part[value], *(ci or (None, None)), count]


def figure_rows(summary: dict) -> list[list]:
    """The card's figures from one `evaluate` summary (with the probes' summaries inside it): rows
    [name, value, low, high, n], in the order of the table; those not measured are left out."""
    rows = [_row("Dice (per image, at the threshold)", summary, "dice", "n", "bootstrap"),
            _row("IoU (per image)", summary, "iou", "n", "bootstrap"),
            _row("Pointing game (peak inside the mask)", summary, "pointing_hit", "n", "bootstrap"),
            _row("Dice pooled over pixels", summary, "pooled_dice", "n", "none"),
            _row("Left/right swapped: mask moves or empties", summary.get("counterfactual"),
                 "follows_share", "n_sided"),
            _row("Two-lesion probe: mask on the described lesion", summary.get("two_lesion_probe"),
                 "follows_share", "n_items"),
            _row("Mirror probe: both questions right", summary.get("mirror_probe"), "both_share", "n_cases"),
            _row("Normal report: empty mask", summary.get("normal_reports"), "empty_share", "n"),
            _row("Sentence of a finding the masks do not draw: empty", summary.get("other_findings"),
                 "empty_share", "n"),
            _row("Per sentence: Dice against its own lesion", summary.get("per_sentence"), "dice",
                 "n_sentences", "bootstrap"),
            _row("Per sentence: mask on its own lesion", summary.get("per_sentence"), "on_own_share",
                 "n_sentences", "bootstrap")]
    return [r for r in rows if r is not None]


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def results_section(results: dict[str, dict], threshold: float | None = None) -> str:
    """The measured figures: the test split's (else the first split scored), and the controls
    (`threshold`: the model's, named when the figures were measured at another)."""
    if not results:
        return ("No figures were recorded for these weights: score the model "
                "(`python -m helpers evaluate --checkpoint best_model.pth`) and export it again.\n")
    key = "test" if "test" in results else next(k for k in results if "/" not in k) \
        if any("/" not in k for k in results) else next(iter(results))
    summary = results[key]
    seen = summary.get("model_split")
    lines = [f"Scored on the **{summary.get('split') or key}** split: {summary.get('n')} images of "
             f"{summary.get('n_patients', '?')} patients"
             + (f" (the model's own {seen} patients)" if seen else "")
             + (f"; {summary['n_left_out']} images of its training patients left out"
                if summary.get("n_left_out") else "") + f", threshold {_fmt(summary.get('threshold'))}"
             + (f" (the model's threshold is now {_fmt(threshold)})"
                if threshold is not None and summary.get("threshold") != threshold else "") + ".",
             "Intervals: bootstrap 95% over images (Dice, IoU, pointing), over reports (per sentence); "
             "Wilson 95% for the other shares, their items taken as independent (several items of one "
             "image are not quite).", "", "| figure | value | 95% interval | n |", "| --- | --- | --- | --- |"]
    for name, value, low, high, n in figure_rows(summary):
        interval = f"{_fmt(low)} – {_fmt(high)}" if low is not None else "–"
        lines.append(f"| {name} | {_fmt(value)} | {interval} | {_fmt(n)} |")
    controls = [(k.split("/", 1)[1], s) for k, s in results.items() if k.startswith(f"{key}/")]
    for texts, part in controls:
        lines.append(f"| Control, texts {texts}: Dice | {_fmt(part.get('dice'))} | "
                     f"{_fmt(part.get('dice_lo'))} – {_fmt(part.get('dice_hi'))} | {_fmt(part.get('n'))} |")
    return "\n".join(lines) + "\n"


def data_section(record: dict, data: dict | None) -> str:
    """Where the data came from, its terms, and the patient split the model carries."""
    source, masks = (data or {}).get("data_source"), (data or {}).get("masks_source")
    if source is None:
        lines = ["- Source: not recorded with these weights.",
                 f"- Terms: those of that source; for {IU_TERMS}."]
    else:
        terms = DEMO_TERMS if str(source).startswith("demo") else IU_TERMS
        lines = [f"- Source: `{source}`" + (f", masks from `{masks}`" if masks else ""), f"- Terms: {terms}."]
    patients = record.get("patients") or {}
    if patients:
        parts = [f"{name} {len({k.split(':')[0] for k in keys})} patients ({len(keys)} images)"
                 for name, keys in patients.items()]
        lines.append(f"- Split by patient: {', '.join(parts)}. The model carries it (`config.json`), "
                     "so scoring it on the same collection leaves its training patients out.")
    else:
        lines.append("- Split by patient: not recorded with these weights.")
    return "\n".join(lines) + "\n"


def text_encoder_section(text: dict, record: dict) -> str:
    name = text.get("name")
    if text.get("is_tiny"):
        terms = TINY_TERMS
    else:
        terms = TEXT_ENCODER_TERMS.get(name, "see the encoder's own model card on the hub")
    where = (f"A local folder, copied into `{MODEL_TEXT_ENCODER_DIR}/`" if text.get("copied")
             else f"`{name}` from the model hub" + (f" at revision `{text['revision']}`" if text.get("revision") else ""))
    note = (" **Its weights are random: this model shows that the pipeline runs, not how well a real text "
            "encoder reads.**" if text.get("is_tiny") else "")
    requested = record.get("text_model_requested")
    return (f"{where}, frozen; {text.get('dim')}-d embeddings, at most {text.get('max_length')} tokens"
            + (f" (requested: `{requested}`)" if requested and requested != name and not text.get("copied") else "")
            + f". Terms: {terms}.{note}\n")


def limits_section(config: dict) -> str:
    record, text, reader = config["record"], config["text_encoder"], config.get("reader", {})
    truncation = (record.get("text_report") or {}).get("truncation") or {}
    cut = (f" ({truncation['n_truncated']} of {truncation['n_texts']} training texts were)"
           if truncation.get("n_texts") else "")
    vocab = {k: v for k, v in record.items() if "vocab" in k and v}
    lines = [
        "- Not for diagnosis: a research model, never validated clinically; its masks may be wrong, "
        "empty, or on the wrong finding.",
        "- English text only: the text encoder was trained on English, and reports were English.",
        f"- The text encoder reads at most {text.get('max_length')} tokens; a longer text is cut at the "
        f"end{cut}. With text mode `positive` only the sentences that describe something present are read.",
        f"- Which sentences are read and where they point come from rules, not learning: the sentence "
        f"filter (version {reader.get('sentence_rules_version')}) and the place words (left/right, "
        f"upper/lower; version {reader.get('place_words_version')}). A place named in other words is "
        "not read as a place.",
        "- Frontal chest X-rays, 8-bit grayscale, resized to "
        f"{record.get('image_size')} px; the patient's left is on the image's right.",
    ]
    if vocab:
        lines.append(f"- What the masks draw, learned from the training data: `{json.dumps(vocab)[:300]}`.")
    return "\n".join(lines) + "\n"


def render_card(config: dict, results: dict[str, dict] | None = None, data: dict | None = None,
                repo_id: str | None = None) -> str:
    """The model card of an exported model (`config`: its config.json; `results`: the summaries of
    `evaluation.json` by key; `data`: the run's data source and masks source; `repo_id`: the hub id
    it is pushed to, named in how to load it)."""
    record, text = config["record"], config["text_encoder"]
    model = record.get("model", {})
    header = ModelCardData(library_name=config["format"], license=config["license"],
                           pipeline_tag="image-segmentation", language=["en"],
                           tags=TAGS + (["clip"] if "clip" in str(text.get("name")).lower() else []))
    where = repo_id or "path/to/this/folder"
    settings = "\n".join(f"| {name} | `{json.dumps(value)}` |" for name, value in
                         {**{f"model.{k}": v for k, v in model.items()}, "threshold": record.get("threshold"),
                          **(record.get("finetune") or {})}.items())
    return f"""---
{header.to_yaml()}
---

# Chest X-ray finding localisation from report text

Given a frontal chest X-ray and the findings text of its radiology report, this model draws the mask of
the finding the text describes: a U-Net (`{model.get('encoder_name', 'resnet34')}` encoder) whose decoder
reads a frozen text encoder (fusion `{model.get('fusion')}`{', with a place prior from the side and level words' if model.get('place_prior') else ''}).
The same image with another text gives another mask. Epoch {config.get('epoch')} of training, threshold
{_fmt(record.get('threshold'))} chosen on validation.

## Intended use

Research on text-guided localisation in chest X-rays: reproducing, comparing, teaching. **Not a medical
device: not for diagnosis, triage or any decision about a patient.**

## How to load it

Get the project's code ({REPO_URL}) and its requirements (`pip install -r requirements.txt`), then:

```python
from helpers.inference.segmenter import Segmenter
seg = Segmenter.from_pretrained("{where}")
prob = seg.predict("image.png", "Nodule in the right upper lobe.")  # float32 [H, W] in [0, 1]
```

`seg.ground_report(image, report)` reads a whole report sentence by sentence. Loading reads JSON and
safetensors only (nothing is unpickled).

## Data

{data_section(record, data)}
## Results

{results_section(results or {}, record.get("threshold"))}
## Text encoder

{text_encoder_section(text, record)}
## Limits

{limits_section(config)}
## Settings

<details><summary>The model's and its training's settings (also in config.json)</summary>

| setting | value |
| --- | --- |
{settings}

</details>

## Licence

This model: `{config['license']}`. The data's and the text encoder's terms above apply too.
"""
