"""The validation place questions: each validation lesion copied to another place it could be
(`training.paste`), then asked for with its text and with the place swapped in the words.

The loop scores them every epoch (`val_follows`), so the kept epoch is one that reads the place.
"""
from __future__ import annotations

import torch

from ..core.anatomy import SIDES
from ..text.places import names_level, names_side, swap_levels, swap_sides
from .paste import copy_is_free, level_shift, paste_copy


def place_questions(images: torch.Tensor, masks: torch.Tensor, texts: list[str],
                    every_place: bool = False) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """A reading probe built from labeled cases: each lesion is copied to its mirror place (a
    text naming one side) or to the lung's other level (a text naming upper or lower), where that
    place is free; each pasted image is asked twice: with the text (the original is meant) and
    with its side or level swapped (the copy is meant). Where both places are free, the cases take
    them in turn (`every_place`: both, apart), so that both kinds are asked at half the cost.

    images uint8 [N, S, S], masks [N, S, S] in {0, 1}, texts: the model texts ->
    (pasted images uint8 [M, S, S], their texts [M], the meant lesion bool [M, S, S], the other
    lesion bool [M, S, S]); M = 2 x the places asked (0 when none is free).
    """
    out_images, out_texts, meant, other = [], [], [], []
    turn = 0
    for image, mask, text in zip(images, masks, texts):
        mask = mask.bool()
        places = [("mirror", swap_sides)] if names_side(text) in SIDES else []
        if shift := level_shift(names_level(text), mask.shape[-1]):
            places.append((shift, swap_levels))
        places = [(how, swap) for how, swap in places if mask.any() and copy_is_free(mask, how)]
        if len(places) > 1 and not every_place:
            places, turn = [places[turn % 2]], turn + 1
        for how, swap in places:
            pasted, copy = paste_copy(image, mask, how)
            out_images += [pasted, pasted]
            out_texts += [text, swap(text)]
            meant += [mask, copy.bool()]
            other += [copy.bool(), mask]
    if not out_images:
        empty = torch.zeros(0, *images.shape[1:], dtype=torch.bool)
        return empty.to(torch.uint8), [], empty, empty
    return torch.stack(out_images), out_texts, torch.stack(meant), torch.stack(other)
