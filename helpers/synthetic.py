"""The demo dataset generator: synthetic chest X-rays and reports in the real dataset's layout.

`make_demo_dataset` writes the Indiana University / OpenI layout (`images/images_normalized/*.png`,
`indiana_reports.csv`, `indiana_projections.csv`, `masked/*`) so the whole pipeline runs on a CPU in
minutes without the real data. The report texts are written by `helpers.synthetic_text`.

Every report has a frontal and a lateral image. The first `n_masks` reports are labeled: their frontal
image holds a TARGET lesion (nodule, mass, opacity, consolidation, effusion or atelectasis) in one of
the six `ZONES`, drawn by the radiological convention (the patient's right lung is on the image's
LEFT), its mask, and a findings text that names its kind and place.

The text is necessary by construction: every labeled image also holds 2 DISTRACTOR lesions in other
zones that are neither in the mask nor in the text, so an image-only model cannot know which lesion to
segment. (With one distractor an image-only model that segments every lesion still scores a Dice near
0.6; the layout does not tell which of the three lesions is the target.)

Written besides the layout, for tests and evaluation:
- `demo_lesions.csv`: each drawn lesion's kind, zone, peak pixel and area, role (`target`,
  `distractor`, or `finding` for described lesions of unlabeled reports), a `sentence` describing it
  (for the target, the report's own describing sentence) and, for distractors, `mask_file`;
- `demo_probe/<image stem>_d<k>.png`: each distractor's mask (0/255), for a two-lesion probe (same
  image, another lesion's sentence: the mask should move);
- `patient_splits.csv` (`uid, split`): labeled reports shuffled into train/val/test (70/15/15), the
  others train. Test reports are written with held-out phrasings only (see `helpers.synthetic_text`).

With `quirks=True` the demo also exercises the variations of real hand-made data: masks named and
stored in several ways (`_mask`/`-mask` suffixes, `.PNG`, RGB, 0/1 values, another resolution), one
orphan mask, one report whose findings are empty, and de-identification `XXXX` tokens.
"""
from __future__ import annotations

import inspect
import json
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .synthetic_text import KINDS, LEVELS, SIDES, SPLITS, ZONES, Lesion, finding_sentence, report  # noqa: F401


IMAGES_DIR = Path("images") / "images_normalized"
MASKS_DIR = Path("masked")
MARKER = "demo.json"  # the generator's parameters; "complete" turns true once everything is written
LESIONS_CSV = "demo_lesions.csv"
PATIENT_SPLITS_CSV = "patient_splits.csv"  # uid -> train / val / test; test reports use held-out phrasings
PROBE_DIR = "demo_probe"  # binary masks of the distractors, <image stem>_d<k>.png
SPLIT_SHARES = (0.7, 0.15, 0.15)  # of the labeled reports; unlabeled reports are all "train"
ZIP_NAME = "Dataset.zip"
MASK_FORMS = 5  # see _save_mask

Array = np.ndarray


# ---------------------------------------------------------------------------------------------
# Drawing. Anatomy is laid out in normalized coordinates u = x / W, v = y / H (it stretches with the
# image); lesions are sized in pixels of the shorter side so they stay round.
# ---------------------------------------------------------------------------------------------

def _sigmoid(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _soft_ellipse(u: Array, v: Array, cu: float, cv: float, au: float, av: float,
                  softness: float = 0.06) -> Array:
    """float [H, W] in [0, 1]: 1 inside the ellipse, a smooth edge `softness` (in radii) wide."""
    r = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2)
    return _sigmoid((1.0 - r) / softness)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> Array:
    """float32 [H, W], zero mean, unit-ish std: a `cells` x `cells` random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize(shape[::-1], Image.BICUBIC))


def _grid(shape: tuple[int, int]) -> tuple[Array, Array]:
    """Normalized pixel-centre coordinates (u, v), each float [H, W] in (0, 1)."""
    h, w = shape
    v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    return u, v


def _segment_distance(x: Array, y: Array, p0: tuple[float, float], p1: tuple[float, float]) -> Array:
    """float [H, W]: distance from each pixel to the segment p0-p1 (same units as x, y)."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - p0[0] - t * dx, y - p0[1] - t * dy)


