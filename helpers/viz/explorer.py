"""The interactive case explorer (ipywidgets): pick a case, edit its text, move the threshold.

Works with ipywidgets 7 (Colab's preinstalled version) and 8: only widgets, `observe`, `on_click`
and `Output` are used.
"""
from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.io import fit_mask, load_gray
from ..data.io import load_mask as load_mask_file
from .plots import case_figure
from .report_view import LOW_CONFIDENCE_NOTE, report_figure, report_html, sentence_color
from ..text.sentences import NO_FINDING_NOTE, describes_finding, select_sentences

if TYPE_CHECKING:
    import ipywidgets as widgets

EXPLORE_COLUMNS = ("case_id", "image_path", "mask_path", "text", "split")


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



def _safe_name(case_id: str) -> str:
    return re.sub(r"[^\w.-]+", "_", case_id)


def sentences_html(segmenter: Any, text: str) -> str:
    """The sentences the model is given (kept) and those it is not (dropped, struck through),
    for a segmenter with `.sentences(text)` (`helpers.inference.Segmenter`); "" otherwise."""
    if not hasattr(segmenter, "sentences"):
        return ""
    chosen = segmenter.sentences(text)
    kept = " ".join(html.escape(s) for s in chosen.kept)
    dropped = " ".join(f"<s>{html.escape(s)}</s>" for s in chosen.dropped)
    note = " (no positive sentence: the whole text)" if getattr(chosen, "fallback", False) else ""
    nothing = "" if describes_finding(text) else f"<b>{NO_FINDING_NOTE}</b><br>"
    return (f"{nothing}<b>model reads{note}:</b> {kept}"
            + (f"<br><b>dropped (normal or negated):</b> {dropped}" if dropped else ""))


def sentence_table(texts: Sequence[str]) -> pd.DataFrame:
    """One row per text: the sentences `select_sentences` keeps and those it drops, " | "-joined."""
    chosen = [select_sentences(t) for t in texts]
    return pd.DataFrame({"kept": [" | ".join(c.kept) for c in chosen],
                         "dropped": [" | ".join(c.dropped) for c in chosen]})


