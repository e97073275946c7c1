"""Shared fixtures: one tiny demo dataset and one tiny text model for the whole session."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.core.settings import TINY_TEXT_MODEL, FinetuneConfig, PretrainConfig
from helpers.data.catalog import load_catalog
from helpers.data.demo.generate import make_demo_dataset
from helpers.data.split import split_cases
from helpers.inference.segmenter import Segmenter


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_reports=14, n_masks=12,
                             image_size=(64, 80), seed=3, make_zip=False,
                             distractors="forced")


@pytest.fixture(scope="session")
def catalog(demo_root):
    return load_catalog(demo_root)


@pytest.fixture(scope="session")
def cases(catalog, tmp_path_factory):
    return split_cases(catalog.cases, tmp_path_factory.mktemp("split") / "splits.csv",
                       val_fraction=0.2, test_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("text-models")


@pytest.fixture
def pretrain_cfg():
    return PretrainConfig(image_size=32, epochs=3, batch_size=4, lr=2e-3, warmup_epochs=0.2,
                          encoder="resnet18", patch_size=32, augment=False, device="cpu",
                          num_workers=0, val_fraction=0.2)


@pytest.fixture
def finetune_cfg():
    return dataclasses.replace(FinetuneConfig(), image_size=32, epochs=2, batch_size=4, lr=1e-3,
                               encoder="resnet18", text_model=TINY_TEXT_MODEL, device="cpu",
                               num_workers=0, warmup_epochs=0.2, augment=False,
                               paste_prob=0.0, swap_prob=0.0, null_rate=0.0,
                               sentence_prob=0.0)  # plain items


@pytest.fixture(scope="session")
def checkpoint(cases, tmp_path_factory, text_dir):
    """A Phase-2 `best_model.pth` of one quick epoch (the inference and grounding tests share it)."""
    from helpers.training.finetune import finetune

    cfg = dataclasses.replace(FinetuneConfig(), image_size=32, epochs=1, batch_size=4,
                              encoder="resnet18", text_model=TINY_TEXT_MODEL, device="cpu",
                              num_workers=0, augment=False)
    return finetune(cfg, cases, tmp_path_factory.mktemp("p2"), text_cache_dir=text_dir,
                    progress=False).best_path


@pytest.fixture(scope="module")
def reading_segmenter(checkpoint, text_dir):
    """The test checkpoint's Segmenter with its fusion's weights drawn larger, as after a longer
    training: the text moves the mask."""
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu", text_cache_dir=text_dir)
    with torch.no_grad():  # as after a longer training: the text moves the mask
        for module in seg.model.fusion.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.weight.normal_(std=0.2)
    return seg


@pytest.fixture(scope="module")
def segmenter(checkpoint, text_dir):
    """The test checkpoint's Segmenter, as `Segmenter.from_checkpoint` loads it."""
    return Segmenter.from_checkpoint(checkpoint, device="cpu", text_cache_dir=text_dir)


@pytest.fixture
def rgb_weights(tmp_path):
    """A self-made ImageNet-style resnet18 state dict (torchvision's keys, 3 input channels)."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18_rgb.pth"
    torch.save(state, path)
    return path, state
