"""A whole report read sentence by sentence (`Segmenter.ground_report`), seen by a person: one colour
per positive sentence, the masks filled in their colours with a legend that quotes each sentence,
the report as HTML with each sentence highlighted in its mask's colour (the dropped ones struck
through), and the per-sentence table.

Images are uint8 grayscale `[H, W]`; a grounding's masks are float32 `[H, W]` probabilities at the
image's resolution. The grounding is duck-typed (`report`, `threshold`, `labels`, `sentences` with
`text`, `prob`, `area`, `confidence`, `located`, and optionally `mask`, `drawn`, `low_confidence`),
so this module imports nothing from `inference`. A low-confidence mask (nothing passed the
threshold; the pixels near the peak) and a sentence whose finding this dataset's masks do not draw
are said so in the legend, the HTML and the table.
"""
from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from PIL import Image

from .overlay import check_same_shape, outline
from ..text.sentences import NO_FINDING_NOTE, POSITIVE
from ..text.vocabulary import NOT_DRAWN_NOTE

# tab10 without its gray: distinct on a gray radiograph; cycled past nine sentences
SENTENCE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                   "#bcbd22", "#17becf")
TRUTH_STYLE = "--"
CASE_TRUTH_COLOR = "lime"


def sentence_color(index: int) -> str:
    """The colour of the positive sentence `index` (0-based), as a hex string."""
    return SENTENCE_COLORS[index % len(SENTENCE_COLORS)]


def _shown(n: int, selected: int | None) -> list[int]:
    if selected is not None and not 0 <= selected < n:
        raise ValueError(f"selected must be None (all) or a sentence index in 0..{n - 1}, got {selected}")
    return list(range(n)) if selected is None else [selected]


def color_overlay(image: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.45,
                  selected: int | None = None) -> np.ndarray:
    """Bool masks `[H, W]` filled in their sentences' colours over a grayscale image, each outlined
    in its colour; a later mask is drawn over an earlier one where they overlap.

    Args:
        image: uint8 `[H, W]`.
        masks: one bool `[H, W]` per positive sentence, in report order.
        alpha: opacity of the fills.
        selected: draw only this mask (its colour stays the one of its place in `masks`).

    Returns:
        uint8 `[H, W, 3]` RGB.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 grayscale [H, W], got {image.dtype} {image.shape}")
    rgb = np.repeat(image[..., None].astype(np.float32), 3, axis=-1)
    shown = _shown(len(masks), selected) if len(masks) else []
    for k in shown:
        check_same_shape(image, masks[k], "mask")
    colors = {k: np.array(to_rgb(sentence_color(k)), np.float32) * 255 for k in shown}
    for k in shown:  # the fills first, then every outline, so that no mask hides another's edge
        mask = np.asarray(masks[k]).astype(bool)
        rgb[mask] = rgb[mask] * (1 - alpha) + colors[k] * alpha
    for k in shown:
        rgb[outline(np.asarray(masks[k]).astype(bool))] = colors[k]
    return np.rint(rgb).astype(np.uint8)


LOW_CONFIDENCE_NOTE = "low confidence: nothing passed the threshold, the pixels near the peak"


def sentence_mask(sentence: Any, threshold: float) -> np.ndarray:
    """bool [H, W]: a sentence's mask (its `mask`, else its probabilities at `threshold`)."""
    mask = getattr(sentence, "mask", None)
    return np.asarray(mask, bool) if mask is not None else np.asarray(sentence.prob) >= threshold


def _state(located: bool, area: float, confidence: float, low: bool, drawn: bool) -> str:
    state = (f"area {area:.1%}, peak p {confidence:.2f}" if located
             else f"not located (peak p {confidence:.2f})")
    state += f"; {LOW_CONFIDENCE_NOTE}" if low else ""
    return state + ("" if drawn else f"; {NOT_DRAWN_NOTE}")


def _label(k: int, sentence: Any, wrap: int) -> str:
    state = _state(sentence.located, sentence.area, sentence.confidence,
                   getattr(sentence, "low_confidence", False), getattr(sentence, "drawn", True))
    return textwrap.fill(f"{k + 1}. {sentence.text} [{state}]", wrap)


