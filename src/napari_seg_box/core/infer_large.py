"""Prediction of images and volumes larger than memory: zarr / OME-Zarr / dask in, zarr out, band by band.

:func:`iter_predict_large` reads a plane one tile-row band at a time (for a 2.5D model, the same band
of the neighbouring planes), predicts it with the tiled prediction of :mod:`.tiling` and writes
finished rows at once; a volume goes plane by plane. Memory is bounded by a few bands of one plane,
whatever the height or the number of planes. The normalisation is the one of :func:`.infer.iter_predict`
(each plane's own percentiles), so both give the same labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .config import as_config
from .data import percentile_bounds, scale
from .errors import DataError
from .events import Message, Progress, check_cancel, run_to_end
from .infer import PredictConfig, _check_image, _predict_2d, as_predictor
from .io import open_array
from .layout import read_axes
from .planes import with_context
from .tiling import _predict_plane
from .versions import ModelVersion


def iter_predict_large(
    source,
    out,
    model,
    *,
    version: str | None = None,
    info: ModelVersion | dict | None = None,
    config: PredictConfig | dict | None = None,
    write_probabilities: bool = True,
    probability_dtype: str = "float16",
    chunk: int = 1024,
    stack: bool | None = None,
    cancel=None,
    **config_kwargs,
) -> Iterator[Any]:
    """Predict a 2D image or a volume stored as zarr / OME-Zarr / dask, band by band, into a zarr group.

    Memory stays bounded: the input is read one tile-row band at a time and finished rows are
    written out at once; the accumulators hold about two tile heights of the image width.

    Parameters
    ----------
    source : zarr array, dask array, path/URL of a zarr array or OME-Zarr (full resolution is used),
        shape (Y, X), (Y, X, C), or a volume (Z, Y, X[, C]) predicted plane by plane (with its
        neighbouring planes for a 2.5D model).
    out : path/URL of the output zarr group (created; must not exist), or an open zarr group.
    write_probabilities : also write ``probabilities`` (K, Y, X), (Z, K, Y, X) for a volume, in ``probability_dtype``.
    stack : how a 3D array reads (:func:`~.layout.read_axes`; by default a short last axis is channels).

    Returns
    -------
    The output zarr group, with ``labels`` (Y, X) or (Z, Y, X) uint8 (argmax + 1, project label
    values) and, if asked, ``probabilities``.
    """

    config = as_config(PredictConfig, config, config_kwargs)
    predictor = as_predictor(model, version=version, info=info, device=config.device)
    array = open_array(source)
    shape = tuple(array.shape)
    if len(shape) not in (2, 3, 4):
        raise DataError(f"Block-wise prediction takes a 2D image (Y, X[, C]) or a volume (Z, Y, X[, C]); got shape {shape}.")
    layout = read_axes(shape, stack=stack, channels=predictor.image_channels)
    if layout.channel_axis not in (None, len(shape) - 1):
        raise DataError(f"Block-wise prediction needs the channels last; got shape {shape}: store the image channel-last (Y, X, C).")
    planes = shape[0] if layout.is_stack else None
    plane_shape = shape[1:] if layout.is_stack else shape
    _check_image(plane_shape, predictor)
    if planes is not None and not hasattr(array, "dask"):
        import dask.array as da

        array = da.from_array(array, chunks=(1, *array.shape[1:]))  # lazy planes: array[z] reads nothing yet
    H, W = plane_shape[:2]
    K = predictor.outputs
    group = _output_group(out)
    ch = (min(chunk, H), min(chunk, W))
    lead = () if planes is None else (planes,)
    labels_arr = group.create_array("labels", shape=(*lead, H, W), dtype="uint8", chunks=(*(1,) * len(lead), *ch))
    probs_arr = None
    if write_probabilities:
        probs_arr = group.create_array("probabilities", shape=(*lead, K, H, W), dtype=probability_dtype, chunks=(*(1,) * len(lead), 1, *ch))
    group.attrs.update(
        {
            "napari_seg_box": {
                "kind": "prediction",
                "model_version": predictor.version,
                "class_names": predictor.class_names,
                "config": config.to_dict(),
            }
        }
    )
    for z in [None] if planes is None else range(planes):
        check_cancel(cancel)
        at = () if z is None else (z,)
        if z is not None:
            yield Progress(z, planes, stage="slices")
        stage = "predict (blocks)" if z is None else f"slice {z + 1}/{planes} (blocks)"
        yield from _plane(array, z, predictor, config, labels_arr, probs_arr, at, ch, probability_dtype, cancel, stage)
    if planes is not None:
        yield Progress(planes, planes, stage="slices")
    return group


def _output_group(out):
    import zarr

    if not (isinstance(out, str) or hasattr(out, "__fspath__")):
        return out
    try:
        return zarr.open_group(str(out), mode="w-")
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as err:
        raise DataError(f"The output {out} exists already: choose a new path (nothing was overwritten).") from err


def _plane(array, z, predictor, config, labels_arr, probs_arr, at, ch, probability_dtype, cancel, stage):
    """Predict plane ``z`` of ``array`` (the image itself when ``z`` is None) into ``labels_arr[at]``."""
    k = predictor.context
    sources = [array] if z is None else [array[int(i)] for i in np.clip(np.arange(z - k, z + k + 1), 0, array.shape[0] - 1)]
    H, W = sources[0].shape[:2]
    if config.tile_size > H or config.tile_size > W:  # small: in memory
        if z is None:
            yield Message("The image is smaller than one tile: predicted in memory.")
        plane = np.asarray(sources[0]) if z is None else with_context(array, z, k)
        probs = yield from _predict_2d(plane, predictor, config, cancel=cancel, stage=stage)
        labels_arr[at] = predictor.labels(probs)
        if probs_arr is not None:
            probs_arr[at] = probs.astype(probability_dtype)
        return
    bounds = {id(s): percentile_bounds(s, predictor.percentiles) for s in sources}

    def read_rows(y0, y1):
        blocks = []
        for s in sources:
            block = np.asarray(s[y0:y1])
            blocks.append(scale(block[..., None] if block.ndim == 2 else block, *bounds[id(s)]))
        if z is None and k:  # a lone 2D image: its own neighbours
            blocks = blocks * (2 * k + 1)
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=-1)

    # writes arrive in row order with arbitrary heights: buffer them up to whole chunk rows
    pending: list[np.ndarray] = []
    state = {"start": 0}

    def flush(final=False):
        if not pending:
            return
        buf = np.concatenate(pending, axis=1)
        n = buf.shape[1] if final else (buf.shape[1] // ch[0]) * ch[0]
        if n == 0:
            return
        y0 = state["start"]
        for x0 in range(0, W, ch[1]):  # chunk column by chunk column: small temporaries
            part = buf[:, :n, x0 : x0 + ch[1]]
            labels_arr[(*at, slice(y0, y0 + n), slice(x0, x0 + ch[1]))] = predictor.labels(part)
            if probs_arr is not None:
                probs_arr[(*at, slice(None), slice(y0, y0 + n), slice(x0, x0 + ch[1]))] = part.astype(probability_dtype)
        rest = buf[:, n:]
        pending.clear()
        if rest.shape[1]:
            pending.append(np.ascontiguousarray(rest))
        state["start"] = y0 + n

    def write_rows(y0, probs):
        pending.append(probs)  # a fresh array (acc / wsum): no copy needed
        if sum(p.shape[1] for p in pending) >= ch[0]:
            flush()

    yield from _predict_plane(predictor, read_rows, (H, W), predictor.in_channels, write_rows, config, cancel=cancel, stage=stage)
    flush(final=True)


def predict_large(source, out, model, **kwargs):
    """Blocking :func:`iter_predict_large`; returns the output zarr group."""
    return run_to_end(iter_predict_large(source, out, model, **kwargs))
