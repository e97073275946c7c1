"""The package's short public imports (helpers/__init__.py): lazy, and the old flat paths gone."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import helpers
from tests.test_structure import ROOT


def test_import_helpers_and_colab_stay_light():
    """The notebooks' setup cell imports `colab` before the requirements are installed on Colab."""
    code = ("import sys, helpers; from helpers import colab; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'pandas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_is_the_one_its_module_defines():
    from helpers import Segmenter, finetune, make_demo_dataset, prepare, pretrain  # noqa: F401

    for name in helpers.__all__:
        module = importlib.import_module(helpers._EXPORTS[name])
        assert getattr(helpers, name) is getattr(module, name), name
    assert Segmenter.__module__ == "helpers.inference.segmenter" and "finetune" in dir(helpers)
    with pytest.raises(AttributeError, match="no attribute 'train'"):
        helpers.train  # noqa: B018


@pytest.mark.parametrize("old", ["helpers.config", "helpers.train", "helpers.datasets", "helpers.loop",
                                 "helpers.experiments", "helpers.places", "helpers.synthetic"])
def test_the_old_flat_modules_are_gone(old):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
