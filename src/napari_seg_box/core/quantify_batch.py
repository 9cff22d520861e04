"""Measurement of batches: label images (files, zarr, a project store) measured in parallel with dask.

Each task reads one image, measures it and keeps only tables, so one image is in memory per worker.
Tasks run with dask: local threads or processes, or an existing ``dask.distributed`` scheduler
(``scheduler="tcp://host:8786"``). A file that cannot be read gives a row with its ``error`` and the
batch goes on. A volume of the store is measured in 3D (:func:`~.volume_measure.measure_volume`,
with its voxel size), a time-lapse frame by frame (:func:`~.volume_measure.measure_timelapse`); a
stack of label files plane by plane, or in 3D when a ``voxel_size`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError
from .events import ItemDone, Progress, run_to_end
from .manifest import plane_name
from .quantify import Quantification, _pixel_size, measuring_scale, object_parts, quantify_labels
from .scheduling import run_tasks
from .voxels import check_voxel_size


@dataclass(frozen=True)
class QuantifyTask:
    """One image of a batch: where to read its labels (and intensity image) from."""

    name: str
    labels: str | None = None  # file path / zarr URL of the label image
    image: str | None = None  # file path of the intensity image
    store: str | None = None  # project store URL (labels/instances read from it)
    store_options: tuple = ()
    images_from: str | None = None  # where intensity images were looked for (none matched when image is None)


def tasks_from(source=None, *, images=None, project=None) -> list[QuantifyTask]:
    """Build tasks from label files (folder, glob, list, zarr) and matching intensity images, or a
    project store (its annotated images, instances where present)."""
    if project is not None:
        opts = tuple(sorted(project.storage_options.items()))
        return [QuantifyTask(n, store=project.url, store_options=opts) for n in project.image_names() if project.image_record(n).has_labels]
    from .io import PREDICTION_EXTRAS, _expand, _mask_key, _stem

    if source is None:
        raise DataError("Give label images to quantify (a folder, glob, list of files or a zarr), or a project store.")
    if isinstance(source, (str, os.PathLike)) and str(source).rstrip("/").lower().endswith(".zarr") and images is None:
        return [QuantifyTask(_stem(str(source).rstrip("/")), labels=str(source))]
    paths = _expand(source)
    # a folder written by `predict`: measure <name>_instances.tif, not its _labels / _probabilities
    objects = {_stem(p)[: -len("_instances")] for p in paths if _stem(p).endswith("_instances")}
    paths = [p for p in paths if not any(_stem(p).endswith(x) and _stem(p)[: -len(x)] in objects for x in PREDICTION_EXTRAS)]
    img_by_key = {}
    if images is not None:
        for p in _expand(images):
            img_by_key[_mask_key(p)] = p
    where = None if images is None else str(images)
    tasks = [
        QuantifyTask(_stem(p), labels=p, image=img_by_key.get(_mask_key(p)) or img_by_key.get(_stem(p)), images_from=where) for p in paths
    ]
    if images is not None and tasks and all(t.image is None for t in tasks):
        raise DataError(
            f"No label image matches an intensity image in {images} (e.g. {tasks[0].labels}): name them alike "
            "(a.tif with a.tif, a_instances.tif or a_mask.tif), or leave out --images to measure shapes only."
        )
    return tasks


def _read_task(task: QuantifyTask):
    """(labels, image, instances, pixel_size, unit, class_names, kind, record) of one task (the
    store's :class:`~.manifest.ImageRecord`, or None for a file)."""
    if task.store:
        from .store import Project

        project = Project.open(task.store, storage_options=dict(task.store_options))
        labels = project.get_labels(task.name)
        if labels is None:
            raise DataError(f"{task.name} has no annotation in the store.")
        rec = project.image_record(task.name)
        return (
            labels,
            project.get_image(task.name),
            project.get_instances(task.name),
            rec.pixel_size,
            project.unit,
            project.class_names,
            "semantic",
            rec,
        )
    from .io import read_image, read_ome_zarr

    if task.labels.rstrip("/").lower().endswith(".zarr"):
        image, labels = read_ome_zarr(task.labels)
        if labels is None:  # a plain zarr of labels
            labels, image = image, None
        return labels, image, None, None, "µm", None, "instances", None
    labels = read_image(task.labels)
    if task.image is None and task.images_from:  # reported, not measured without intensities in silence
        raise DataError(f"No intensity image in {task.images_from} matches {task.labels}: name it alike (a.tif with a_instances.tif).")
    image = read_image(task.image) if task.image else None
    return labels, image, None, None, "µm", None, "instances", None


def _quantify_task(task: QuantifyTask, options: dict) -> tuple[Any, Any]:
    """Run one task; never raises for bad input: returns an error row instead."""
    import pandas as pd

    try:
        labels, image, instances, ps, unit, names, kind, rec = _read_task(task)
        kind = options.get("kind") or kind
        names = options.get("class_names") or names
        if labels.ndim == 3 and (rec is not None and rec.is_stack or options.get("voxel_size") is not None):
            from .volume_measure import measure_stack

            q = measure_stack(
                labels, image, record=rec, name=task.name, instances=instances, kind=kind, class_names=names,
                pixel_size=options.get("pixel_size"), voxel_size=options.get("voxel_size"), unit=options.get("unit"),
            )  # fmt: skip
            return q.objects, q.images
        ps, unit = measuring_scale(options.get("pixel_size"), options.get("unit"), ps, unit)
        if labels.ndim == 3:  # a stack of label files: plane by plane
            qs = [
                quantify_labels(
                    labels[z], None if image is None else image[z], instances=None if instances is None else instances[z],
                    kind=kind, pixel_size=ps, unit=unit, class_names=names, name=plane_name(task.name, z),
                )
                for z in range(labels.shape[0])
            ]  # fmt: skip
            return pd.concat([q.objects for q in qs], ignore_index=True), pd.concat([q.images for q in qs], ignore_index=True)
        q = quantify_labels(labels, image, instances=instances, kind=kind, pixel_size=ps, unit=unit, class_names=names, name=task.name)
        if options.get("phenotype") is not None:  # a classifier names each object's phenotype
            from .classify.phenotype import add_phenotypes

            parts = object_parts(labels.astype(np.int64), instances, kind, options.get("background", (0, 1)))
            return add_phenotypes(q.objects, q.images, image, parts, options["phenotype"])
        return q.objects, q.images
    except Exception as err:  # the batch goes on; the row says what went wrong
        return _error_row(task, f"{type(err).__name__}: {err}" if not isinstance(err, DataError) else str(err))


def _error_row(task: QuantifyTask, msg: str) -> tuple[Any, Any]:
    """No objects, and the image's row with ``msg``: what an image that could not be measured gives."""
    import pandas as pd

    return pd.DataFrame(), pd.DataFrame(
        [{"image": task.name, "class": np.nan, "class_name": "", "n_objects": np.nan, "coverage_percent": np.nan, "error": msg}]
    )


def iter_quantify(
    source=None,
    *,
    images=None,
    project=None,
    kind: str | None = None,
    pixel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    voxel_size: float | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    phenotype=None,
    scheduler: str = "threads",
    workers: int = 1,
    cancel=None,
) -> Iterator[Any]:
    """Quantify many label images (a generator yielding :class:`ItemDone` per image).

    Parameters
    ----------
    source : label images: folder, glob, list of files, or a zarr / OME-Zarr (labels group).
    images : matching intensity images (folder, glob or list; matched by name).
    project : a project store instead: its annotated images (labels, instances, pixel size).
    kind : ``"instances"`` (object ids; default for files) or ``"semantic"`` (class labels).
    voxel_size : (z, y, x): stacks of label files are volumes, measured in 3D (a volume of the
        store is anyway, with its own voxel size unless this one is given).
    scheduler : ``"sync"``, ``"threads"``, ``"processes"`` or a ``dask.distributed`` scheduler
        address (``"tcp://host:8786"``).
    workers : parallel tasks for local schedulers (images in memory at once).
    phenotype : a :class:`~.classify.phenotype.PhenotypeModel`: each object is classified (columns
        ``phenotype``, its confidence and probabilities) and each image row counts the objects and
        their coverage per phenotype (2D images with intensities).

    Returns
    -------
    :class:`Quantification` of the whole batch (rows of unreadable images carry ``error``).
    """
    import pandas as pd

    tasks = tasks_from(source, images=images, project=project)
    if not tasks:
        raise DataError(f"No label images found in {source}.")
    _pixel_size(pixel_size)  # a bad pixel or voxel size fails here, once, not on every image
    voxel_size = check_voxel_size(voxel_size)
    options = {
        "kind": kind,
        "pixel_size": pixel_size,
        "unit": unit,
        "voxel_size": voxel_size,
        "class_names": class_names,
        "phenotype": phenotype,
    }
    results: list[tuple[int, Any, Any]] = []
    total = len(tasks)
    yield Progress(0, total, stage="quantify")
    for i, (objs, imgs) in run_tasks(
        _quantify_task, tasks, options, scheduler=scheduler, workers=workers, cancel=cancel, on_error=lambda t, f: _error_row(t, str(f))
    ):
        results.append((i, objs, imgs))
        err = imgs["error"].dropna().tolist() if "error" in imgs else []
        yield ItemDone(len(results) - 1, total, tasks[i].name, error=err[0] if err else None)
    results.sort(key=lambda r: r[0])
    objects = [r[1] for r in results if len(r[1])]
    objects = pd.concat(objects, ignore_index=True) if objects else pd.DataFrame(columns=["image", "class", "class_name", "label"])
    image_rows = pd.concat([r[2] for r in results], ignore_index=True)
    if "error" not in image_rows:
        image_rows["error"] = None
    errors = image_rows[image_rows["error"].notna()][["image", "error"]].to_dict("records")
    unit_cols = [c for c in objects.columns if c.startswith(("perimeter_", "equivalent_diameter_"))]
    return Quantification(objects, image_rows, unit=unit_cols[0].rsplit("_", 1)[1] if unit_cols else "px", errors=errors)


def quantify_batch(source=None, **kwargs) -> Quantification:
    """Blocking :func:`iter_quantify`."""
    return run_to_end(iter_quantify(source, **kwargs))