@dataclass(frozen=True)
class _Anatomy:
    """Jittered geometry of one frontal chest (normalized coordinates)."""

    lung_cu: tuple[float, float]  # centres of the image-left and image-right lung fields
    lung_cv: float
    lung_au: float
    lung_av: float
    dome: float  # height of the diaphragm domes at the lungs' centres

    @staticmethod
    def sample(rng: np.random.Generator) -> _Anatomy:
        spread = rng.uniform(0.19, 0.22)
        centre = 0.5 + rng.uniform(-0.015, 0.015)
        return _Anatomy(lung_cu=(centre - spread, centre + spread), lung_cv=rng.uniform(0.44, 0.48),
                        lung_au=rng.uniform(0.14, 0.16), lung_av=rng.uniform(0.3, 0.33),
                        dome=rng.uniform(0.7, 0.75))

    def lung_fields(self, u: Array, v: Array) -> tuple[Array, Array]:
        """Soft masks [H, W] of the image-left and image-right lung fields, cut by the domes."""
        fields = []
        for cu in self.lung_cu:
            below_dome = _sigmoid((self.dome + 0.6 * (u - cu) ** 2 - v) / 0.01)
            fields.append(_soft_ellipse(u, v, cu, self.lung_cv, self.lung_au, self.lung_av) * below_dome)
        return fields[0], fields[1]


def _ribs(u: Array, v: Array, midline: float, rng: np.random.Generator) -> Array:
    """float [H, W]: posterior ribs as bright arcs descending laterally from the spine."""
    bases = 0.16 + 0.07 * np.arange(8) + rng.uniform(-0.01, 0.01)
    d = np.abs(u - midline)[None]  # distance from the spine
    arc = bases[:, None, None] - 0.09 * np.sin(np.pi * np.clip(d, 0, 0.5) / 0.5) + 0.2 * d
    bands = _sigmoid((0.012 - np.abs(v[None] - arc)) / 0.005)
    return bands.max(axis=0) * _sigmoid((d[0] - 0.04) / 0.01) * _sigmoid((0.44 - d[0]) / 0.02)


def _frontal(shape: tuple[int, int], anatomy: _Anatomy, rng: np.random.Generator) -> Array:
    """float [H, W] in about [0, 1]: a frontal (PA) chest without lesions."""
    u, v = _grid(shape)
    midline = float(np.mean(anatomy.lung_cu))
    body = _soft_ellipse(u, v, midline, 0.6, 0.5, 0.62, softness=0.05)
    img = 0.06 + 0.34 * body
    img += 0.12 * _sigmoid((v - anatomy.dome - 0.6 * (u - midline) ** 2 + 0.03) / 0.02) * body  # abdomen
    lungs = np.maximum(*anatomy.lung_fields(u, v))
    img = img * (1 - lungs) + 0.12 * lungs
    mediastinum = _sigmoid((0.06 + 0.05 * v - np.abs(u - midline)) / 0.01) * _sigmoid((v - 0.08) / 0.02)
    heart = _soft_ellipse(u, v, midline + 0.06, anatomy.dome - 0.07, 0.16, 0.12, softness=0.08)
    img = np.maximum(img, 0.62 * np.maximum(mediastinum, heart))  # heart bulges to the image's right
    spine = _sigmoid((0.032 - np.abs(u - midline)) / 0.006) * (1 + 0.08 * np.sin(2 * np.pi * 13 * v))
    img = np.maximum(img, 0.75 * spine)
    img += 0.1 * _ribs(u, v, midline, rng) * body
    for sign in (-1, 1):  # clavicles
        d = _segment_distance(u, v, (midline + 0.04 * sign, 0.17), (midline + 0.3 * sign, 0.1))
        img += 0.18 * _sigmoid((0.014 - d) / 0.004)
    img += 0.04 * _smooth_noise(rng, shape, 4)
    return img


