"""Drawing synthetic chest X-rays for the demo: anatomy, ribs, lesions and their masks.

Anatomy is laid out in normalized coordinates u = x / W, v = y / H (it stretches with the image);
lesions are sized in pixels of the shorter side so they stay round. Zones are named in the
patient's frame: the patient's right lung is drawn on the image's LEFT.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ...core.anatomy import image_half_index, image_x_sign
from .reports import Lesion

Array = np.ndarray



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


def _heart(u: Array, v: Array, anatomy: _Anatomy, scale: float = 1.0) -> Array:
    """float [H, W] in [0, 1]: the heart's soft silhouette, `scale` times its normal size."""
    midline = float(np.mean(anatomy.lung_cu))
    return _soft_ellipse(u, v, midline + 0.06, anatomy.dome - 0.07, 0.16 * scale, 0.12 * scale, softness=0.08)


def _frontal(shape: tuple[int, int], anatomy: _Anatomy, rng: np.random.Generator,
             heart_scale: float = 1.0) -> Array:
    """float [H, W] in about [0, 1]: a frontal (PA) chest without lesions, its heart `heart_scale`
    times the normal size."""
    u, v = _grid(shape)
    midline = float(np.mean(anatomy.lung_cu))
    body = _soft_ellipse(u, v, midline, 0.6, 0.5, 0.62, softness=0.05)
    img = 0.06 + 0.34 * body
    img += 0.12 * _sigmoid((v - anatomy.dome - 0.6 * (u - midline) ** 2 + 0.03) / 0.02) * body  # abdomen
    lungs = np.maximum(*anatomy.lung_fields(u, v))
    img = img * (1 - lungs) + 0.12 * lungs
    mediastinum = _sigmoid((0.06 + 0.05 * v - np.abs(u - midline)) / 0.01) * _sigmoid((v - 0.08) / 0.02)
    heart = _heart(u, v, anatomy, heart_scale)
    img = np.maximum(img, 0.62 * np.maximum(mediastinum, heart))  # heart bulges to the image's right
    spine = _sigmoid((0.032 - np.abs(u - midline)) / 0.006) * (1 + 0.08 * np.sin(2 * np.pi * 13 * v))
    img = np.maximum(img, 0.75 * spine)
    img += 0.1 * _ribs(u, v, midline, rng) * body
    for sign in (-1, 1):  # clavicles
        d = _segment_distance(u, v, (midline + 0.04 * sign, 0.17), (midline + 0.3 * sign, 0.1))
        img += 0.18 * _sigmoid((0.014 - d) / 0.004)
    img += 0.04 * _smooth_noise(rng, shape, 4)
    return img


def lateral(shape: tuple[int, int], rng: np.random.Generator) -> Array:
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
    cu, lateral = anatomy.lung_cu[image_half_index(side)], image_x_sign(side)
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
    cu, lateral = anatomy.lung_cu[image_half_index(side)], image_x_sign(side)
    level = anatomy.dome - rng.uniform(0.05, 0.1)
    towards_wall = np.clip(lateral * (u - cu) / anatomy.lung_au + 1.0, 0, None) / 2  # 0 medial .. 1 wall
    meniscus = level - rng.uniform(0.08, 0.13) * towards_wall ** 2
    field = _soft_ellipse(u, v, cu, anatomy.lung_cv, anatomy.lung_au * 1.05, anatomy.lung_av * 1.08)
    below_dome = _sigmoid((anatomy.dome + 0.02 + 0.6 * (u - cu) ** 2 - v) / 0.01)
    return _sigmoid((v - meniscus) / 0.012) * field * below_dome


def to_uint8(img: Array, rng: np.random.Generator) -> Array:
    img = img + rng.normal(0.0, 0.015, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def draw_frontal(shape: tuple[int, int], lesions: list[Lesion], rng: np.random.Generator,
                 heart_scale: float | None = None) -> tuple[Array, list[Array], list[dict]]:
    """A frontal image with `lesions`: (uint8 [H, W], one mask uint8 [H, W] in {0, 1} per lesion (its
    own footprint, nothing else), one dict per lesion with its peak pixel and area). With
    `heart_scale` the heart is enlarged that much (cardiomegaly) and its mask (the silhouette above
    the diaphragm) and record come last."""
    anatomy = _Anatomy.sample(rng)
    img = _frontal(shape, anatomy, rng, heart_scale or 1.0)
    masks, records = [], []
    for lesion in lesions:  # the target comes first
        footprint = _lesion_footprint(lesion, shape, anatomy, rng)
        img += rng.uniform(0.38, 0.5) * footprint
        y, x = np.unravel_index(int(np.argmax(footprint)), shape)
        records.append({"kind": lesion.kind, "zone": lesion.zone, "role": lesion.role, "x": int(x),
                        "y": int(y), "area": int((footprint > 0.5).sum())})
        masks.append((footprint > 0.5).astype(np.uint8))
    if heart_scale is not None:
        u, v = _grid(shape)
        heart = (_heart(u, v, anatomy, heart_scale) > 0.5) & (v < anatomy.dome + 0.02)
        y, x = (int(round(c.mean())) for c in np.nonzero(heart))
        records.append({"kind": "cardiomegaly", "zone": "heart", "role": "heart", "x": x, "y": y,
                        "area": int(heart.sum())})
        masks.append(heart.astype(np.uint8))
    return to_uint8(img, rng), masks, records


