"""What the tests of helpers/training/ share."""
from __future__ import annotations

import numpy as np


def one_lesion(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """One image with a bright square on the image's left (the patient's right) and its mask."""
    images = np.full((1, size, size), 40, np.uint8)
    images[0, 10:18, 4:12] = 220
    return images, (images > 100).astype(np.uint8)


def lower_lesion(size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """One image with a lesion in the lower zone of the image's left lung, and its mask."""
    images = np.full((1, size, size), 40, np.uint8)
    images[0, 26:32, 4:10] = 220
    return images, (images > 100).astype(np.uint8)
