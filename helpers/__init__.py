"""Localize the pathology that a radiology report describes in a chest X-ray.

The notebooks and `python -m helpers` share this package. Its subpackages, bottom to top: `core`
(settings, checkpoints, file names, the radiological convention), `data` (datasets, masks,
splits, the demo generator), `text` (sentences, place words, report reader, text encoders),
`model` (U-Net, fusions, losses, metrics, checkpoint records), `training` (loop, the two phases,
the text methods), `inference`, `evaluation`, `viz`; the entry points on top (`pipeline`,
`colab`, `notebooks`, `__main__`).

The common entry points import from here, e.g. `from helpers import Segmenter, prepare,
finetune`; each is imported on first use (PEP 562), so `import helpers` and `from helpers import
colab` stay light (the notebooks' setup cell imports `colab` before the requirements are
installed on Colab).
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

# name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(("preset", "override", "settings_text", "pick_device",
                     "PretrainConfig", "FinetuneConfig", "AblationConfig", "DemoDataConfig",
                     "SplitConfig"), "helpers.core.settings"),
    **dict.fromkeys(("STUDIES", "study_settings", "ablation_set"), "helpers.core.studies"),
    **dict.fromkeys(("CheckpointError", "load_checkpoint", "save_checkpoint"), "helpers.core.checkpoint"),
    **dict.fromkeys(("RunPaths", "DatasetError"), "helpers.core.layout"),
    "make_demo_dataset": "helpers.data.demo.generate",
    "load_catalog": "helpers.data.catalog",
    "split_cases": "helpers.data.split",
    **dict.fromkeys(("load_gray", "load_mask"), "helpers.data.io"),
    **dict.fromkeys(("iu_pretrain_paths", "iu_patients", "list_unlabeled"), "helpers.data.unlabeled"),
    **dict.fromkeys(("ReportReader",), "helpers.text.reader"),
    **dict.fromkeys(("TextEncoder", "load_text_encoder"), "helpers.text.encoders"),
    **dict.fromkeys(("MultimodalUnet",), "helpers.model.unet"),
    **dict.fromkeys(("ModelRecord", "EncoderRecord", "TrainingState"), "helpers.model.record"),
    **dict.fromkeys(("pretrain", "reconstruct_examples"), "helpers.training.pretrain"),
    "finetune": "helpers.training.finetune",
    "labeled_arrays": "helpers.training.datasets",
    **dict.fromkeys(("METHODS", "TextMethod", "register"), "helpers.training.methods"),
    "Segmenter": "helpers.inference.segmenter",
    **dict.fromkeys(("evaluate", "counterfactual_sides", "mirror_probe", "two_lesion_probe",
                     "empty_on_normal", "normal_reports", "save_evaluation", "best_median_worst"),
                    "helpers.evaluation.scores"),
    **dict.fromkeys(("other_findings", "per_sentence"), "helpers.evaluation.sentence_scores"),
    **dict.fromkeys(("MaskVocabulary", "learn_vocabulary"), "helpers.text.vocabulary"),
    "run_ablations": "helpers.evaluation.ablation",
    "run_bench": "helpers.evaluation.bench",
    **dict.fromkeys(("prepare", "describe", "ensure_phase1", "ensure_phase2", "demo_probe",
                     "demo_reports", "demo_crowded", "folder_size", "relative"), "helpers.pipeline"),
    "run_notebooks": "helpers.notebooks",
    **dict.fromkeys(("export_model", "open_model"), "helpers.share"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import the module of an exported name on first use and keep the name here."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'helpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