def _lateral(shape: tuple[int, int], rng: np.random.Generator) -> Array:
    """float [H, W] in about [0, 1]: a lateral chest (facing the image's left, spine at the back)."""
    u, v = _grid(shape)
    body = _soft_ellipse(u, v, 0.5, 0.6, 0.46, 0.62, softness=0.05)
    img = 0.06 + 0.36 * body
    dome = rng.uniform(0.68, 0.74)
    lung = _soft_ellipse(u, v, 0.5, 0.45, 0.27, 0.32) * _sigmoid((dome + 0.3 * (u - 0.55) ** 2 - v) / 0.012)
    img = img * (1 - lung) + 0.18 * lung
    heart = _soft_ellipse(u, v, 0.36, dome - 0.08, 0.15, 0.13, softness=0.1)
    img = np.maximum(img, 0.5 * heart)
    spine_u = 0.8 + 0.05 * (v - 0.5)
    spine = _sigmoid((0.05 - np.abs(u - spine_u)) / 0.008) * (1 + 0.15 * np.sin(2 * np.pi * 12 * v))
    img = np.maximum(img, 0.68 * spine)
    img += 0.2 * _sigmoid((0.012 - np.abs(u - 0.18 + 0.05 * v)) / 0.004) * body  # sternum
    img += 0.05 * _smooth_noise(rng, shape, 4)
    return img


def _zone_centre(zone: str, anatomy: _Anatomy, rng: np.random.Generator) -> tuple[float, float]:
    """(u, v) of a lesion in `zone`; the patient's right lung lies on the image's LEFT."""
    side, level = zone.split()
    cu = anatomy.lung_cu[0] if side == "right" else anatomy.lung_cu[1]
    lateral = -1.0 if side == "right" else 1.0
    dv = {"upper": -0.17, "middle": 0.0, "lower": 0.15}[level]
    return (cu + lateral * rng.uniform(0.0, 0.05), anatomy.lung_cv + dv + rng.uniform(-0.03, 0.03))


_RADII = {"nodule": (0.035, 0.05), "mass": (0.075, 0.1), "opacity": (0.08, 0.11),
          "consolidation": (0.09, 0.12)}  # ranges, in units of the image's shorter side


