"""Charts of the data for notebook 01: catalog counts, text lengths, frequent terms, and where and
how large the labelled pathologies are. Bars and histograms only (no X-ray is drawn: the case
figures are in `viz.plots`).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..core.anatomy import SIDES

DEFAULT_STOPWORDS = frozenset(
    """a about above after again all also an and any are as at be been being below both but by can
    could did do does each for from further had has have having here how if in into is it its itself
    may more most no nor not now of off on once only or other over per same seen should so some such
    than that the their them then there these they this those through to too under until up upon very
    was were what when where which while who will with within without would xxxx""".split()
)

COUNT_KEYS = ("images", "frontal", "lateral", "reports", "masks", "labeled_cases", "orphan_masks",
              "problems")


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
    ax_c.set_xticks([0.25, 0.75], [f"patient's {side}" for side in SIDES])  # image-left first
    ax_c.set_yticks([1 / 6, 0.5, 5 / 6], ["upper", "middle", "lower"])
    ax_c.set_title("mask centroids (image as displayed)")
    return fig

