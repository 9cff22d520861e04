"""Prediction of images and volumes larger than memory: zarr / OME-Zarr / dask in, zarr out, band by band,
in this process or spread over workers (threads, processes, a dask.distributed cluster).

:func:`iter_predict_large` reads a plane in blocks of input chunk rows (for a 2.5D model, the same
rows of the neighbouring planes), predicts it with the tiled prediction of :mod:`.tiling` and writes
finished rows as whole output chunk rows; a volume goes plane by plane. Memory is bounded by a few
blocks of one plane, whatever the height or the number of planes. The normalisation is the one of
:func:`.infer.iter_predict` (each plane's own percentiles), so both give the same labels.

With ``scheduler="threads"``, ``"processes"`` or a dask.distributed address, each plane is cut into
bands of whole output chunk rows (:func:`.infer_blocks.plan_bands`), one task each: no two tasks
write the same chunk, and each band is predicted from the plane's global tile grid, so labels and
probabilities are identical to a run in one process (:mod:`.infer_blocks`). The percentiles are
computed once, here, and sent with the tasks; the model goes as a :class:`~.model_ref.ModelRef`
that each worker process loads once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from .config import as_config
from .data import percentile_bounds
from .errors import CancelledError, ConfigError, DataError, SegBoxError
from .events import Message, Progress, check_cancel, run_to_end
from .infer import PredictConfig, Predictor, _channels_of, as_predictor, check_channels
from .infer_blocks import BandJob, PlaneView, band_task, is_small, iter_band, plan_bands
from .io import open_array
from .layout import read_axes
from .model_ref import ModelRef
from .versions import ModelVersion

LOCAL = ("sync", "threads")  # schedulers whose tasks share this process's memory
TRIES = 3  # of a band that fails (each time on whichever worker the scheduler picks)


def iter_predict_large(
    source,
    out,
    model,
    *,
    version: str | None = None,
    info: ModelVersion | dict | None = None,
    project=None,
    config: PredictConfig | dict | None = None,
    write_probabilities: bool = True,
    probability_dtype: str = "float16",
    chunk: int = 1024,
    band: int | None = None,
    stack: bool | None = None,
    scheduler: str = "sync",
    workers: int = 1,
    cancel=None,
    **config_kwargs,
) -> Iterator[Any]:
    """Predict a 2D image or a volume stored as zarr / OME-Zarr / dask, band by band, into a zarr group.

    Memory stays bounded: the input is read a few chunk rows at a time and finished rows are
    written out at once; the accumulators hold about two tile heights of the image width.

    Parameters
    ----------
    source : zarr array, dask array, path/URL of a zarr array or OME-Zarr (full resolution is used),
        shape (Y, X), (Y, X, C), or a volume (Z, Y, X[, C]) predicted plane by plane (with its
        neighbouring planes for a 2.5D model).
    out : path/URL of the output zarr group (created; must not exist), or an open zarr group.
    model : a :class:`~.infer.Predictor`, a project store (with ``version``), a torch module with
        ``info``, or a :class:`~.model_ref.ModelRef`. Worker processes need something they can load:
        a ModelRef, a project store, or a Predictor with the ``project`` it was loaded from.
    write_probabilities : also write ``probabilities`` (K, Y, X), (Z, K, Y, X) for a volume, in ``probability_dtype``.
    chunk : the output's chunk side (rows and columns).
    band : output rows per task with a scheduler other than ``"sync"`` (rounded up to whole chunk
        rows; default: about 8 tile heights, at least one band per worker). Tiles at a band's edges
        are computed by both bands that need them.
    stack : how a 3D array reads (:func:`~.layout.read_axes`; by default a short last axis is channels).
    scheduler : ``"sync"`` (this process, with a reader and a writer thread), ``"threads"``,
        ``"processes"``, or a dask.distributed scheduler address (``"tcp://host:8786"``). Anything but
        sync and threads needs input and output on storage the workers share (a path or URL).
    workers : tasks at once (threads, processes).
    cancel : ``threading.Event``, checked between tiles (sync) or between bands.

    Yields
    ------
    :class:`~.events.Progress` events: tiles (sync) or bands done; percentiles of a volume's planes.

    Returns
    -------
    The output zarr group, with ``labels`` (Y, X) or (Z, Y, X) uint8 (argmax + 1, project label
    values) and, if asked, ``probabilities``.
    """

    config = as_config(PredictConfig, config, config_kwargs)
    if not isinstance(scheduler, str) or not (scheduler in (*LOCAL, "processes", "distributed") or "://" in scheduler):
        raise ConfigError(f"Unknown scheduler {scheduler!r}: use sync, threads, processes or a dask.distributed address (tcp://host:8786).")
    local = scheduler in LOCAL
    predictor, ref, facts = _model(model, local=local, version=version, info=info, project=project, device=config.device)
    array = open_array(source)
    shape = tuple(array.shape)
    if len(shape) not in (2, 3, 4):
        raise DataError(f"Block-wise prediction takes a 2D image (Y, X[, C]) or a volume (Z, Y, X[, C]); got shape {shape}.")
    layout = read_axes(shape, stack=stack, channels=facts.image_channels)
    if layout.channel_axis not in (None, len(shape) - 1):
        raise DataError(f"Block-wise prediction needs the channels last; got shape {shape}: store the image channel-last (Y, X, C).")
    planes = shape[0] if layout.is_stack else None
    plane_shape = shape[1:] if layout.is_stack else shape
    if min(plane_shape[:2]) < 1:
        raise DataError(f"The image is empty (shape {shape}): nothing to predict.")
    check_channels(facts, _channels_of(plane_shape))
    if not local:
        _check_shared(array, "input", scheduler)
    H, W = plane_shape[:2]
    K = facts.spec.classes
    group = _output_group(out)
    if not local:
        _check_shared(group, "output", scheduler)
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
                "model_version": facts.version,
                "class_names": list(facts.class_names),
                "config": config.to_dict(),
            }
        }
    )
    zs = [None] if planes is None else list(range(planes))
    small = is_small((H, W), config)
    if small:
        yield Message(
            "The image is smaller than one tile: predicted in memory."
            if planes is None
            else "The planes are smaller than one tile: each is predicted in memory."
        )
    bounds = {}  # each plane's own percentiles, computed once (tasks and 2.5D neighbours share them)
    for z in [] if small else zs:
        check_cancel(cancel)
        bounds[z] = percentile_bounds(array if z is None else PlaneView(array, z), facts.normalization.percentiles)
        if planes is not None:
            yield Progress(z + 1, planes, stage="percentiles")
    if scheduler == "sync":
        for z in zs:
            check_cancel(cancel)
            if z is not None:
                yield Progress(z, planes, stage="slices")
            stage = "predict (blocks)" if z is None else f"slice {z + 1}/{planes} (blocks)"
            yield from iter_band(
                array, z, predictor, config, bounds, labels_arr, probs_arr, chunks=ch, dtype=probability_dtype, cancel=cancel, stage=stage
            )
        if planes is not None:
            yield Progress(planes, planes, stage="slices")
        return group
    per_plane = math.ceil(max(1, int(workers)) / len(zs))  # bands a plane needs so that every worker has one
    rows = [(0, H)] if small else plan_bands(H, ch[0], band or default_band(H, ch[0], min(config.tile_size, H), per_plane))
    tasks = [(z, r0, r1) for z in zs for r0, r1 in rows]
    job = BandJob(
        source=array,
        model=predictor if ref is None else ref,
        config=config,
        bounds=bounds,
        labels=labels_arr,
        probabilities=probs_arr,
        chunks=ch,
        dtype=probability_dtype,
    )
    yield from _run_bands(tasks, job, scheduler, workers, cancel, out)
    return group


def default_band(height: int, chunk_rows: int, tile: int, workers: int) -> int:
    """Output rows per task: about 8 tile heights (the tiles at a band's edges are computed twice),
    fewer where that would leave a worker without a band; whole chunk rows."""
    per = math.ceil(8 * tile / chunk_rows)
    per = min(per, max(1, math.ceil(math.ceil(height / chunk_rows) / max(1, int(workers)))))
    return per * chunk_rows


def _rows(task) -> str:
    z, r0, r1 = task
    return f"rows {r0}-{r1 - 1}" + ("" if z is None else f" of plane {z}")


def _run_bands(tasks, job, scheduler, workers, cancel, out):
    """Run the band tasks, yielding Progress as they finish; a failed band is tried again (:data:`TRIES`
    in all), then reported by its rows (never left empty in silence). Ends with a Message on the
    workers' peak memory."""
    from .scheduling import run_tasks

    total, done, peaks = len(tasks), 0, {}
    yield Progress(0, total, stage="predict (bands)")
    todo, failed = list(tasks), {}
    for attempt in range(1, TRIES + 1):
        finished, failed = set(), {}
        try:
            for i, res in run_tasks(band_task, todo, job, scheduler=scheduler, workers=workers, cancel=cancel, on_error=_lost):
                check_cancel(cancel)
                finished.add(i)
                if "error" in res:
                    failed[todo[i]] = res["error"]
                    continue
                done += 1
                peaks[res["worker"]] = max(peaks.get(res["worker"]) or 0, res["peak_rss_mb"] or 0)
                yield Progress(done, total, stage="predict (bands)")
        except (CancelledError, ConfigError):
            raise
        except Exception as err:  # the scheduler lost the band (a worker died, a pool broke)
            failed.update({t: f"{type(err).__name__}: {err}" for i, t in enumerate(todo) if i not in finished})
        if not failed:
            break
        todo = sorted(failed, key=lambda t: (t[0] or 0, t[1]))
        if attempt < TRIES:
            yield Message(f"{len(todo)} band(s) failed ({_rows(todo[0])}: {failed[todo[0]]}); trying them again.", level="warning")
    if failed:
        names = ", ".join(_rows(t) for t in todo[:5]) + (f" and {len(todo) - 5} more" if len(todo) > 5 else "")
        raise SegBoxError(
            f"Prediction failed for {names} after {TRIES} tries ({failed[todo[0]]}). The output {out} is incomplete: "
            "fix the cause (memory, storage, workers) and predict again into a new output."
        )
    mem = ", ".join(f"{v:.0f}" for v in peaks.values())
    yield Message(f"{total} band(s) on {len(peaks)} worker process(es); peak memory of each: {mem} MB.", topic="budget")


def _lost(task, failure) -> dict:
    """A band the scheduler could not run (its worker died too often): tried again like a failed one."""
    return {"band": task, "error": str(failure)}


def _model(model, *, local, version, info, project, device):
    """``(predictor, ref, facts)``: what runs here (threads share a Predictor), what worker processes
    load (a :class:`ModelRef`), and the model version's description."""
    if isinstance(model, ModelRef):
        if local:
            predictor = model.load()
            return predictor, None, predictor.info
        ref = model
    elif local:
        predictor = as_predictor(model, version=version, info=info, device=device)
        return predictor, None, predictor.info
    elif hasattr(model, "model_version") and hasattr(model, "model_weights"):  # a project store
        facts = model.model_version(version)
        ref = ModelRef(model.url, facts.version, json.dumps(model.storage_options, sort_keys=True), device)
        return None, _check_ref(ref), facts
    elif isinstance(model, Predictor) and project is not None:
        return None, _check_ref(ModelRef.of(model, project, device=device)), model.info
    else:
        raise ConfigError(
            "Worker processes cannot receive a model loaded in this process: pass the project store (and version=), "
            "a ModelRef, or the Predictor with project= (the store it was loaded from); or use scheduler='threads'."
        )
    return None, _check_ref(ref), ref.open_project().model_version(ref.version)


def _check_ref(ref: ModelRef) -> ModelRef:
    if ref.store.startswith("memory://"):
        raise ConfigError(
            f"The project store {ref.store} lives in this process's memory: worker processes cannot load its model. Use scheduler='threads'."
        )
    return ref


def _check_shared(obj, what: str, scheduler: str) -> None:
    """Refuse an input or output that worker processes cannot reach: numpy, or zarr in memory."""
    import numpy as np
    import zarr

    store = obj.store if isinstance(obj, (zarr.Array, zarr.Group)) else None
    fs = getattr(store, "fs", None)
    protocol = getattr(fs, "protocol", ()) if fs is not None else ()
    in_memory = (
        isinstance(obj, np.ndarray)
        or isinstance(store, zarr.storage.MemoryStore)
        or "memory" in ((protocol,) if isinstance(protocol, str) else tuple(protocol))
    )
    if in_memory:
        where = "the workers' shared disk or an object store (e.g. 'out.zarr', 's3://bucket/out.zarr')"
        raise ConfigError(
            f"The {what} is held in this process's memory: the worker processes of scheduler={scheduler!r} cannot "
            f"{'read' if what == 'input' else 'write into'} it. Pass a path or URL on {where}, or use scheduler='threads'."
        )


def _output_group(out):
    import zarr

    if not (isinstance(out, str) or hasattr(out, "__fspath__")):
        return out
    try:
        return zarr.open_group(str(out), mode="w-")
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as err:
        raise DataError(f"The output {out} exists already: choose a new path (nothing was overwritten).") from err


def predict_large(source, out, model, **kwargs):
    """Blocking :func:`iter_predict_large`; returns the output zarr group."""
    return run_to_end(iter_predict_large(source, out, model, **kwargs))