def _lesion_footprint(lesion: Lesion, shape: tuple[int, int], anatomy: _Anatomy,
                      rng: np.random.Generator) -> Array:
    """float [H, W] in [0, 1]: the lesion's intensity footprint with soft edges."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    scale = float(min(h, w))
    if lesion.kind == "effusion":
        return _effusion(x / w, y / h, lesion.zone.split()[0], anatomy, rng)
    cu, cv = _zone_centre(lesion.zone, anatomy, rng)
    cx, cy = cu * w, cv * h
    dist = np.hypot(x - cx, y - cy)
    if lesion.kind == "atelectasis":
        angle = np.deg2rad(rng.uniform(-25, 25))
        half = scale * rng.uniform(0.08, 0.12)
        dx, dy = half * np.cos(angle), half * np.sin(angle)
        thickness = max(1.6, scale * rng.uniform(0.016, 0.024))
        d = _segment_distance(x, y, (cx - dx, cy - dy), (cx + dx, cy + dy))
        return _sigmoid((thickness - d) / (0.3 * thickness))
    radius = scale * rng.uniform(*_RADII[lesion.kind])
    if lesion.kind == "mass":  # lobulated outline
        radius = radius * (1 + 0.12 * np.sin(3 * np.arctan2(y - cy, x - cx) + rng.uniform(0, 2 * np.pi)))
    footprint = _sigmoid((radius - dist) / (0.15 * radius))
    if lesion.kind in ("opacity", "consolidation"):  # patchy texture, denser for consolidation
        floor = 0.35 if lesion.kind == "opacity" else 0.75
        noise = _smooth_noise(rng, shape, max(4, int(scale) // 12))
        core = noise[footprint >= 0.9 * footprint.max()]  # normalized so the lesion's densest part is 1
        patches = np.clip((noise - core.min()) / max(float(np.ptp(core)), 1e-6), 0, 1)
        footprint = footprint * (floor + (1 - floor) * patches)
    return footprint


def _effusion(u: Array, v: Array, side: str, anatomy: _Anatomy, rng: np.random.Generator) -> Array:
    """float [H, W]: fluid filling the costophrenic angle, its meniscus rising toward the chest wall."""
    cu = anatomy.lung_cu[0] if side == "right" else anatomy.lung_cu[1]
    lateral = -1.0 if side == "right" else 1.0
    level = anatomy.dome - rng.uniform(0.05, 0.1)
    towards_wall = np.clip(lateral * (u - cu) / anatomy.lung_au + 1.0, 0, None) / 2  # 0 medial .. 1 wall
    meniscus = level - rng.uniform(0.08, 0.13) * towards_wall ** 2
    field = _soft_ellipse(u, v, cu, anatomy.lung_cv, anatomy.lung_au * 1.05, anatomy.lung_av * 1.08)
    below_dome = _sigmoid((anatomy.dome + 0.02 + 0.6 * (u - cu) ** 2 - v) / 0.01)
    return _sigmoid((v - meniscus) / 0.012) * field * below_dome


def _to_uint8(img: Array, rng: np.random.Generator) -> Array:
    img = img + rng.normal(0.0, 0.015, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _draw_frontal(shape: tuple[int, int], lesions: list[Lesion], rng: np.random.Generator
                  ) -> tuple[Array, list[Array], list[dict]]:
    """A frontal image with `lesions`: (uint8 [H, W], one mask uint8 [H, W] in {0, 1} per lesion (its
    own footprint, nothing else), one dict per lesion with its peak pixel and area)."""
    anatomy = _Anatomy.sample(rng)
    img = _frontal(shape, anatomy, rng)
    masks, records = [], []
    for lesion in lesions:  # the target comes first
        footprint = _lesion_footprint(lesion, shape, anatomy, rng)
        img += rng.uniform(0.38, 0.5) * footprint
        y, x = np.unravel_index(int(np.argmax(footprint)), shape)
        records.append({"kind": lesion.kind, "zone": lesion.zone, "role": lesion.role, "x": int(x),
                        "y": int(y), "area": int((footprint > 0.5).sum())})
        masks.append((footprint > 0.5).astype(np.uint8))
    return _to_uint8(img, rng), masks, records


# ---------------------------------------------------------------------------------------------
# Lesion plans and splits (the texts are written by helpers.synthetic_text)
# ---------------------------------------------------------------------------------------------

def _pick_lesion(role: str, rng: np.random.Generator) -> Lesion:
    kind = str(rng.choice(KINDS))
    levels = ("lower",) if kind == "effusion" else LEVELS  # effusions only fill the lower zones
    return Lesion(kind, f"{rng.choice(SIDES)} {rng.choice(levels)}", role)


def _lesion_in(zone: str, role: str, rng: np.random.Generator) -> Lesion:
    kinds = KINDS if zone.endswith("lower") else tuple(k for k in KINDS if k != "effusion")
    return Lesion(str(rng.choice(kinds)), zone, role)


# Three lesion zones with no two neighbours on one side (lesions there would overlap): the upper
# and lower zone of one lung and any zone of the other.
_LAYOUTS = [(f"{a} upper", f"{a} lower", f"{b} {lv}")
            for a, b in (("right", "left"), ("left", "right")) for lv in LEVELS]


def _pick_labeled_lesions(rng: np.random.Generator) -> list[Lesion]:
    """A target and two distractors: a layout drawn uniformly, then the target uniformly among its
    three zones, so nothing in the picture says which lesion the text describes (an earlier plan
    that placed distractors relative to the target leaked it, and an image-only model learned it).
    The target comes first."""
    zones = list(_LAYOUTS[int(rng.integers(len(_LAYOUTS)))])
    target = zones.pop(int(rng.integers(3)))
    return [_lesion_in(target, "target", rng)] + [_lesion_in(z, "distractor", rng) for z in zones]


def _patient_splits(n_reports: int, n_masks: int, seed: int) -> dict[int, str]:
    """uid -> split: the labeled reports shuffled (seeded) into SPLIT_SHARES, the others "train"."""
    order = np.random.default_rng([seed, 0]).permutation(np.arange(1, n_masks + 1))
    n_val, n_test = (round(share * n_masks) for share in SPLIT_SHARES[1:])
    splits = {uid: "train" for uid in range(1, n_reports + 1)}
    splits.update({int(uid): "test" for uid in order[:n_test]})
    splits.update({int(uid): "val" for uid in order[n_test: n_test + n_val]})
    return splits


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def _image_name(uid: int, view: int) -> str:
    return f"{uid}_IM-{uid:04d}-{view}001.dcm.png"


def _stem(image_name: str) -> str:
    return image_name[: -len(".dcm.png")]


def _save_mask(folder: Path, image_name: str, mask: Array, form: int) -> str:
    """Writes `mask` (uint8 [H, W] in {0, 1}) in one of MASK_FORMS hand-made styles; returns its name."""
    stem = _stem(image_name)
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


def _write_zip(root: Path) -> None:
    """Zips the layout deterministically (fixed timestamps, sorted members)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in (ZIP_NAME, MARKER))
    with zipfile.ZipFile(root / ZIP_NAME, "w") as zf:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            # PNGs are compressed already
            info.compress_type = zipfile.ZIP_STORED if path.suffix.lower() == ".png" else zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())


