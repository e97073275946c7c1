"""Plots, overlays and the interactive case explorer.

Every plotting function returns a matplotlib `Figure` and never calls `plt.show()`: a notebook
displays the returned figure, a script saves it. Images are uint8 grayscale `[H, W]`, masks uint8
{0, 1} `[H, W]`, probability maps float32 `[H, W]` in [0, 1].

Radiological convention: the patient's left appears on the image's right, so labels that name a
side name the patient's side.
"""
from __future__ import annotations

import functools
import math
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from PIL import Image

if TYPE_CHECKING:
    import ipywidgets as widgets

TRUE_COLOR = "lime"
PRED_COLOR = "red"
OUTLINE_RGB = (255, 255, 255)
HEAT_CMAP = "jet"

DEFAULT_STOPWORDS = frozenset(
    """a about above after again all also an and any are as at be been being below both but by can
    could did do does each for from further had has have having here how if in into is it its itself
    may more most no nor not now of off on once only or other over per same seen should so some such
    than that the their them then there these they this those through to too under until up upon very
    was were what when where which while who will with within without would xxxx""".split()
)

COUNT_KEYS = ("images", "frontal", "lateral", "reports", "masks", "labeled_cases", "orphan_masks",
              "problems")
EXPLORE_COLUMNS = ("case_id", "image_path", "mask_path", "text", "split")


# ----------------------------------------------------------------------------------------------
# small shared pieces
# ----------------------------------------------------------------------------------------------
def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two binary masks `[H, W]` (any dtype, nonzero = foreground): 2|A∩B| / (|A| + |B|),
    1.0 when both are empty."""
    pred, target = np.asarray(pred) > 0, np.asarray(target) > 0
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and mask {target.shape} differ in shape")
    total = int(pred.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & target).sum()) / total


def _wrap(text: str, width: int) -> str:
    return textwrap.fill(" ".join(str(text).split()), width=width)


def _clean_axes(ax: Axes) -> None:
    """No ticks or frame, but unlike `ax.axis("off")` the x label stays: it carries the text."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _grid(n: int, ncols: int, panel: tuple[float, float]) -> tuple[Figure, list[Axes]]:
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


def _check_same_shape(image: np.ndarray, other: np.ndarray, name: str) -> None:
    if np.shape(image) != np.shape(other):
        raise ValueError(f"image {np.shape(image)} and {name} {np.shape(other)} must have the same "
                         f"[H, W] shape; resize the {name} to the image first")


def _draw_case(ax: Axes, image: np.ndarray, text: str, wrap: int, *, mask: np.ndarray | None = None,
               prob: np.ndarray | None = None, threshold: float = 0.5, alpha: float = 0.4,
               title: str | None = None) -> None:
    """Image, optional heat map, true contour (green), predicted contour (red), text beneath."""
    ax.imshow(image, cmap="gray", interpolation="nearest")
    if prob is not None:
        _check_same_shape(image, prob, "probability map")
        _heat(ax, prob, threshold, alpha)
        _contour(ax, np.asarray(prob) >= threshold, PRED_COLOR)
    if mask is not None:
        _check_same_shape(image, mask, "mask")
        _contour(ax, mask, TRUE_COLOR)
    _clean_axes(ax)
    ax.set_xlabel(_wrap(text, wrap), fontsize=7, loc="left")
    if title:
        ax.set_title(title, fontsize=9)


# ----------------------------------------------------------------------------------------------
# notebook 01: exploration
# ----------------------------------------------------------------------------------------------
def plot_counts(summary: dict[str, int]) -> Figure:
    """Bar chart of catalog counts, the known keys (`COUNT_KEYS`) first, each bar labelled with its
    value."""
    names = [k for k in COUNT_KEYS if k in summary] + [k for k in summary if k not in COUNT_KEYS]
    if not names:
        raise ValueError("summary is empty: expected counts such as 'images', 'reports', 'masks'")
    values = [int(summary[k]) for k in names]
    fig, ax = plt.subplots(figsize=(1 + 0.9 * len(names), 3.5), layout="constrained")
    bars = ax.bar(names, values, color="tab:blue")
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel("count")
    ax.set_title("dataset catalog")
    ax.tick_params(axis="x", labelrotation=30)
    return fig


