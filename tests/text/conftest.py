"""Fixtures of the tests of helpers/text/: one tiny CLIP and its encoder per module."""
from __future__ import annotations

import pytest

from helpers.text.encoders import TextEncoder, make_tiny_clip
from tests.text import DIM


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny") / "clip", hidden_size=DIM,
                          num_heads=2, projection_dim=DIM)


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    return TextEncoder(tiny_dir)
