"""Copies of a lesion at another place of the same image: the pixels of the place training.

`paste_copy` puts a second copy of a lesion at its mirror place in the other lung, or at the other
level of the same lung, so that one image holds two lesions that look alike and only the words
(`text.places`) tell which one is meant. The text methods (`training.methods`), the validation
place questions (`training.questions`) and the mirror probe (`evaluation.scores.mirror_probe`)
use it.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2


LEVEL_SHIFT = 0.3  # of the image height: from a lung's lower zone to its upper zone, or back


def _moved(x: torch.Tensor, how: str | int) -> torch.Tensor:
    """`x` [..., H, W] mirrored left-right (`how="mirror"`) or moved `how` rows down (up when
    negative; what leaves the image is lost, what enters is zero)."""
    if how == "mirror":
        return x.flip(-1)
    out = torch.zeros_like(x)
    if how > 0:
        out[..., how:, :] = x[..., :-how, :]
    elif how < 0:
        out[..., :how, :] = x[..., -how:, :]
    else:
        out = x.clone()
    return out


def level_shift(level: str | None, size: int) -> int:
    """Rows that move a lesion of a lung's `level` ("upper" / "lower") to the other level."""
    return {"upper": 1, "lower": -1}.get(level or "", 0) * round(LEVEL_SHIFT * size)


def copy_is_free(mask: torch.Tensor, how: str | int, margin: int = 2,
                 avoid: torch.Tensor | None = None) -> bool:
    """Whether the lesion under `mask` [H, W] moved by `how` (see `_moved`) stays whole inside the
    image and keeps `margin` pixels away from the original and from `avoid` [H, W] (other drawn
    parts that stay where they are)."""
    if how == 0:
        return False
    m = mask.float()[None, None]
    copy = _moved(m, how)
    if copy.sum() < m.sum():
        return False
    kept = m if avoid is None else torch.maximum(m, avoid.float()[None, None])
    grown = torch.nn.functional.max_pool2d(kept, 2 * margin + 1, stride=1, padding=margin)
    return not bool((grown * copy).any())


def mirror_overlaps(masks: np.ndarray, margin: int = 2) -> np.ndarray:
    """bool [N]: whether each mask of uint8 [N, S, S] touches (within `margin` pixels) its own
    left-right mirror image, i.e. has no free mirror place to be pasted into."""
    return np.array([not copy_is_free(torch.from_numpy(np.asarray(m)), "mirror", margin) for m in masks],
                    dtype=bool)


def paste_copy(image: torch.Tensor, mask: torch.Tensor, how: str | int = "mirror",
               feather: float = 0.015, onto: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy the lesion under `mask` to another place of the same image: its mirror place in the
    other lung (`how="mirror"`) or `how` rows down (up when negative; see `level_shift`).

    image uint8 [..., S, S], mask [..., S, S] in {0, 1} -> (image with a second copy of the lesion,
    uint8 [..., S, S]; the copy's mask). The copy is alpha-blended through a Gaussian-feathered mask
    (sigma = `feather` x the image width) so no hard seam marks it as pasted. `onto` (default:
    `image`) is the picture it is pasted into, e.g. one that holds a copy already.
    """
    copy = _moved(mask, how)
    sigma = max(0.5, feather * image.shape[-1])
    kernel = 2 * int(3 * sigma) + 1
    alpha = v2.functional.gaussian_blur(copy.float().reshape(-1, 1, *mask.shape[-2:]),
                                        [kernel, kernel], [sigma, sigma]).reshape(mask.shape)
    alpha = torch.maximum(alpha * 2, copy.float()).clamp(0, 1)  # full strength inside
    base = image if onto is None else onto
    pasted = base.float() * (1 - alpha) + _moved(image, how).float() * alpha
    return pasted.round().to(torch.uint8), copy


def paste_mirror(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`paste_copy` to the mirror place: the same spot in the other lung."""
    return paste_copy(image, mask, "mirror")
