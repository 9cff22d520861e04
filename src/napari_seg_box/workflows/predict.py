"""Predicting batches: the images of a project store, or image files, into label files in an output folder."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..core.config import as_config
from ..core.errors import DataError, StoreError
from ..core.events import ItemDone, check_cancel, run_to_end
from ..core.infer import PredictConfig, Predictor, as_predictor, check_orthogonal, iter_predict
from ..core.io import _stem, image_inputs, output_dir, output_path, read_image
from ..core.postprocess import PostprocessConfig
from .distributed import IN_PROCESS, absolute, image_loader, iter_images, refuse_export, worker_model


def iter_predict_project(
    project,
    version: str | None = None,
    *,
    names: Sequence[str] | None = None,
    split: str | None = None,
    config: PredictConfig | dict | None = None,
    predictor: Predictor | None = None,
    cancel=None,
    **config_kwargs,
) -> Iterator[Any]:
    """Predict images of a project store (default: all; or ``names`` / one ``split``).

    Yields :class:`Progress` and one :class:`ItemDone` per image (``error`` set when it failed, and
    the batch goes on). Returns ``{name: probabilities}`` of the images that succeeded: (K, Y, X),
    or (Z, K, Y, X) for a stack.
    """
    config = as_config(PredictConfig, config, config_kwargs)
    predictor = predictor or Predictor.from_project(project, version, device=config.device)
    names = list(names) if names is not None else project.image_names(split)
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        check_cancel(cancel)
        try:
            rec = project.image_record(name)
            check_orthogonal(rec, config)
            out[name] = yield from iter_predict(project.get_image(name), predictor, config=config, stack=rec.is_stack, cancel=cancel)
        except (DataError, StoreError) as err:
            yield ItemDone(i, len(names), name, error=str(err))
            continue
        yield ItemDone(i, len(names), name)
    return out


def predict_project(project, version: str | None = None, **kwargs) -> dict[str, np.ndarray]:
    """Blocking :func:`iter_predict_project`."""
    return run_to_end(iter_predict_project(project, version, **kwargs))


def iter_predict_files(
    inputs,
    out_dir,
    model,
    *,
    version: str | None = None,
    config: PredictConfig | dict | None = None,
    postprocess: PostprocessConfig | dict | None = None,
    save_probabilities: bool = False,
    export=None,
    project=None,
    scheduler: str = IN_PROCESS,
    workers: int = 1,
    cancel=None,
    **config_kwargs,
) -> Iterator[Any]:
    """Predict image files (folder, glob, list, zarr) and write label TIFFs into ``out_dir``.

    Each image gives ``<out_dir>/<stem>_labels.tif`` (semantic
    labels, 1..K) and ``<stem>_instances.tif`` (post-processed objects); with ``save_probabilities``
    also ``<stem>_probabilities.tif``. ``export(row, image, result)``, when given, writes more of
    each image (GeoJSON, OME-Zarr labels) from its row, image and :class:`PostprocessResult`, and may
    add the paths to the row. An unreadable image is reported in its row and the batch goes on.
    Returns a list of dicts (one row per input: name, path, labels, instances, n_objects, error).

    ``scheduler`` (``"sync"``: here, image after image) can spread the images over ``workers``
    (``"threads"``, ``"processes"``) or a dask cluster (``"tcp://host:8786"``): one task per image,
    in which the worker loads the model once per process (on its own GPU when it has one: ``device``
    ``"auto"``), reads the image, writes its TIFFs into ``out_dir`` (a folder all workers see) and
    returns its row; a task that fails twice gives a row with its error. Workers load the model from
    its store: ``model`` is the project store, or a :class:`Predictor` of ``project``. ``export``
    runs in this process only (``scheduler="sync"``).
    """
    config = as_config(PredictConfig, config, config_kwargs)
    refuse_export(export, scheduler)
    predictor = as_predictor(model, version=version, device=config.device)
    paths = image_inputs(inputs)
    stems: dict[str, list[str]] = {}
    for path in paths:
        stems.setdefault(_stem(path), []).append(path)
    clashes = {s: p for s, p in stems.items() if len(p) > 1}
    if clashes:
        stem, same = next(iter(clashes.items()))
        raise DataError(
            f"{len(clashes)} name(s) are shared by several inputs, whose outputs would overwrite each other: {stem} "
            f"({', '.join(same)}). Predict them into separate output folders (nothing was written)."
        )
    if scheduler != IN_PROCESS:
        project = project if project is not None else (model if hasattr(model, "model_version") else None)
        tasks = [(_stem(path), path, absolute(path)) for path in paths]
        return (
            yield from _predict_on_workers(
                tasks, out_dir, predictor, project, config, postprocess, save_probabilities, scheduler, workers, cancel
            )
        )
    sources = [(_stem(path), path, lambda path=path: (read_image(path), None)) for path in paths]  # kind unknown: read_axes decides
    return (yield from _predict_to_files(sources, out_dir, predictor, config, postprocess, save_probabilities, cancel, export))


def iter_predict_store_to_files(
    project,
    out_dir,
    *,
    version: str | None = None,
    names: Sequence[str] | None = None,
    split: str | None = None,
    config: PredictConfig | dict | None = None,
    predictor: Predictor | None = None,
    postprocess: PostprocessConfig | dict | None = None,
    save_probabilities: bool = False,
    export=None,
    scheduler: str = IN_PROCESS,
    workers: int = 1,
    cancel=None,
) -> Iterator[Any]:
    """The images of a project store (all, ``names`` or one ``split``) predicted into label files, as
    :func:`iter_predict_files` does for image files (``scheduler``, ``workers`` too: workers read
    the images from the store, which must be one they reach). Returns one row per image."""
    config = as_config(PredictConfig, config)
    refuse_export(export, scheduler)
    predictor = predictor or Predictor.from_project(project, version, device=config.device)
    names = list(names) if names is not None else project.image_names(split)
    if scheduler != IN_PROCESS:
        tasks = [(n, None, None) for n in names]
        return (
            yield from _predict_on_workers(
                tasks, out_dir, predictor, project, config, postprocess, save_probabilities, scheduler, workers, cancel
            )
        )
    sources = [(n, None, lambda n=n: (project.get_image(n), project.image_record(n))) for n in names]
    return (yield from _predict_to_files(sources, out_dir, predictor, config, postprocess, save_probabilities, cancel, export))


def _predict_to_files(sources, out_dir, predictor: Predictor, config, postprocess, save_probabilities: bool, cancel, export=None):
    """Predict ``(name, path, load)`` sources here, one after the other, into ``<name>_labels.tif`` etc."""
    pp = _postprocess_config(predictor, postprocess)
    output_dir(out_dir)
    rows = []
    for i, (name, path, load) in enumerate(sources):
        check_cancel(cancel)
        row = yield from _predict_image(name, path, load, out_dir, predictor, config, pp, save_probabilities, cancel=cancel, export=export)
        yield ItemDone(i, len(sources), name, result=row, error=row["error"])
        rows.append(row)
    return rows


def _predict_on_workers(tasks, out_dir, predictor, project, config, postprocess, save_probabilities, scheduler, workers, cancel):
    """Predict ``(name, path, path to read)`` tasks (no path: the store's image) on ``scheduler``'s workers."""
    options = {
        "ref": worker_model(predictor, project, device=config.device),
        "out_dir": absolute(output_dir(out_dir)),
        "config": config,
        "postprocess": _postprocess_config(predictor, postprocess),
        "save_probabilities": save_probabilities,
    }

    def item(row):  # the output paths as the caller named the folder (workers wrote to its absolute path)
        for kind in ("labels", "instances"):
            row[kind] = row[kind] and os.path.join(os.fspath(out_dir), os.path.basename(row[kind]))
        return row, row["error"]

    return (
        yield from iter_images(
            _predict_task, tasks, options, names=[t[0] for t in tasks], scheduler=scheduler, workers=workers, cancel=cancel,
            on_error=lambda task, failure: _row(task[0], task[1], error=str(failure)), item=item,
        )
    )  # fmt: skip


def _predict_task(task, options) -> dict:
    """One image on a worker: read it, predict with the worker's copy of the model, write its files; its row."""
    name, path, read_from = task
    ref = options["ref"]
    return run_to_end(
        _predict_image(
            name, path, image_loader(ref, name, read_from), options["out_dir"], ref.load(), options["config"],
            options["postprocess"], options["save_probabilities"],
        )
    )  # fmt: skip


def _postprocess_config(predictor: Predictor, postprocess) -> PostprocessConfig:
    return as_config(PostprocessConfig, postprocess) if postprocess is not None else predictor.default_postprocess


def _row(name: str, path: str | None, error: str | None = None) -> dict:
    return {"name": name, "path": path, "labels": None, "instances": None, "n_objects": None, "error": error}


def _predict_image(name, path, load, out_dir, predictor: Predictor, config, pp, save_probabilities: bool, *, cancel=None, export=None):
    """One image predicted, post-processed and written into ``<out_dir>/<name>_labels.tif`` (and
    ``_instances``, ``_probabilities``): a generator of :class:`Progress`, returning its row (with
    its ``error`` when the image could not be used). Here and on workers alike."""
    import tifffile

    row = _row(name, path)
    try:
        outputs = {kind: output_path(out_dir, name, f"_{kind}.tif") for kind in ("labels", "instances", "probabilities")}
        image, rec = load()
        if rec is not None:
            check_orthogonal(rec, config)
        probs = yield from iter_predict(image, predictor, config=config, stack=rec.is_stack if rec else None, cancel=cancel)
        res = predictor.objects(probs, pp, record=rec)  # a volume of the store: 3D objects
        row["labels"], row["instances"] = outputs["labels"], outputs["instances"]
        tifffile.imwrite(row["labels"], res.semantic, compression="zlib")
        tifffile.imwrite(row["instances"], res.instances.astype(np.uint32), compression="zlib")
        if save_probabilities:
            tifffile.imwrite(outputs["probabilities"], probs.astype(np.float32), compression="zlib")
        row["n_objects"] = res.n_objects
        if export is not None:
            export(row, image, res)
    except (DataError, StoreError) as err:
        row["error"] = str(err)
    return row


def predict_files(inputs, out_dir, model, **kwargs) -> list[dict]:
    """Blocking :func:`iter_predict_files`."""
    return run_to_end(iter_predict_files(inputs, out_dir, model, **kwargs))
