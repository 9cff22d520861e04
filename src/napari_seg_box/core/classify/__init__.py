"""Image classification, the box's second task: a class per image (or per segmented object).

Import classified images (:func:`import_class_folders`, :func:`import_class_table`), train a timm
network (:func:`iter_train_classifier`), evaluate it on held-out images
(:func:`evaluate_classifier`, :func:`compare_classifiers`), classify images in batch
(:class:`Classifier`) and phenotype the objects of a segmentation (:func:`phenotype_objects`).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ClassifyConfig": "config",
    "NETWORKS": "config",
    "import_class_folders": "importing",
    "import_class_table": "importing",
    "iter_import_classified": "importing",
    "ImportReport": "importing",
    "iter_train_classifier": "train",
    "train_classifier": "train",
    "Classifier": "model",
    "build_classifier": "model",
    "evaluate_classifier": "evaluate",
    "compare_classifiers": "evaluate",
    "ClassifierEvaluation": "evaluate",
    "classification_metrics": "metrics",
    "stratified_split": "data",
    "split_stratified": "splits",
    "phenotype_objects": "phenotype",
    "object_crops": "phenotype",
    "CropSettings": "phenotype",
    "PhenotypeModel": "phenotype",
    "export_object_crops": "phenotype",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
