"""The headless napari-seg-box pipeline: never imports Qt, napari or magicgui.

Everything is importable from here, lazily (torch loads only when a function that needs it is
first used)::

    from napari_seg_box.core import Project, import_images
"""

from __future__ import annotations

import importlib

from .errors import CancelledError, ConfigError, DataError, SegBoxError, StoreError

# public name -> module (relative to this package) that defines it, or "module:name"
_LAZY = {
    "Project": "store",
    "ClassInfo": "store",
    "ImageRecord": "store",
    "VersionEntry": "store",
    "Plane": "store",
    "iter_annotated_planes": "store",
    "ModelVersion": "versions",
    "read_axes": "layout",
    "read_image": "io",
    "find_pairs": "io",
    "import_images": "io",
    "interpret_mask": "masks",
    "export_annotations": "io",
    "read_ome_zarr": "io",
    "open_array": "io",
    "normalize": "data",
    "ModelSpec": "models",
    "ENCODERS": "models",
    "build_model": "models",
    "load_model": "infer",
    "pick_device": "models",
    "TrainConfig": "train",
    "iter_train": "train",
    "train_model": "train:train",  # not "train": that name is the submodule
    "unfinished_runs": "train",
    "preview_augmentations": "augment",
    "edge_weight_map": "losses",
    "PredictConfig": "infer",
    "Predictor": "infer",
    "iter_predict": "infer",
    "predict": "infer",
    "iter_predict_large": "infer_large",
    "predict_large": "infer_large",
    "PostprocessConfig": "postprocess",
    "outlines": "postprocess",
    "export_imagej_rois": "postprocess",
    "pixel_metrics": "metrics",
    "match_instances": "metrics",
    "object_metrics": "metrics",
    "error_maps": "metrics",
    "evaluate_pairs": "evaluate",
    "Evaluation": "evaluate",
    "quantify_labels": "quantify",
    "iter_quantify": "quantify_batch",
    "quantify_batch": "quantify_batch",
    "ClassifyConfig": "classify",
    "Classifier": "classify",
    "train_classifier": "classify",
    "iter_train_classifier": "classify",
    "evaluate_classifier": "classify",
    "compare_classifiers": "classify",
    "import_class_folders": "classify",
    "import_class_table": "classify",
    "split_stratified": "classify",
    "phenotype_objects": "classify",
}

__all__ = ["SegBoxError", "StoreError", "ConfigError", "DataError", "CancelledError", *_LAZY]


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(f".{module}", __name__), attr or name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
