"""The radiological convention, once: the patient's sides and where each lies in the image.

A frontal chest X-ray is shown as if facing the patient, so the patient's RIGHT lies on the
image's LEFT. Reports name the patient's side; pixels have the image's. Every module that turns
one into the other (the place prior's maps, the demo's drawing, the side scores, the charts)
asks here, and no bare left-right flip is ever right without swapping the side words too.
"""
from __future__ import annotations

SIDES = ("right", "left")  # the patient's sides, in the order the image shows them, left to right
IMAGE_HALVES = ("image-left", "image-right")  # the halves of the image, as displayed


def _check(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES} (the patient's), got {side!r}")
    return side


def other_side(side: str) -> str:
    """The patient's other side: "right" <-> "left"."""
    return SIDES[1 - SIDES.index(_check(side))]


def image_half_index(side: str) -> int:
    """0 for the patient's side shown in the image's left half (the right), 1 for the other."""
    return SIDES.index(_check(side))


def image_half(side: str) -> str:
    """The half of the image that shows the patient's `side`: "right" -> "image-left"."""
    return IMAGE_HALVES[image_half_index(side)]


def image_x_sign(side: str) -> float:
    """The sign of the image x coordinate (centred, growing to the image's right) on the patient's
    `side`: -1.0 for the right (the image's left half), +1.0 for the left."""
    return -1.0 if image_half_index(side) == 0 else 1.0
