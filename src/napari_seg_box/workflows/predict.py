"""Predicting batches: the images of a project store, or image files, into label files in an output folder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..core.config import as_config
from ..core.errors import DataError, StoreError
from ..core.events import ItemDone, check_cancel, run_to_end
from ..core.infer import PredictConfig, Predictor, as_predictor, check_orthogonal, iter_predict
from ..core.io import _stem, image_inputs, output_dir, output_path, read_image
from ..core.postprocess import PostprocessConfig


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
    """
    config = as_config(PredictConfig, config, config_kwargs)
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
    cancel=None,
) -> Iterator[Any]:
    """The images of a project store (all, ``names`` or one ``split``) predicted into label files, as
    :func:`iter_predict_files` does for image files. Returns one row per image."""
    config = as_config(PredictConfig, config)
    predictor = predictor or Predictor.from_project(project, version, device=config.device)
    names = list(names) if names is not None else project.image_names(split)
    sources = [(n, None, lambda n=n: (project.get_image(n), project.image_record(n))) for n in names]
    return (yield from _predict_to_files(sources, out_dir, predictor, config, postprocess, save_probabilities, cancel, export))


def _predict_to_files(sources, out_dir, predictor: Predictor, config, postprocess, save_probabilities: bool, cancel, export=None):
    """Predict ``(name, path, load)`` sources, post-process, write ``<name>_labels.tif`` etc."""
    import tifffile

    pp = as_config(PostprocessConfig, postprocess) if postprocess is not None else predictor.default_postprocess
    output_dir(out_dir)
    rows = []
    for i, (name, path, load) in enumerate(sources):
        check_cancel(cancel)
        row = {"name": name, "path": path, "labels": None, "instances": None, "n_objects": None, "error": None}
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
            yield ItemDone(i, len(sources), name, result=row)
        except (DataError, StoreError) as err:
            row["error"] = str(err)
            yield ItemDone(i, len(sources), name, result=row, error=str(err))
        rows.append(row)
    return rows


def predict_files(inputs, out_dir, model, **kwargs) -> list[dict]:
    """Blocking :func:`iter_predict_files`."""
    return run_to_end(iter_predict_files(inputs, out_dir, model, **kwargs))
