"""The demo's files: masks written in the styles of hand-made data, and the dataset's zip."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

MASK_FORMS = 5  # see save_mask


def save_mask(folder: Path, image_name: str, mask: np.ndarray, form: int) -> str:
    """Writes `mask` (uint8 [H, W] in {0, 1}) in one of MASK_FORMS hand-made styles; returns its name."""
    stem = image_name[: -len(".dcm.png")]
    if form == 1:  # exactly the image's name, upper-case extension
        name, pixels = f"{stem}.dcm.PNG", Image.fromarray(mask * 255)
    elif form == 2:  # no .dcm, RGB red on black
        rgb = np.zeros(mask.shape + (3,), np.uint8)
        rgb[..., 0] = mask * 255
        name, pixels = f"{stem}_mask.PNG", Image.fromarray(rgb)
    elif form == 3:  # 0/1 values
        name, pixels = f"{stem}.dcm-mask.png", Image.fromarray(mask)
    elif form == 4:  # twice the image's resolution (exact under nearest downsampling)
        big = Image.fromarray(mask * 255)
        name, pixels = f"{stem}.dcm_mask.png", big.resize((mask.shape[1] * 2, mask.shape[0] * 2),
                                                          Image.NEAREST)
    else:
        name, pixels = f"{stem}.dcm_mask.png", Image.fromarray(mask * 255)
    pixels.save(folder / name)
    return name


def write_zip(root: Path, names: tuple[str, str]) -> None:
    """Zips the layout into `root / names[0]` deterministically (fixed timestamps, sorted members),
    leaving out the files named in `names` (the zip itself and the generator's marker)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in names)
    with zipfile.ZipFile(root / names[0], "w") as zf:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            # PNGs are compressed already
            info.compress_type = zipfile.ZIP_STORED if path.suffix.lower() == ".png" else zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