def explore(cases: pd.DataFrame, segmenter: Any, *,
            load_image: Callable[[str], np.ndarray] | None = None,
            load_mask: Callable[[str], np.ndarray] | None = None,
            plot_fn: Callable[..., Figure] = case_figure,
            save_dir: str | Path = ".") -> widgets.VBox:
    """Interactive explorer: pick a case, edit its text, move the threshold and opacity, save PNGs;
    "per sentence" reads the report sentence by sentence (one coloured mask per positive sentence,
    the report highlighted in their colours, the dropped sentences struck through) and a click on
    a sentence's button shows only its mask.

    Args:
        cases: columns `case_id, image_path, mask_path, text, split`; a NaN/None `mask_path`
            means no mask.
        segmenter: has `.predict(image, text) -> float32 [H, W]` and a float `.threshold`
            (`helpers.inference.Segmenter`); "per sentence" needs `.ground_report(image, text)`;
            with `.locate(prob, text, threshold)` a low-confidence mask is shown and said so.
        load_image, load_mask: path -> uint8 `[H, W]`; default `data.io.load_gray` and
            `data.io.load_mask`. A mask of another resolution is resized to the image.
        plot_fn: called as `plot_fn(image, prob, text, mask=, threshold=, alpha=, title=case_id)`,
            returns a Figure.
        save_dir: where "Save PNG" writes `<case_id>.png`.

    Returns:
        The widget box. For scripts and tests it also carries `controls` (dict of the widgets:
        split, case, prev, next, threshold, alpha, per_sentence, text, reset, save),
        `sentence_buttons` (the box of per-sentence buttons: "all", then one per positive
        sentence in its colour), `refresh()` (re-plot now),
        `last_figure` (the latest Figure, closed after display) and `last_saved` (Path or None).
        Predictions are cached per (case_id, text): threshold and opacity only re-plot.
    """
    import ipywidgets as widgets
    from IPython.display import clear_output, display

    load_image = load_image or load_gray
    load_mask = load_mask or load_mask_file
    table = _case_table(cases)
    save_dir = Path(save_dir)

    @functools.lru_cache(maxsize=4)
    def load_case(case_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        row = table.loc[case_id]
        image = np.asarray(load_image(str(row["image_path"])))
        has_mask = not pd.isna(row["mask_path"]) and str(row["mask_path"]) != ""
        mask = fit_mask(load_mask(str(row["mask_path"])), image.shape) if has_mask else None
        return image, mask

    @functools.lru_cache(maxsize=32)
    def predict(case_id: str, text: str) -> np.ndarray:
        return np.asarray(segmenter.predict(load_case(case_id)[0], text), dtype=np.float32)

    @functools.lru_cache(maxsize=16)
    def ground(case_id: str, text: str) -> Any:
        return segmenter.ground_report(load_case(case_id)[0], text)

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
        "per_sentence": widgets.Checkbox(value=False, description="per sentence",
                                         disabled=not hasattr(segmenter, "ground_report")),
        "text": widgets.Textarea(value=table.loc[first_ids[0], "text"], description="text",
                                 continuous_update=False,
                                 layout=widgets.Layout(width="100%", height="80px")),
        "reset": widgets.Button(description="Reset text"),
        "save": widgets.Button(description="Save PNG"),
    }
    status = widgets.Label(value="")
    given = widgets.HTML(value="")  # which sentences the model reads
    sentence_buttons = widgets.HBox([])  # per sentence: "all", then one button per sentence
    out = widgets.Output()
    box = widgets.VBox([
        widgets.HBox([controls["split"], controls["case"], controls["prev"], controls["next"]]),
        widgets.HBox([controls["threshold"], controls["alpha"], controls["per_sentence"]]),
        controls["text"],
        given,
        sentence_buttons,
        widgets.HBox([controls["reset"], controls["save"], status]),
        out,
    ])
    box.controls, box.given, box.last_figure, box.last_saved = controls, given, None, None
    box.sentence_buttons = sentence_buttons
    # Moving to another case sets several widgets; `holding` keeps their observers from re-plotting
    # once per widget.
    holding = [False]
    selected: list[int | None] = [None]  # per sentence: the sentence shown alone (None: all)

    def select(index: int | None) -> None:
        selected[0] = index
        refresh()

    def sentence_figure(case_id: str, text: str) -> Figure:
        grounding = ground(case_id, text).at_threshold(controls["threshold"].value)
        if selected[0] is not None and selected[0] >= len(grounding.sentences):
            selected[0] = None
        given.value = report_html(grounding, selected[0])
        buttons = [widgets.Button(description="all", tooltip="every sentence's mask")]
        buttons[0].on_click(lambda _b: select(None))
        for k, sentence in enumerate(grounding.sentences):
            button = widgets.Button(description=str(k + 1), tooltip=sentence.text,
                                    layout=widgets.Layout(width="48px"))
            button.style.button_color = sentence_color(k)
            button.on_click(lambda _b, k=k: select(k))
            buttons.append(button)
        sentence_buttons.children = buttons
        image, mask = load_case(case_id)
        return report_figure(image, grounding, selected=selected[0], mask=mask,
                             alpha=controls["alpha"].value, title=case_id)

    def refresh() -> None:
        case_id, text = controls["case"].value, controls["text"].value
        with out:
            if controls["per_sentence"].value:
                fig = sentence_figure(case_id, text)
            else:
                given.value = sentences_html(segmenter, text)
                sentence_buttons.children = []
                image, mask = load_case(case_id)
                prob, threshold = predict(case_id, text), controls["threshold"].value
                if hasattr(segmenter, "locate"):  # a drawn finding left nothing above the threshold
                    located, low = segmenter.locate(prob, text, threshold)
                    if low:  # shown as the mask: raised to the threshold, said in the text above
                        prob = np.where(located, np.maximum(prob, threshold), prob)
                        given.value += f"<br><i>{LOW_CONFIDENCE_NOTE}</i>"
                fig = plot_fn(image, prob, text, mask=mask, threshold=threshold,
                              alpha=controls["alpha"].value, title=case_id)
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
            selected[0] = None
        finally:
            holding[0] = False
        refresh()

    def on_change(_change: dict) -> None:
        if not holding[0]:
            refresh()

    def on_text(_change: dict) -> None:
        selected[0] = None  # another report: its sentences are others
        on_change(_change)

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
    for name in ("threshold", "alpha", "per_sentence"):
        controls[name].observe(on_change, names="value")
    controls["text"].observe(on_text, names="value")
    controls["prev"].on_click(lambda _b: step(-1))
    controls["next"].on_click(lambda _b: step(+1))
    controls["reset"].on_click(on_reset)
    controls["save"].on_click(on_save)
    box.refresh = refresh
    refresh()
    return box