def plot_text_lengths(n_words: Sequence[int], n_tokens: Sequence[int], max_tokens: int = 77) -> Figure:
    """Histograms of words and tokens per text; the token panel marks `max_tokens` and its title
    gives the share of texts longer than that (e.g. "12.3% over 77 tokens")."""
    n_words, n_tokens = np.asarray(n_words), np.asarray(n_tokens)
    if n_words.size == 0 or n_tokens.size == 0:
        raise ValueError("no texts: n_words and n_tokens must not be empty")
    share = 100.0 * float(np.mean(n_tokens > max_tokens))
    fig, (ax_w, ax_t) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    ax_w.hist(n_words, bins=30, color="tab:blue")
    ax_w.set_xlabel("words per text")
    ax_w.set_ylabel("texts")
    ax_w.set_title(f"words (median {np.median(n_words):.0f})")
    ax_t.hist(n_tokens, bins=30, color="tab:orange")
    ax_t.axvline(max_tokens, color="red", linestyle="--", label=f"text encoder limit ({max_tokens})")
    ax_t.set_xlabel("tokens per text")
    ax_t.set_title(f"tokens: {share:.1f}% over {max_tokens}")
    ax_t.legend(fontsize=8)
    return fig


def plot_term_frequencies(texts: Sequence[str], top: int = 20,
                          stopwords: set[str] | None = None) -> Figure:
    """Horizontal bars of the `top` most frequent lowercase words of at least two letters.

    `stopwords` replaces `DEFAULT_STOPWORDS` (pass `DEFAULT_STOPWORDS | {...}` to extend it).
    """
    stop = DEFAULT_STOPWORDS if stopwords is None else stopwords
    counts = Counter(w for t in texts for w in re.findall(r"[a-z]{2,}", str(t).lower()) if w not in stop)
    terms, freqs = zip(*counts.most_common(top)) if counts else ((), ())
    fig, ax = plt.subplots(figsize=(6, 1 + 0.25 * max(len(terms), 4)), layout="constrained")
    ax.barh(terms[::-1], freqs[::-1], color="tab:green")
    ax.set_xlabel("occurrences")
    ax.set_title(f"top {len(terms)} terms in {len(texts)} texts")
    return fig


def plot_mask_stats(areas: Sequence[float], centroids: np.ndarray) -> Figure:
    """Where and how large the labelled pathologies are.

    Args:
        areas: mask area as a fraction of the image, one per mask.
        centroids: float `[N, 2]` of (x, y) mask centroids normalised to [0, 1] image coordinates
            (x to the image's right, y down).

    Left: histogram of areas. Right: counts in 3 rows (upper / middle / lower) x 2 columns, the
    columns named by the PATIENT's side (image-left = patient's right), with the centroids on top.
    """
    areas = np.asarray(areas, dtype=np.float64)
    centroids = np.asarray(centroids, dtype=np.float64)
    if centroids.size == 0:
        centroids = centroids.reshape(0, 2)
    if centroids.ndim != 2 or centroids.shape[1] != 2:
        raise ValueError(f"centroids must be [N, 2] (x, y), got shape {centroids.shape}")
    if centroids.size and (centroids.min() < 0 or centroids.max() > 1):
        raise ValueError("centroids must be (x, y) in [0, 1]: divide pixel coordinates by the image "
                         "width and height")
    counts, _, _ = np.histogram2d(centroids[:, 1], centroids[:, 0],
                                  bins=[[0, 1 / 3, 2 / 3, 1], [0, 0.5, 1]])
    fig, (ax_a, ax_c) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    ax_a.hist(areas, bins=20, color="tab:purple")
    ax_a.set_xlabel("mask area (fraction of image)")
    ax_a.set_ylabel("masks")
    median = f", median {np.median(areas):.1%}" if areas.size else ""
    ax_a.set_title(f"mask areas (n={areas.size}{median})")

    ax_c.imshow(counts, extent=(0, 1, 1, 0), cmap="Blues", aspect="auto", vmin=0)
    for row in range(3):
        for col in range(2):
            dark = counts[row, col] > counts.max() / 2
            ax_c.text(0.25 + 0.5 * col, (row + 0.5) / 3, f"{counts[row, col]:.0f}", ha="center",
                      va="center", fontsize=12, color="white" if dark else "black")
    ax_c.scatter(centroids[:, 0], centroids[:, 1], s=6, c="tab:red", alpha=0.6)
    ax_c.set_xlim(0, 1)
    ax_c.set_ylim(1, 0)
    ax_c.set_xticks([0.25, 0.75], ["patient's right", "patient's left"])
    ax_c.set_yticks([1 / 6, 0.5, 5 / 6], ["upper", "middle", "lower"])
    ax_c.set_title("mask centroids (image as displayed)")
    return fig


