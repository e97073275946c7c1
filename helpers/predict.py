"""The `predict` command of `python -m helpers`: one image and one text -> an overlay and a mask,
or, with `--per-sentence`, a report read sentence by sentence -> one mask per sentence, a table
and its JSON."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_predict(args) -> None:
    import numpy as np
    from PIL import Image

    from .inference.segmenter import Segmenter, to_gray
    from .viz.overlay import save_overlay_png
    from .text.sentences import NO_FINDING_NOTE, describes_finding
    from .viz.report_view import LOW_CONFIDENCE_NOTE

    if args.json and not args.per_sentence:
        raise ValueError("--json gives the per-sentence table: add --per-sentence")
    seg = Segmenter.from_checkpoint(args.checkpoint)
    image = to_gray(args.image)
    if args.per_sentence:
        return _predict_per_sentence(args, seg, image)
    prob = seg.predict(image, args.text)
    threshold = seg.threshold if args.threshold is None else args.threshold
    mask, low = seg.locate(prob, args.text, threshold)
    save_overlay_png(args.out, image, np.where(mask, np.maximum(prob, threshold), prob), threshold=threshold)
    print(f"model: {seg.describe()}\noverlay: {args.out}")
    if args.mask_out:
        Path(args.mask_out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((mask * 255).astype("uint8")).save(args.mask_out)
        print(f"mask: {args.mask_out}")
    print(f"predicted area: {mask.mean():.2%} of the image" + (f" ({LOW_CONFIDENCE_NOTE})" if low else ""))
    if not describes_finding(args.text):
        print(f"{NO_FINDING_NOTE}: the text has no sentence about something present, so there is "
              "nothing to locate; the mask above is what the model gives such a text")


def _predict_per_sentence(args, seg, image) -> None:
    """`predict --per-sentence`: the coloured overlay, one PNG per mask, the table as lines and,
    with --json, as JSON (to stdout alone, the lines then to stderr, or to a file)."""
    from .viz.report_view import save_grounding, table_lines

    grounding = seg.ground_report(image, args.text, threshold=args.threshold)
    rows = save_grounding(image, grounding, args.out, args.mask_out)
    print(f"model: {seg.describe()}\noverlay: {args.out}", *table_lines(rows), sep="\n",
          file=sys.stderr if args.json == "-" else sys.stdout)
    text = json.dumps({"model": seg.describe(), "report": args.text, "threshold": grounding.threshold,
                       "overlay": str(args.out), "describes_finding": grounding.describes_finding,
                       "sentences": rows}, indent=1)
    if args.json == "-":
        print(text)
    elif args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """The `predict` command's flags."""
    p = sub.add_parser("predict", help="mask and overlay for one image and one text")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True, help="overlay PNG")
    p.add_argument("--mask-out", default=None, help="binary mask PNG (0/255); --per-sentence: "
                   "<name>_1.png, <name>_2.png, ... (default beside --out)")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--per-sentence", action="store_true", help="one mask per positive sentence, "
                   "each read alone, in its colour, with a legend that quotes the sentences")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="--per-sentence: the table as JSON to PATH (without PATH: to stdout)")
    p.set_defaults(func=cmd_predict)
