"""What the tests of helpers/data/ share: a tiny hand-made dataset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from helpers.core import layout

W, H = 40, 30  # size of the hand-made images


def frontal(uid: int) -> str:
    return f"{uid}_IM-{uid:04d}-1001.dcm.png"


def lateral(uid: int) -> str:
    return f"{uid}_IM-{uid:04d}-2001.dcm.png"


def box(value: int = 255, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """uint8 [H, W] with a `value` box covering 1/16 of the image."""
    mask = np.zeros(shape, np.uint8)
    mask[shape[0] // 4: shape[0] // 2, shape[1] // 4: shape[1] // 2] = value
    return mask


def make_root(root: Path, n: int = 4) -> Path:
    """A tiny dataset: reports 1..n, each with a frontal and a lateral image; no masks."""
    folder = root / layout.IMAGES_DIR
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    projections = []
    for uid in range(1, n + 1):
        for name, projection in ((frontal(uid), "Frontal"), (lateral(uid), "Lateral")):
            Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8)).save(folder / name)
            projections.append({"uid": uid, "filename": name, "projection": projection})
    reports = [{"uid": uid, "MeSH": "normal", "Problems": "normal", "image": "Xray Chest PA and Lateral",
                "indication": "Cough.", "comparison": "None.",
                "findings": f"Nodule in the right upper lobe, case {uid}. The XXXX are intact.",
                "impression": "Right upper lobe nodule."} for uid in range(1, n + 1)]
    reports[1]["findings"] = ""  # uid 2: the impression is used
    pd.DataFrame(reports).to_csv(root / layout.REPORTS_CSV, index=False)
    pd.DataFrame(projections).to_csv(root / layout.PROJECTIONS_CSV, index=False)
    return root
