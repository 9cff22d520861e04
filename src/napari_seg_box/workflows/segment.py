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
    objects, rows, errors, labels = [], [], [], {}
    for i, (name, load, stored_ps, path) in enumerate(items):
        check_cancel(cancel)
        ps, u = measuring_scale(pixel_size, unit, stored_ps, project.unit if stored_ps else None)
        try:
            image, rec = load()
            if rec is not None:
                check_orthogonal(rec, as_config(PredictConfig, predict_config))
            probs = yield from iter_predict(image, predictor, config=predict_config, stack=rec.is_stack if rec else None, cancel=cancel)
            if rec is not None and rec.is_stack:
                q, found = _measure_stack(rec, image, probs, predictor, pp, pixel_size, unit)
                objects.append(q.objects)
                rows.append(q.images)
                if keep_labels:
                    labels[name] = found
                yield ItemDone(i, len(items), name)
                continue
            planes = [(None, image, probs)] if probs.ndim == 3 else [(z, image[z], probs[z]) for z in range(probs.shape[0])]
            found = []
            for z, pixels, p in planes:
                res = predictor.postprocess(p, pp)
                q = quantify_labels(
                    res.semantic,
                    pixels,
                    instances=res.instances,
                    pixel_size=ps,
                    unit=u,
                    class_names=predictor.class_names,
                    name=plane_name(name, z),
                )
                if phenotype is not None:
                    from ..core.classify.phenotype import add_phenotypes

                    parts = object_parts(res.semantic, res.instances, "semantic", (0, 1))
                    q.objects, q.images = add_phenotypes(q.objects, q.images, pixels, parts, phenotype)
                if path:
                    q.images["path"] = path
                objects.append(q.objects)
                rows.append(q.images)
                found.append(res.instances)
            if keep_labels:
                labels[name] = found[0] if probs.ndim == 3 else np.stack(found)
            yield ItemDone(i, len(items), name)
        except (DataError, StoreError) as err:
            errors.append({"image": name, "error": str(err)})
            rows.append(pd.DataFrame([{"image": name, "n_objects": np.nan, "coverage_percent": np.nan, "error": str(err)}]))
            yield ItemDone(i, len(items), name, error=str(err))
    objs = [o for o in objects if len(o)]
    table = pd.concat(objs, ignore_index=True) if objs else pd.DataFrame(columns=["image", "class", "class_name", "label"])
    images = pd.concat(rows, ignore_index=True)
    unit_cols = [c for c in table.columns if c.startswith(("perimeter_", "equivalent_diameter_"))]
    q = Quantification(table, images, unit=unit_cols[0].rsplit("_", 1)[1] if unit_cols else "px", errors=errors)
    return q, labels


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