def plot_case_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
                   texts: Sequence[str], titles: Sequence[str] | None = None, ncols: int = 4,
                   wrap: int = 40) -> Figure:
    """Cases side by side: each image with its mask contour and its text wrapped beneath.
    A `None` mask draws no contour."""
    if not len(images) == len(masks) == len(texts):
        raise ValueError(f"got {len(images)} images, {len(masks)} masks and {len(texts)} texts; "
                         "pass one of each per case")
    fig, axes = _grid(len(images), ncols, panel=(3.0, 3.6))
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
    fig, axes = _grid(len(panels), ncols=3, panel=(4.0, 3.0))
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
    fig, axes = _grid(min(n, len(images)), ncols, panel=(3.0, 3.6))
    for i, ax in enumerate(axes):
        if dices is not None:
            title = f"Dice {dices[i]:.2f}"
        elif masks[i] is not None:
            title = f"Dice {dice(np.asarray(probs[i]) >= threshold, masks[i]):.2f}"
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
# ----------------------------------------------------------------------------------------------
def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask `[H, W]`: in the mask with a 4-neighbour outside it."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~interior


def overlay(image: np.ndarray, prob: np.ndarray, threshold: float = 0.5, alpha: float = 0.4,
            cmap: str | Colormap = HEAT_CMAP) -> np.ndarray:
    """Blend a probability heat map over a grayscale image.

    Args:
        image: uint8 `[H, W]`.
        prob: float `[H, W]` in [0, 1].
        threshold: the mask threshold; the heat map is blended where `prob >= threshold / 2` and
            the mask `prob >= threshold` is outlined in white.
        alpha: opacity of the heat map.

    Returns:
        uint8 `[H, W, 3]` RGB; equal to the gray image wherever `prob < threshold / 2`.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 grayscale [H, W], got {image.dtype} {image.shape}")
    _check_same_shape(image, prob, "probability map")
    prob = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
    gray = np.repeat(image[..., None].astype(np.float32), 3, axis=-1)
    heat = colormaps.get_cmap(cmap)(prob)[..., :3].astype(np.float32) * 255.0
    weight = (alpha * (prob >= threshold / 2))[..., None]
    rgb = np.rint(gray * (1 - weight) + heat * weight).astype(np.uint8)
    rgb[_outline(prob >= threshold)] = OUTLINE_RGB
    return rgb


def case_figure(image: np.ndarray, prob: np.ndarray, text: str, mask: np.ndarray | None = None,
                threshold: float = 0.5, alpha: float = 0.4, title: str | None = None) -> Figure:
    """Four panels: original | ground truth (or "no mask") | heat map with colour bar | overlay with
    the thresholded outline. The text is wrapped beneath; with a mask, the title gives the Dice of
    `prob >= threshold`."""
    _check_same_shape(image, prob, "probability map")
    fig, (ax_img, ax_gt, ax_heat, ax_ov) = plt.subplots(1, 4, figsize=(14, 4.2), layout="constrained")
    ax_img.imshow(image, cmap="gray")
    ax_img.set_title("image")
    ax_gt.imshow(image, cmap="gray")
    if mask is None:
        ax_gt.text(0.5, 0.5, "no mask", transform=ax_gt.transAxes, ha="center", va="center",
                   color="white", fontsize=12, bbox={"facecolor": "black", "alpha": 0.6})
    else:
        _check_same_shape(image, mask, "mask")
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
    if mask is not None:
        parts.append(f"Dice {dice(np.asarray(prob) >= threshold, mask):.2f}")
    if parts:
        fig.suptitle(" | ".join(parts))
    fig.supxlabel(_wrap(text, 140), fontsize=9)
    return fig


def save_overlay_png(path: str | Path, image: np.ndarray, prob: np.ndarray, threshold: float = 0.5,
                     alpha: float = 0.4) -> Path:
    """Write `overlay(image, prob, ...)` as an RGB PNG at the image's resolution; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, prob, threshold, alpha), mode="RGB").save(path, format="PNG")
    return path


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    """Write `fig` as a PNG, creating parent folders. Returns nothing, so that a notebook cell
    ending with it shows only the figure."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")


def _case_table(cases: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in EXPLORE_COLUMNS if c not in cases.columns]
    if missing:
        raise ValueError(f"cases lacks column(s) {missing}; expected {list(EXPLORE_COLUMNS)}")
    if cases.empty:
        raise ValueError("cases is empty: nothing to explore")
    duplicated = cases["case_id"][cases["case_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"case_id must be unique; repeated: {duplicated[:5]}")
    table = cases.astype({"case_id": str, "split": str}).set_index("case_id", drop=False)
    return table.assign(text=table["text"].fillna("").astype(str))


def _fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary uint8 mask at the image's `shape` (hand-made masks may have another resolution)."""
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    if mask.shape != shape:
        mask = np.asarray(Image.fromarray(mask).resize(shape[::-1], Image.NEAREST))
    return mask


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^\w.-]+", "_", case_id)


