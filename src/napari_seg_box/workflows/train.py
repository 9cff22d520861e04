"""Training as a user means it: the network trained, then its post-processing tuned on the part of the
data the training kept aside, so that evaluation, prediction and measurement after a plain ``train``
use settings fitted to these objects (a fixed watershed seed distance over-split long objects)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ..core.errors import CancelledError, DataError
from ..core.events import Message, run_to_end
from ..core.infer import Predictor
from ..core.train import TrainConfig, iter_train
from ..core.train.distributed import launched_rank
from .tune import iter_tune_postprocess


def iter_train_model(
    project, config: TrainConfig | None = None, *, tune: bool = True, cancel: threading.Event | None = None, resume: bool | str = False
) -> Iterator[Any]:
    """:func:`~napari_seg_box.core.train.iter_train`, then (``tune``) the post-processing tuned on the
    version's validation part and saved with it (:func:`~.tune.iter_tune_postprocess`). Returns the
    version id. A tuning that cannot run (no objects in the validation part) or is stopped leaves the
    version with the default settings and says so; the version itself is never lost to it.

    A classification project trains a classifier instead (``config`` a
    :class:`~napari_seg_box.core.classify.ClassifyConfig`; nothing to tune)."""
    if project.task == "classification":
        from ..core.classify import ClassifyConfig, iter_train_classifier

        if config is not None and not isinstance(config, ClassifyConfig):
            raise DataError("This is a classification project: give classifier settings (ClassifyConfig), not U-Net settings.")
        return (yield from iter_train_classifier(project, config, cancel=cancel, resume=resume))
    version = yield from iter_train(project, config, cancel=cancel, resume=resume)
    if not tune or launched_rank() != 0:  # under torchrun, rank 0 tunes
        return version
    if cancel is not None and cancel.is_set():
        yield Message(f"Post-processing not tuned (training was stopped): `tune` does it later for {version}.", "warning")
        return version
    try:
        predictor = Predictor.from_project(project, version)
        if predictor.default_postprocess.instances == "none":
            return version
        yield Message(f"Tuning the post-processing of {version} on its validation part.", topic="tuning")
        yield from iter_tune_postprocess(project, version, predictor=predictor, cancel=cancel)
    except CancelledError:
        yield Message(f"Tuning stopped: {version} keeps the default post-processing (`tune` does it later).", "warning")
    except DataError as err:
        yield Message(f"Post-processing not tuned ({err.message}): {version} keeps the default settings.", "warning")
    return version


def train_model(project, config: TrainConfig | None = None, *, on_event=None, **kwargs) -> str:
    """Blocking :func:`iter_train_model`: train, tune, and return the new version id."""
    return run_to_end(iter_train_model(project, config, **kwargs), on_event)
