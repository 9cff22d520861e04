"""Predicting batches: the images of a project store, or image files into an output folder."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from ..core.errors import DataError, StoreError
from ..core.events import ItemDone, check_cancel, run_to_end
from ..core.infer import PredictConfig, Predictor, _make_config, as_predictor, iter_predict
from ..core.io import _expand, _stem, read_image
from ..core.postprocess import PostprocessConfig
from ..core.postprocess import postprocess as run_postprocess


# ---------------------------------------------------------------------- batches
def iter_predict_project(
    project,
    version: str | None = None,
    *,
    names: Sequence[str] | None = None,
    split: str | None = None,
    config: PredictConfig | None = None,
    predictor: Predictor | None = None,
    cancel=None,
    **config_kwargs,
) -> Iterator[Any]:
    """Predict images of a project store (default: all; or ``names`` / one ``split``).

    Yields :class:`Progress` and one :class:`ItemDone` per image (``error`` set when it failed, and
    the batch goes on). Returns ``{name: (K, Y, X) probabilities}`` of the images that succeeded.
    """
    config = _make_config(config, config_kwargs)
    predictor = predictor or Predictor.from_project(project, version, device=config.device)
    names = list(names) if names is not None else project.image_names(split)
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        check_cancel(cancel)
        try:
            probs = yield from iter_predict(project.get_image(name), predictor, config=config, stack=False, cancel=cancel)
        except (DataError, StoreError) as err:
            yield ItemDone(i, len(names), name, error=str(err))
            continue
        out[name] = probs
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
    config: PredictConfig | None = None,
    postprocess=None,
    save_probabilities: bool = False,
    cancel=None,
    **config_kwargs,
) -> Iterator[Any]:
    """Predict image files (folder, glob, list, zarr) and write label TIFFs into ``out_dir``.

    Each image gives ``<out_dir>/<stem>_labels.tif`` (semantic labels, 1..K) and
    ``<stem>_instances.tif`` (post-processed objects); with ``save_probabilities`` also
    ``<stem>_probabilities.tif`` (K, Y, X float32). An unreadable image is reported in its row and the
    batch goes on. Returns a list of dicts (one row per input: name, path, outputs, n_objects, error).
    """
    import os

    import tifffile


    config = _make_config(config, config_kwargs)
    predictor = as_predictor(model, version=version, device=config.device)
    pp = postprocess if postprocess is not None else PostprocessConfig.for_model(predictor.meta)
    if isinstance(pp, dict):
        pp = PostprocessConfig.from_dict(pp)
    paths = _expand(inputs)
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for i, path in enumerate(paths):
        check_cancel(cancel)
        stem = _stem(path)
        row = {"name": stem, "path": path, "labels": None, "instances": None, "n_objects": None, "error": None}
        try:
            image = read_image(path)
            probs = yield from iter_predict(image, predictor, config=config, cancel=cancel)
            if probs.ndim == 4:
                results = [run_postprocess(p, pp) for p in probs]
                sem = np.stack([r.semantic for r in results])
                inst = np.stack([r.instances for r in results])
            else:
                r = run_postprocess(probs, pp)
                sem, inst = r.semantic, r.instances
            row["labels"] = os.path.join(out_dir, f"{stem}_labels.tif")
            row["instances"] = os.path.join(out_dir, f"{stem}_instances.tif")
            tifffile.imwrite(row["labels"], sem, compression="zlib")
            tifffile.imwrite(row["instances"], inst.astype(np.uint32), compression="zlib")
            if save_probabilities:
                tifffile.imwrite(os.path.join(out_dir, f"{stem}_probabilities.tif"), probs.astype(np.float32), compression="zlib")
            row["n_objects"] = int(len(np.unique(inst)) - (1 if (inst == 0).any() else 0))
            yield ItemDone(i, len(paths), stem, result=row)
        except (DataError, StoreError) as err:
            row["error"] = str(err)
            yield ItemDone(i, len(paths), stem, result=row, error=str(err))
        rows.append(row)
    return rows


def predict_files(inputs, out_dir, model, **kwargs) -> list[dict]:
    """Blocking :func:`iter_predict_files`."""
    return run_to_end(iter_predict_files(inputs, out_dir, model, **kwargs))