def _prepare(dest: Path, params: dict) -> None:
    """Empties a previous demo in `dest` (never a foreign folder) and marks `dest` as incomplete."""
    if dest.exists() and any(dest.iterdir()):
        if not (dest / MARKER).is_file():
            raise ValueError(f"{dest} is not empty and holds no demo dataset ({MARKER}); "
                             f"pass an empty or new folder as dest")
        for child in dest.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    (dest / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (dest / MASKS_DIR).mkdir(exist_ok=True)
    (dest / MARKER).write_text(json.dumps({"params": params, "complete": False}))


def make_demo_dataset(dest: str | Path, n_reports: int = 300, n_masks: int = 200,
                      image_size: tuple[int, int] = (224, 288), seed: int = 0,
                      make_zip: bool = True, quirks: bool = True) -> Path:
    """Writes a synthetic dataset in the real layout to `dest` and returns `dest` (the dataset root).

    Args:
        dest: a new or empty folder, or one holding an earlier demo (it is emptied first).
        n_reports: reports, uids 1..n_reports, each with a frontal and a lateral image.
        n_masks: the first `n_masks` reports' frontal images are labeled (target lesion + mask).
        image_size: (min, max) side; each image's width and height are drawn independently in it.
        seed: the same seed gives the same bytes.
        make_zip: also write `Dataset.zip` of the layout into `dest`.
        quirks: vary mask names and formats, add an orphan mask, empty findings and XXXX tokens.
    """
    if not 0 <= n_masks <= n_reports or n_reports < 1:
        raise ValueError(f"need 0 <= n_masks <= n_reports and n_reports >= 1, got {n_masks=}, {n_reports=}")
    lo, hi = image_size
    if not 16 <= lo <= hi:
        raise ValueError(f"image_size must be (min, max) sides with 16 <= min <= max, got {image_size}")
    start = time.perf_counter()
    dest = Path(dest)
    _prepare(dest, demo_params(n_reports=n_reports, n_masks=n_masks, image_size=image_size, seed=seed,
                               make_zip=make_zip, quirks=quirks))
    (dest / PROBE_DIR).mkdir()
    splits = _patient_splits(n_reports, n_masks, seed)
    reports, projections, lesion_rows = [], [], []
    empty_findings_uid = min(2, n_masks) or 1  # a labeled report where possible: its case falls back
    for uid in range(1, n_reports + 1):
        rng = np.random.default_rng([seed, uid])
        text_rng = np.random.default_rng([seed, uid, 1])  # texts do not move the pictures
        if uid <= n_masks:
            drawn = _pick_labeled_lesions(rng)
            described = drawn[0]
        else:  # half normal, half with a described lesion that has no mask
            described = _pick_lesion("finding", rng) if rng.random() < 0.5 else None
            drawn = [described] if described else []
        row, describing = report(uid, described, drawn, splits[uid], text_rng, quirks)
        sentences = [describing] + [finding_sentence(lesion, splits[uid], text_rng) for lesion in drawn[1:]]
        if quirks and uid == empty_findings_uid:
            row["findings"] = ""
        reports.append(row)
        for view, projection in ((1, "Frontal"), (2, "Lateral")):
            name = _image_name(uid, view)
            shape = (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
            if view == 1:
                pixels, masks, records = _draw_frontal(shape, drawn, rng)
                for k, (lesion, mask, record) in enumerate(zip(drawn, masks, records)):
                    probe = ""
                    if lesion.role == "target":
                        _save_mask(dest / MASKS_DIR, name, mask, uid % MASK_FORMS if quirks else 0)
                    elif lesion.role == "distractor":
                        probe = f"{PROBE_DIR}/{_stem(name)}_d{k}.png"
                        Image.fromarray(mask * 255).save(dest / probe)
                    lesion_rows.append({"uid": uid, "filename": name, **record, "sentence": sentences[k],
                                        "mask_file": probe})
            else:
                pixels = _to_uint8(_lateral(shape, rng), rng)
            Image.fromarray(pixels).save(dest / IMAGES_DIR / name)
            projections.append({"uid": uid, "filename": name, "projection": projection})
    if quirks:  # one orphan: a mask whose image does not exist
        orphan = np.zeros((lo, lo), np.uint8)
        orphan[lo // 3: lo // 2, lo // 4: lo // 2] = 1
        _save_mask(dest / MASKS_DIR, _image_name(n_reports + 1, 1), orphan, 0)
    pd.DataFrame(reports).to_csv(dest / "indiana_reports.csv", index=False)
    pd.DataFrame(projections).to_csv(dest / "indiana_projections.csv", index=False)
    pd.DataFrame(lesion_rows, columns=["uid", "filename", "role", "kind", "zone", "x", "y", "area", "sentence",
                                       "mask_file"]).to_csv(dest / LESIONS_CSV, index=False)
    pd.DataFrame({"uid": list(splits), "split": list(splits.values())}).to_csv(dest / PATIENT_SPLITS_CSV,
                                                                             index=False)
    if make_zip:
        _write_zip(dest)
    marker = json.loads((dest / MARKER).read_text())
    (dest / MARKER).write_text(json.dumps({**marker, "complete": True}))
    print(f"Demo dataset generated: {2 * n_reports} images, {n_masks} masks in "
          f"{time.perf_counter() - start:.1f} s")
    return dest


_SIGNATURE = inspect.signature(make_demo_dataset)


def demo_params(**kwargs) -> dict:
    """`make_demo_dataset`'s keyword arguments (without dest) with defaults filled in, JSON-normalized
    (tuples become lists) so that they compare equal to the ones stored in `demo.json`."""
    bound = _SIGNATURE.bind(None, **kwargs)
    bound.apply_defaults()
    params = {k: v for k, v in bound.arguments.items() if k != "dest"}
    return json.loads(json.dumps(params))
