"""Static figures for the notebooks: the data, training curves, predictions and ablations.

The figures that draw X-rays share the drawing primitives at the top; the charts of the data (bars
and histograms) live in `viz.charts`. Every function returns a
matplotlib `Figure` and never calls `plt.show()`: a notebook displays the returned figure, a script
saves it. Images are uint8 grayscale `[H, W]`, masks uint8 {0, 1} `[H, W]`, probability maps
float32 `[H, W]` in [0, 1].

Radiological convention: the patient's left appears on the image's right, so labels that name a
side name the patient's side.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..model.metrics import dice_score
from .overlay import HEAT_CMAP, check_same_shape, overlay
from ..text.sentences import NO_FINDING_NOTE, describes_finding

TRUE_COLOR = "lime"
PRED_COLOR = "red"


def _wrap(text: str, width: int) -> str:
    return textwrap.fill(" ".join(str(text).split()), width=width)


def _clean_axes(ax: Axes) -> None:
    """No ticks or frame, but unlike `ax.axis("off")` the x label stays: it carries the text."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _panels(n: int, ncols: int, panel: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """`n` panels in rows of `ncols`; the unused cells of the last row are removed."""
    if n < 1:
        raise ValueError("nothing to plot: got no cases")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows),
                             squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


def _contour(ax: Axes, mask: np.ndarray, color: str) -> None:
    """Outline of a binary mask; skipped when the mask has no edge (contour would warn)."""
    mask = np.asarray(mask) > 0
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.2)


def _heat(ax: Axes, prob: np.ndarray, threshold: float, alpha: float) -> None:
    """Heat map drawn over the image where `prob >= threshold / 2` (the same rule as `overlay`)."""
    shown = np.ma.masked_less(np.asarray(prob, dtype=np.float32), threshold / 2)
    ax.imshow(shown, cmap=HEAT_CMAP, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="nearest")


def _draw_case(ax: Axes, image: np.ndarray, text: str, wrap: int, *, mask: np.ndarray | None = None,
               prob: np.ndarray | None = None, threshold: float = 0.5, alpha: float = 0.4,
               title: str | None = None) -> None:
    """Image, optional heat map, true contour (green), predicted contour (red), text beneath."""
    ax.imshow(image, cmap="gray", interpolation="nearest")
    if prob is not None:
        check_same_shape(image, prob, "probability map")
        _heat(ax, prob, threshold, alpha)
        _contour(ax, np.asarray(prob) >= threshold, PRED_COLOR)
    if mask is not None:
        check_same_shape(image, mask, "mask")
        _contour(ax, mask, TRUE_COLOR)
    _clean_axes(ax)
    ax.set_xlabel(_wrap(text, wrap), fontsize=7, loc="left")
    if title:
        ax.set_title(title, fontsize=9)


# ----------------------------------------------------------------------------------------------
# notebook 01: exploration
# ----------------------------------------------------------------------------------------------
def plot_case_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
                   texts: Sequence[str], titles: Sequence[str] | None = None, ncols: int = 4,
                   wrap: int = 40) -> Figure:
    """Cases side by side: each image with its mask contour and its text wrapped beneath.
    A `None` mask draws no contour."""
    if not len(images) == len(masks) == len(texts):
        raise ValueError(f"got {len(images)} images, {len(masks)} masks and {len(texts)} texts; "
                         "pass one of each per case")
    fig, axes = _panels(len(images), ncols, panel=(3.0, 3.6))
    for i, ax in enumerate(axes):
        _draw_case(ax, images[i], texts[i], wrap, mask=masks[i], title=titles[i] if titles else None)
    return fig


# ----------------------------------------------------------------------------------------------
# notebook 02: Phase 1
# ----------------------------------------------------------------------------------------------
def _history_panels(columns: Sequence[str]) -> list[list[str]]:
    losses = [c for c in columns if "loss" in c]
    return ([losses] if losses else []) + [[c] for c in columns if "loss" not in c]


def plot_history(history: pd.DataFrame, metrics: Sequence[str] | None = None) -> Figure:
    """Training curves against `epoch`: all loss columns in one panel, every other metric alone
    (a learning-rate column `lr*` on a log scale). `metrics=None` plots every numeric column."""
    if "epoch" not in history.columns:
        raise ValueError(f"history needs an 'epoch' column; it has {list(history.columns)}")
    if metrics is None:
        metrics = [c for c in history.select_dtypes("number").columns if c != "epoch"]
    missing = [m for m in metrics if m not in history.columns]
    if missing:
        raise ValueError(f"history has no column(s) {missing}; it has {list(history.columns)}")
    panels = _history_panels(list(metrics))
    fig, axes = _panels(len(panels), ncols=3, panel=(4.0, 3.0))
    for ax, names in zip(axes, panels):
        for name in names:
            ax.plot(history["epoch"], history[name], marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_title(" / ".join(names))
        if len(names) > 1:
            ax.legend(fontsize=8)
        if names[0].startswith("lr") and (history[names[0]] > 0).all():
            ax.set_yscale("log")
    return fig


def _stack(array: np.ndarray, name: str) -> np.ndarray:
    """`[N, H, W]` or `[N, 1, H, W]` -> `[N, H, W]`."""
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"{name} must be [N, H, W] or [N, 1, H, W], got shape {array.shape}")
    return array


def plot_reconstructions(inputs: np.ndarray, masked: np.ndarray | None, outputs: np.ndarray,
                         n: int = 4) -> Figure:
    """One row per sample: input | masked input | reconstruction (the middle column only when
    `masked` is given). Arrays are float `[N, H, W]` (or `[N, 1, H, W]`) in any range; each row is
    shown with the value range of its input."""
    columns = {"input": _stack(inputs, "inputs")}
    if masked is not None:
        columns["masked input"] = _stack(masked, "masked")
    columns["reconstruction"] = _stack(outputs, "outputs")
    shapes = {k: v.shape for k, v in columns.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"inputs, masked and outputs must have the same shape, got {shapes}")
    n = min(n, len(columns["input"]))
    if n < 1:
        raise ValueError("nothing to plot: got no samples")
    fig, axes = plt.subplots(n, len(columns), figsize=(2.5 * len(columns), 2.5 * n), squeeze=False,
                             layout="constrained")
    for row in range(n):
        vmin, vmax = float(columns["input"][row].min()), float(columns["input"][row].max())
        for ax, (name, stack) in zip(axes[row], columns.items()):
            ax.imshow(stack[row], cmap="gray", vmin=vmin, vmax=vmax)
            _clean_axes(ax)
            if row == 0:
                ax.set_title(name)
    return fig


# ----------------------------------------------------------------------------------------------
# notebook 03: Phase 2
# ----------------------------------------------------------------------------------------------
def plot_prediction_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
                         probs: Sequence[np.ndarray], texts: Sequence[str],
                         dices: Sequence[float] | None = None, threshold: float = 0.5, n: int = 8,
                         ncols: int = 4, alpha: float = 0.4) -> Figure:
    """The first `n` cases: image, heat map, true contour (green), predicted contour (red), the text
    beneath and "Dice 0.83" in the title (computed here from the mask when `dices` is None)."""
    if not len(images) == len(masks) == len(probs) == len(texts):
        raise ValueError(f"got {len(images)} images, {len(masks)} masks, {len(probs)} probability "
                         f"maps and {len(texts)} texts; pass one of each per case")
    fig, axes = _panels(min(n, len(images)), ncols, panel=(3.0, 3.6))
    for i, ax in enumerate(axes):
        if dices is not None:
            title = f"Dice {dices[i]:.2f}"
        elif masks[i] is not None:
            title = f"Dice {dice_score(np.asarray(probs[i]) >= threshold, masks[i]):.2f}"
        else:
            title = None
        _draw_case(ax, images[i], texts[i], 40, mask=masks[i], prob=probs[i], threshold=threshold,
                   alpha=alpha, title=title)
    return fig


def plot_ablation(table: pd.DataFrame, metric: str = "dice", group: str = "variant") -> Figure:
    """Bars of `metric` per variant with 95% CI error bars (`{metric}_lo`, `{metric}_hi`); each bar
    is labelled with its value, and "± sd" when a `{metric}_sd` column (spread over seeds) exists.
    Variants come from column `group`, else from the index."""
    needed = [metric, f"{metric}_lo", f"{metric}_hi"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"ablation table lacks column(s) {missing}; it has {list(table.columns)}")
    names = [str(v) for v in (table[group] if group in table.columns else table.index)]
    mean = table[metric].to_numpy(dtype=float)
    err = np.vstack([mean - table[f"{metric}_lo"].to_numpy(float),
                     table[f"{metric}_hi"].to_numpy(float) - mean])
    labels = [f"{m:.3f}" for m in mean]
    if f"{metric}_sd" in table.columns:
        labels = [f"{lab}\n± {sd:.3f}" for lab, sd in zip(labels, table[f"{metric}_sd"])]
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(names), 4), layout="constrained")
    x = np.arange(len(names))
    bars = ax.bar(x, mean, yerr=err, capsize=4, color="tab:blue", alpha=0.85)
    ax.bar_label(bars, labels=labels, label_type="center", fontsize=8, color="white")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (95% CI)")
    ax.set_title(f"ablation: {metric} by {group}")
    return fig


def plot_counterfactual(image: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, text_a: str,
                        text_b: str, threshold: float = 0.5, alpha: float = 0.4) -> Figure:
    """The same image under two texts: two heat maps side by side (predicted outline in red) and a
    shared colour bar. Used for "left" vs "right" and for a user's own finding."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.6), layout="constrained")
    for ax, prob, text in zip(axes, (prob_a, prob_b), (text_a, text_b)):
        _draw_case(ax, image, "", 60, prob=prob, threshold=threshold, alpha=alpha)
        ax.set_title(_wrap(text, 50), fontsize=8)
        ax.set_xlabel(f"max p = {float(np.max(prob)):.2f}, area >= {threshold:.2f}: "
                      f"{float(np.mean(np.asarray(prob) >= threshold)):.1%}", fontsize=8)
    heat = ScalarMappable(Normalize(0, 1), HEAT_CMAP)
    fig.colorbar(heat, ax=list(axes), shrink=0.7, label="probability")
    return fig


