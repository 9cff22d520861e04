"""napari-seg-box: annotate, train, evaluate and quantify microscopy segmentation in one box.

The whole pipeline is importable from here, lazily (torch loads only when a function that needs it
is first used), for scripts and the napari console::

    from napari_seg_box import Project, TrainConfig, train_model, evaluate_project
    project = Project.open("my_project.zarr")

Layers: :mod:`napari_seg_box.core` (headless steps: store, training, prediction, metrics,
measurements), :mod:`napari_seg_box.workflows` (their compositions: tune, evaluate a project, batch
prediction, segment-and-quantify, the demo), :mod:`napari_seg_box.cli` (the ``napari-seg-box``
command) and :mod:`napari_seg_box.widgets` (the napari dock widgets).
"""

__version__ = "0.1.0"

import importlib as _importlib
import os as _os

# albumentations asks PyPI for a newer version on import (a blocking network call): never from lab
# servers and clusters, which are often offline. Setting the variable to 0 turns the check back on.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# workflow name -> module of napari_seg_box.workflows; everything else comes from napari_seg_box.core
_WORKFLOWS = {
    "train_model": "train",  # trains, then tunes the post-processing (core.train_model only trains)
    "iter_train_model": "train",
    "tune_postprocess": "tune",
    "iter_tune_postprocess": "tune",
    "evaluate_project": "evaluate",
    "iter_evaluate_project": "evaluate",
    "compare_models": "evaluate",
    "evaluate_baseline": "evaluate",
    "predict_project": "predict",
    "iter_predict_project": "predict",
    "predict_files": "predict",
    "iter_predict_files": "predict",
    "segment_and_quantify": "segment",
    "iter_segment_and_quantify": "segment",
    "run_demo": "demo",
}


def __getattr__(name: str):
    if name in _WORKFLOWS:
        module = _importlib.import_module(f".workflows.{_WORKFLOWS[name]}", __name__)
    else:
        module = _importlib.import_module(".core", __name__)
        if name not in getattr(module, "__all__", ()):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    core = _importlib.import_module(".core", __name__)
    return sorted(set(globals()) | set(_WORKFLOWS) | set(core.__all__))
