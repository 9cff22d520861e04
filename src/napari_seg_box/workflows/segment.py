"""Segment-and-quantify: predict images with a model version, post-process, measure every object."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..core.config import as_config
from ..core.errors import DataError, StoreError
from ..core.events import ItemDone, check_cancel, run_to_end
from ..core.infer import PredictConfig, Predictor, check_orthogonal, iter_predict
from ..core.io import _stem, image_inputs, read_image
from ..core.manifest import plane_name
from ..core.postprocess import PostprocessConfig
from ..core.quantify import Quantification, measuring_scale, object_parts, quantify_labels
from .distributed import IN_PROCESS, absolute, image_loader, iter_images, worker_model


def iter_segment_and_quantify(
    project,
    version: str | None = None,
    *,
    names: Sequence[str] | None = None,
    files=None,
    postprocess: PostprocessConfig | dict | None = None,
    predict_config=None,
    predictor: Predictor | None = None,
    pixel_size=None,
    unit: str | None = None,
    keep_labels: bool = True,
    phenotype=None,
    scheduler: str = IN_PROCESS,
    workers: int = 1,
    cancel=None,
) -> Iterator[Any]:
    """Segment images with a model version and measure their objects (a generator, no Qt).

    Parameters
    ----------
    project : the project store holding the model (and, without ``files``, the images).
    names : images of the store (default: all); or ``files``: a folder, glob or list of image files.
    postprocess : :class:`PostprocessConfig` (default: the one tuned with the model version).
    predictor : the model already loaded (default: ``version`` of ``project``).
    pixel_size, unit : physical pixel size; given, they win over the store's (per image, then the
        project's: :func:`~..core.quantify.measuring_scale`); none at all measures in pixels.
    keep_labels : also return the instance label image of each image (for display).
    phenotype : a :class:`~..core.classify.phenotype.PhenotypeModel`: every object is classified
        (columns ``phenotype``, its confidence and probabilities), every image row counts objects and
        coverage per phenotype.
    scheduler, workers : ``"sync"`` (default): here, image after image; ``"threads"``,
        ``"processes"`` (``workers`` of them) or a dask scheduler address (``"tcp://host:8786"``):
        one task per image, predicted, post-processed and measured by a worker that loads the model
        once per process (on its own GPU when it has one) and reads the image itself (files on a
        file system the workers see, or the store); the tables are the same as here.

    Yields :class:`Progress` (tiles) and :class:`ItemDone` per image (``error`` when it failed; the
    batch goes on). Returns ``(Quantification, {name: instance labels})``: (Y, X), or (Z, Y, X) for a
    stack. A volume of the store has 3D objects (:meth:`~..core.infer.Predictor.postprocess_volume`
    with its voxel size, measured by :func:`~..core.volume_measure.measure_volume`: volume, surface,
    extent in z, in physical units when the voxel size is known); a time-lapse is measured frame by
    frame (rows ``name[t=3]``, a ``frame`` column); a stack read from a file, plane by plane
    (rows ``name[z=3]``).
    """
    import pandas as pd

    predictor = predictor or Predictor.from_project(project, version)
    pp = as_config(PostprocessConfig, postprocess) if postprocess is not None else predictor.default_postprocess
    if files is not None:
        items = [(_stem(p), lambda p=p: (read_image(p), None), None, p) for p in image_inputs(files)]
    else:
        names = list(names) if names is not None else project.image_names()
        items = [(n, lambda n=n: (project.get_image(n), project.image_record(n)), project.image_record(n).pixel_size, None) for n in names]
    if not items:
        raise DataError("No images to quantify: choose a folder or files with images, or add images to the project.")
    options = {"postprocess": pp, "predict_config": predict_config, "pixel_size": pixel_size, "unit": unit}
    options |= {"keep_labels": keep_labels, "phenotype": phenotype}
    scales = [measuring_scale(pixel_size, unit, stored_ps, project.unit if stored_ps else None) for _, _, stored_ps, _ in items]
    if scheduler == IN_PROCESS:
        results = []
        for i, ((name, load, _, path), scale) in enumerate(zip(items, scales)):
            check_cancel(cancel)
            results.append((yield from _segment_image(name, path, load, scale, predictor, options, cancel=cancel)))
            yield ItemDone(i, len(items), name, error=results[-1][3])
    else:
        options["ref"] = worker_model(predictor, project, device=as_config(PredictConfig, predict_config).device)
        tasks = [(name, path, absolute(path), scale) for (name, _, _, path), scale in zip(items, scales)]
        results = yield from iter_images(
            _segment_task, tasks, options, names=[t[0] for t in tasks], scheduler=scheduler, workers=workers, cancel=cancel,
            on_error=lambda task, failure: _failed(task[0], str(failure)), item=lambda res: (None, res[3]),
        )  # fmt: skip
    objects, rows, errors, labels = [], [], [], {}
    for (name, *_), (objs, imgs, found, error) in zip(items, results):
        objects += objs
        rows += imgs
        if found is not None:
            labels[name] = found
        if error is not None:
            errors.append({"image": name, "error": error})
    objs = [o for o in objects if len(o)]
    table = pd.concat(objs, ignore_index=True) if objs else pd.DataFrame(columns=["image", "class", "class_name", "label"])
    images = pd.concat(rows, ignore_index=True)
    unit_cols = [c for c in table.columns if c.startswith(("perimeter_", "equivalent_diameter_"))]
    q = Quantification(table, images, unit=unit_cols[0].rsplit("_", 1)[1] if unit_cols else "px", errors=errors)
    return q, labels


def _segment_task(task, options):
    """One image on a worker: read it, segment it with the worker's copy of the model, measure it."""
    name, path, read_from, scale = task
    ref = options["ref"]
    return run_to_end(_segment_image(name, path, image_loader(ref, name, read_from), scale, ref.load(), options))