def explore(cases: pd.DataFrame, segmenter: Any, *,
            load_image: Callable[[str], np.ndarray] | None = None,
            load_mask: Callable[[str], np.ndarray] | None = None,
            plot_fn: Callable[..., Figure] = case_figure,
            save_dir: str | Path = ".") -> widgets.VBox:
    """Interactive explorer: pick a case, edit its text, move the threshold and opacity, save PNGs.

    Args:
        cases: columns `case_id, image_path, mask_path, text, split`; a NaN/None `mask_path`
            means no mask.
        segmenter: has `.predict(image, text) -> float32 [H, W]` and a float `.threshold`
            (`helpers.inference.Segmenter`).
        load_image, load_mask: path -> uint8 `[H, W]`; default `helpers.data.load_gray` and
            `helpers.data.load_mask`. A mask of another resolution is resized to the image.
        plot_fn: called as `plot_fn(image, prob, text, mask=, threshold=, alpha=, title=case_id)`,
            returns a Figure.
        save_dir: where "Save PNG" writes `<case_id>.png`.

    Returns:
        The widget box. For scripts and tests it also carries `controls` (dict of the widgets:
        split, case, prev, next, threshold, alpha, text, reset, save), `refresh()` (re-plot now),
        `last_figure` (the latest Figure, closed after display) and `last_saved` (Path or None).
        Predictions are cached per (case_id, text): threshold and opacity only re-plot.
    """
    import ipywidgets as widgets
    from IPython.display import clear_output, display

    if load_image is None or load_mask is None:
        from helpers import data

        load_image = load_image or data.load_gray
        load_mask = load_mask or data.load_mask
    table = _case_table(cases)
    save_dir = Path(save_dir)

    @functools.lru_cache(maxsize=4)
    def load_case(case_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        row = table.loc[case_id]
        image = np.asarray(load_image(str(row["image_path"])))
        has_mask = not pd.isna(row["mask_path"]) and str(row["mask_path"]) != ""
        mask = _fit_mask(load_mask(str(row["mask_path"])), image.shape) if has_mask else None
        return image, mask

    @functools.lru_cache(maxsize=32)
    def predict(case_id: str, text: str) -> np.ndarray:
        return np.asarray(segmenter.predict(load_case(case_id)[0], text), dtype=np.float32)

    def split_ids(split: str) -> list[str]:
        return list(table["case_id"] if split == "all" else table.loc[table["split"] == split, "case_id"])

    first_ids = split_ids("all")
    threshold0 = float(np.clip(getattr(segmenter, "threshold", 0.5), 0.05, 0.95))
    controls = {
        "split": widgets.Dropdown(options=["all", *pd.unique(table["split"])], value="all",
                                  description="split"),
        "case": widgets.Dropdown(options=first_ids, value=first_ids[0], description="case"),
        "prev": widgets.Button(description="◀ Previous"),
        "next": widgets.Button(description="Next ▶"),
        "threshold": widgets.FloatSlider(value=threshold0, min=0.05, max=0.95, step=0.01,
                                         description="threshold", continuous_update=False),
        "alpha": widgets.FloatSlider(value=0.4, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False),
        "text": widgets.Textarea(value=table.loc[first_ids[0], "text"], description="text",
                                 continuous_update=False,
                                 layout=widgets.Layout(width="100%", height="80px")),
        "reset": widgets.Button(description="Reset text"),
        "save": widgets.Button(description="Save PNG"),
    }
    status = widgets.Label(value="")
    out = widgets.Output()
    box = widgets.VBox([
        widgets.HBox([controls["split"], controls["case"], controls["prev"], controls["next"]]),
        widgets.HBox([controls["threshold"], controls["alpha"]]),
        controls["text"],
        widgets.HBox([controls["reset"], controls["save"], status]),
        out,
    ])
    box.controls, box.last_figure, box.last_saved = controls, None, None
    # Moving to another case sets several widgets; `holding` keeps their observers from re-plotting
    # once per widget.
    holding = [False]

    def refresh() -> None:
        case_id, text = controls["case"].value, controls["text"].value
        with out:
            image, mask = load_case(case_id)
            fig = plot_fn(image, predict(case_id, text), text, mask=mask,
                          threshold=controls["threshold"].value, alpha=controls["alpha"].value,
                          title=case_id)
            clear_output(wait=True)
            display(fig)
            plt.close(fig)
            box.last_figure = fig
        index = controls["case"].options.index(case_id)
        controls["prev"].disabled = index == 0
        controls["next"].disabled = index == len(controls["case"].options) - 1

    def show_case(case_id: str) -> None:
        holding[0] = True
        try:
            controls["case"].value = case_id
            controls["text"].value = table.loc[case_id, "text"]
            status.value = ""
        finally:
            holding[0] = False
        refresh()

    def on_change(_change: dict) -> None:
        if not holding[0]:
            refresh()

    def on_case(change: dict) -> None:
        if not holding[0] and change["new"] is not None:
            show_case(change["new"])

    def on_split(change: dict) -> None:
        ids = split_ids(change["new"])
        holding[0] = True
        try:
            controls["case"].options = ids
        finally:
            holding[0] = False
        show_case(ids[0])

    def step(offset: int) -> None:
        options = controls["case"].options
        index = options.index(controls["case"].value) + offset
        if 0 <= index < len(options):
            show_case(options[index])

    def on_reset(_button: Any) -> None:
        controls["text"].value = table.loc[controls["case"].value, "text"]

    def on_save(_button: Any) -> None:
        if box.last_figure is None:
            return
        save_dir.mkdir(parents=True, exist_ok=True)
        path = save_dir / f"{_safe_name(controls['case'].value)}.png"
        box.last_figure.savefig(path, dpi=120)
        box.last_saved = path
        status.value = f"saved {path}"

    controls["split"].observe(on_split, names="value")
    controls["case"].observe(on_case, names="value")
    for name in ("threshold", "alpha", "text"):
        controls[name].observe(on_change, names="value")
    controls["prev"].on_click(lambda _b: step(-1))
    controls["next"].on_click(lambda _b: step(+1))
    controls["reset"].on_click(on_reset)
    controls["save"].on_click(on_save)
    box.refresh = refresh
    refresh()
    return box
