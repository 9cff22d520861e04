"""Batches of images spread over worker processes or a dask cluster, one image per task.

What the prediction and segment-and-quantify workflows share when ``scheduler`` is not ``"sync"``:
the model travels as a :class:`~..core.model_ref.ModelRef` (each worker process loads it once, on
its own device: its GPU when it has one), an image as its file path or its name in the project store,
which the worker reads itself; results come back as images finish (:func:`iter_images`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

from ..core.errors import ConfigError
from ..core.events import ItemDone, Progress
from ..core.model_ref import ModelRef
from ..core.scheduling import run_tasks

IN_PROCESS = "sync"


def worker_model(predictor, project, *, device: str = "auto") -> ModelRef:
    """The reference workers load ``predictor`` by: its version in ``project`` (which must hold it,
    with the same weights), on each worker's ``device``."""
    if project is None or not getattr(project, "url", None):
        raise ConfigError(
            "Workers load the model from its project store: pass project= (the store that holds the model version), "
            "or predict with scheduler='sync'.",
            hints={"cli": "Give the model's store as STORE."},
        )
    if predictor.version is None:
        raise ConfigError(
            "This model is not a saved version of a project store, which workers could load: save it first, or predict with scheduler='sync'."
        )
    stored = project.model_version(predictor.version)
    if stored.weights_sha256 and predictor.info.weights_sha256 and stored.weights_sha256 != predictor.info.weights_sha256:
        raise ConfigError(
            f"The model given is not version {predictor.version} of {project.url} (other weights): pass the project the model "
            "was loaded from."
        )
    return dataclasses.replace(ModelRef.of(predictor, project, device=device), store=absolute(project.url))


def image_loader(ref: ModelRef, name: str, path: str | None) -> Callable[[], tuple[Any, Any]]:
    """How a worker reads an image: ``(pixels, None)`` from the file ``path``, else ``(pixels, record)``
    of image ``name`` in the store of ``ref``."""
    if path is not None:
        from ..core.io import read_image

        return lambda: (read_image(path), None)

    def load():
        project = ref.open_project()
        return project.get_image(name), project.image_record(name)

    return load


def absolute(path: str | None) -> str | None:
    """A local path as workers in other folders (on a shared file system) find it; a URL as it is."""
    return path if path is None or "://" in str(path) else os.path.abspath(os.fspath(path))


def iter_images(
    fn, tasks: list, options: dict, *, names: list[str], scheduler: str, workers: int, cancel, on_error, item=None
) -> Iterator[Any]:
    """Run ``fn(task, options)`` for each image on ``scheduler``; yield :class:`ItemDone` (and a
    :class:`Progress` of images) as each finishes, and return the results in the order of ``tasks``.

    ``on_error(task, failure)`` is the result of a task that failed on its worker (after its retry);
    ``item(result)`` gives the ItemDone's ``(result, error)``.
    """
    results: list[Any] = [None] * len(tasks)
    total = len(tasks)
    yield Progress(0, total, stage="images")
    for done, (i, res) in enumerate(run_tasks(fn, tasks, options, scheduler=scheduler, workers=workers, cancel=cancel, on_error=on_error)):
        results[i] = res
        result, error = item(res) if item is not None else (None, None)
        yield ItemDone(done, total, names[i], result=result, error=error)
        yield Progress(done + 1, total, stage="images")
    return results


def refuse_export(export, scheduler: str) -> None:
    """Exports run where the images and objects are, in this process: not with a scheduler."""
    if export is not None and scheduler != IN_PROCESS:
        raise ConfigError(
            f"Exports (GeoJSON, OME-Zarr labels) are written in this process, not by workers: predict with scheduler='sync' "
            f"to export, or without the export on {scheduler}.",
            hints={"cli": "Leave out --geojson / --ome-zarr-labels with --scheduler, or --scheduler with them."},
        )