def _failed(name: str, error: str):
    """The result of an image that could not be segmented: no objects, its row with the error."""
    import pandas as pd

    return [], [pd.DataFrame([{"image": name, "n_objects": np.nan, "coverage_percent": np.nan, "error": error}])], None, error


def _segment_image(name, path, load, scale, predictor: Predictor, options: dict, *, cancel=None):
    """One image predicted, post-processed and measured, here and on workers alike (a generator of
    :class:`Progress`). Returns ``(object tables, image rows, instance labels or None, error or None)``."""
    ps, u = scale
    pp, phenotype = options["postprocess"], options["phenotype"]
    try:
        image, rec = load()
        if rec is not None:
            check_orthogonal(rec, as_config(PredictConfig, options["predict_config"]))
        probs = yield from iter_predict(
            image, predictor, config=options["predict_config"], stack=rec.is_stack if rec else None, cancel=cancel
        )
        if rec is not None and rec.is_stack:
            q, found = _measure_stack(rec, image, probs, predictor, pp, options["pixel_size"], options["unit"])
            return [q.objects], [q.images], found if options["keep_labels"] else None, None
        planes = [(None, image, probs)] if probs.ndim == 3 else [(z, image[z], probs[z]) for z in range(probs.shape[0])]
        objects, rows, found = [], [], []
        for z, pixels, p in planes:
            res = predictor.postprocess(p, pp)
            q = quantify_labels(
                res.semantic, pixels, instances=res.instances, pixel_size=ps, unit=u, class_names=predictor.class_names,
                name=plane_name(name, z),
            )  # fmt: skip
            if phenotype is not None:
                from ..core.classify.phenotype import add_phenotypes

                parts = object_parts(res.semantic, res.instances, "semantic", (0, 1))
                q.objects, q.images = add_phenotypes(q.objects, q.images, pixels, parts, phenotype)
            if path:
                q.images["path"] = path
            objects.append(q.objects)
            rows.append(q.images)
            found.append(res.instances)
        labels = (found[0] if probs.ndim == 3 else np.stack(found)) if options["keep_labels"] else None
        return objects, rows, labels, None
    except (DataError, StoreError) as err:
        return _failed(name, str(err))


def _measure_stack(rec, image, probs, predictor: Predictor, pp, pixel_size, unit) -> tuple[Quantification, np.ndarray]:
    """A store stack's objects as the image is (a volume's in 3D with its voxel size, or the one given
    as three numbers; a time-lapse's frame by frame), measured the same way; and the instance labels."""
    import dataclasses

    from ..core.volume_measure import measure_stack

    voxel = tuple(float(v) for v in pixel_size) if pixel_size is not None and np.size(pixel_size) == 3 else None
    if voxel is not None and not rec.is_timelapse:  # an explicit voxel size wins
        rec = dataclasses.replace(rec, spacing=voxel)
    res = predictor.objects(probs, pp, record=rec)
    q = measure_stack(
        res.semantic, image, record=rec, instances=res.instances, class_names=predictor.class_names,
        pixel_size=None if voxel is not None else pixel_size, unit=unit,
    )  # fmt: skip
    return q, res.instances


def segment_and_quantify(project, version: str | None = None, **kwargs):
    """Blocking :func:`iter_segment_and_quantify`: ``(Quantification, {name: instance labels})``."""
    return run_to_end(iter_segment_and_quantify(project, version, **kwargs))