def report_figure(image: np.ndarray, grounding: Any, *, selected: int | None = None,
                  truths: Sequence[np.ndarray | None] | None = None,
                  mask: np.ndarray | None = None, alpha: float = 0.45, panels: bool = True,
                  title: str | None = None, wrap: int = 60) -> Figure:
    """The image with one coloured mask per positive sentence and a legend that quotes each
    sentence (its area and peak probability, or "not located"); the dropped sentences are listed
    in gray with their label.

    Args:
        image: uint8 `[H, W]`, the grounded image.
        grounding: `Segmenter.ground_report`'s result for `image`.
        selected: show only this sentence's mask (0-based among the positive sentences).
        truths: optional true mask `[H, W]` per positive sentence (None where unknown), outlined
            dashed in the sentence's colour.
        mask: optional true mask `[H, W]` of the image whatever the sentence (a labeled case's
            mask), outlined in `CASE_TRUTH_COLOR`.
        alpha: opacity of the fills.
        panels: with two or more sentences, also each sentence's mask alone, small, beneath the
            legend (masks that overlap stay readable).
        title: figure title.
        wrap: characters per legend line.
    """
    sentences = list(grounding.sentences)
    shown = _shown(len(sentences), selected) if sentences else []
    masks = [sentence_mask(s, grounding.threshold) for s in sentences]
    fig = plt.figure(figsize=(11, 5.5), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=(1, 1.1), height_ratios=(1.6, 1))
    ax, ax_text = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[0, 1])
    ax.imshow(color_overlay(image, masks, alpha, selected) if masks else image,
              cmap=None if masks else "gray", interpolation="nearest")
    if panels and len(masks) > 1:  # each mask alone: overlapping masks stay readable
        strip = grid[1, 1].subgridspec(1, len(masks))
        for k in range(len(masks)):
            small = fig.add_subplot(strip[0, k])
            small.imshow(color_overlay(image, masks, alpha, selected=k), interpolation="nearest")
            note = " (low confidence)" if getattr(sentences[k], "low_confidence", False) else ""
            small.set_title(f"{k + 1}" + ("" if sentences[k].located else " (not located)") + note,
                            color=sentence_color(k), fontsize=9)
            small.set_xticks([])
            small.set_yticks([])
    handles = [Patch(facecolor=sentence_color(k), edgecolor=sentence_color(k), alpha=0.8 if k in shown else 0.25,
                     label=_label(k, sentences[k], wrap)) for k in range(len(sentences))]
    if truths is not None:
        if len(truths) != len(sentences):
            raise ValueError(f"got {len(truths)} true masks for {len(sentences)} positive sentences")
        for k in shown:
            if truths[k] is not None and np.any(truths[k]):
                check_same_shape(image, truths[k], "true mask")
                ax.contour(np.asarray(truths[k]) > 0, levels=[0.5], colors=[sentence_color(k)],
                           linewidths=1.2, linestyles=TRUTH_STYLE)
        handles.append(Line2D([], [], color="black", linestyle=TRUTH_STYLE,
                              label="true lesion of each sentence (dashed, in its colour)"))
    if mask is not None and np.any(mask):
        check_same_shape(image, mask, "mask")
        ax.contour(np.asarray(mask) > 0, levels=[0.5], colors=[CASE_TRUTH_COLOR], linewidths=1.0)
        handles.append(Line2D([], [], color=CASE_TRUTH_COLOR, label="true mask of the case"))
    dropped = [(text, label) for text, label in grounding.labels if label != POSITIVE]
    handles += [Patch(facecolor="none", edgecolor="none", label=textwrap.fill(f"dropped ({label}): {text}", wrap))
                for text, label in dropped]
    if not sentences:
        handles.insert(0, Patch(facecolor="none", edgecolor="none", label=NO_FINDING_NOTE))
    ax.set_xticks([])
    ax.set_yticks([])
    ax_text.axis("off")
    legend = ax_text.legend(handles=handles, loc="upper left", frameon=False, fontsize=8,
                            title=f"mask: p >= {grounding.threshold:.2f}", alignment="left")
    for text, handle in zip(legend.get_texts(), handles):
        if handle.get_label().startswith("dropped"):
            text.set_color("gray")
    if title:
        fig.suptitle(title)
    return fig


def report_html(grounding: Any, selected: int | None = None) -> str:
    """The report as HTML, in its order: each positive sentence highlighted in its mask's colour
    and numbered (the `selected` one underlined, the others faded when one is selected), "not
    located" after a sentence whose mask is empty, the dropped sentences struck through with their
    label."""
    sentences = list(grounding.sentences)
    shown = set(_shown(len(sentences), selected)) if sentences else set()
    parts, k = [], 0
    for text, label in grounding.labels:
        if label == POSITIVE:
            r, g, b = (int(255 * c) for c in to_rgb(sentence_color(k)))
            fade = 0.4 if k in shown else 0.12
            style = (f"background: rgba({r}, {g}, {b}, {fade}); border-bottom: 3px solid "
                     f"rgb({r}, {g}, {b}); padding: 0 2px")
            if selected == k:
                style += "; font-weight: bold"
            note = "" if sentences[k].located else " <i>(not located)</i>"
            note += " <i>(low confidence)</i>" if getattr(sentences[k], "low_confidence", False) else ""
            note += "" if getattr(sentences[k], "drawn", True) else f" <i>({NOT_DRAWN_NOTE})</i>"
            parts.append(f'<span style="{style}"><b>{k + 1}</b> {html.escape(text)}</span>{note}')
            k += 1
        else:
            parts.append(f'<s style="color: gray">{html.escape(text)}</s> <small>({label})</small>')
    lead = "" if sentences else f"<b>{NO_FINDING_NOTE}</b><br>"
    return lead + " ".join(parts)


def save_grounding(image: np.ndarray, grounding: Any, out: str | Path,
                   mask_base: str | Path | None = None, dpi: int = 110) -> list[dict]:
    """Write `report_figure` to `out` (PNG) and each positive sentence's mask, uint8 0/255 at the
    image's resolution, to `<mask_base stem>_<index>.png` (default: beside `out`).

    Returns `grounding.table()` with each positive sentence's `mask_file`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = report_figure(image, grounding)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    base = Path(mask_base or out)
    rows = grounding.table()
    for row, sentence in zip([r for r in rows if r["index"]], grounding.sentences):
        path = base.with_name(f"{base.stem}_{row['index']}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((sentence_mask(sentence, grounding.threshold) * 255).astype(np.uint8)).save(path)
        row["mask_file"] = str(path)
    return rows


def table_lines(rows: Sequence[dict]) -> list[str]:
    """`ReportGrounding.table()` rows as lines for a terminal, one per sentence in report order."""
    lines = []
    for row in rows:
        if row["index"]:
            state = _state(row["located"], row["area"], row["confidence"], row.get("low_confidence", False),
                           row.get("drawn", True))
            lines.append(f"{row['index']}. {row['text']}  [{state}]"
                         + (f"  mask: {row['mask_file']}" if row.get("mask_file") else ""))
        else:
            lines.append(f"-  {row['text']}  [dropped: {row['label']}]")
    if not any(row["index"] for row in rows):
        lines.append(f"{NO_FINDING_NOTE}: no sentence describes something present, so there is "
                     "nothing to locate")
    return lines