# ----------------------------------------------------------------------------------------------
# notebook 04: inference figures and the explorer
def case_figure(image: np.ndarray, prob: np.ndarray, text: str, mask: np.ndarray | None = None,
                threshold: float = 0.5, alpha: float = 0.4, title: str | None = None) -> Figure:
    """Four panels: original | ground truth (or "no mask") | heat map with colour bar | overlay with
    the thresholded outline. The text is wrapped beneath; with a mask, the title gives the Dice of
    `prob >= threshold`."""
    check_same_shape(image, prob, "probability map")
    fig, (ax_img, ax_gt, ax_heat, ax_ov) = plt.subplots(1, 4, figsize=(14, 4.2), layout="constrained")
    ax_img.imshow(image, cmap="gray")
    ax_img.set_title("image")
    ax_gt.imshow(image, cmap="gray")
    if mask is None:
        ax_gt.text(0.5, 0.5, "no mask", transform=ax_gt.transAxes, ha="center", va="center",
                   color="white", fontsize=12, bbox={"facecolor": "black", "alpha": 0.6})
    else:
        check_same_shape(image, mask, "mask")
        _contour(ax_gt, mask, TRUE_COLOR)
    ax_gt.set_title("ground truth")
    heat = ax_heat.imshow(prob, cmap=HEAT_CMAP, vmin=0.0, vmax=1.0)
    fig.colorbar(heat, ax=ax_heat, fraction=0.046, pad=0.02)
    ax_heat.set_title("predicted probability")
    ax_ov.imshow(overlay(image, prob, threshold, alpha))
    ax_ov.set_title(f"overlay (outline: p >= {threshold:.2f})")
    for ax in (ax_img, ax_gt, ax_heat, ax_ov):
        _clean_axes(ax)
    parts = [title] if title else []
    if not describes_finding(text):  # a normal report: nothing to locate, whatever is drawn
        parts.append(NO_FINDING_NOTE)
    if mask is not None:
        parts.append(f"Dice {dice_score(np.asarray(prob) >= threshold, mask):.2f}")
    if parts:
        fig.suptitle(" | ".join(parts))
    fig.supxlabel(_wrap(text, 140), fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    """Write `fig` as a PNG, creating parent folders. Returns nothing, so that a notebook cell
    ending with it shows only the figure."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
