"""One band of rows of one plane, predicted from lazy input into a zarr output: the unit of work of
:mod:`.infer_large`, in this process or on a worker of a cluster.

A band is a range of output rows aligned to the output's chunk rows, so that no two bands ever write
the same zarr chunk. It is predicted from the plane's global tile grid (:func:`.tiling._predict_plane`
with ``rows=``): the same tiles, batches, blending weights and order of sums as the whole plane, so
its rows are bit for bit those of the whole plane, wherever it runs. The whole plane is the band
``(0, H)``: one code path for one process and for many.

Input is read in blocks of whole input chunk rows, each block once, normalised with the plane's
percentiles (computed once by the caller), the next block read ahead on a thread (:class:`RowReader`);
finished rows are buffered up to whole output chunk rows and written on a thread while the next rows
compute (:class:`RowWriter`). Memory is a few blocks and a few chunk rows of the plane's width.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .data import scale
from .errors import CancelledError
from .events import run_to_end
from .infer import _predict_2d
from .model_ref import ModelRef
from .planes import context_planes
from .tiling import _predict_plane


def read(array, key) -> np.ndarray:
    """``array[key]`` as numpy: a dask array computed here (never through a cluster's client from a task)."""
    block = array[key]
    return block.compute(scheduler="sync") if hasattr(block, "compute") else np.asarray(block)


class PlaneView:
    """Plane ``z`` of a lazy (Z, Y, X[, C]) array, read only where it is indexed."""

    def __init__(self, array, z: int):
        self.array, self.z, self.shape = array, int(z), tuple(array.shape[1:])

    def __getitem__(self, key):
        return read(self.array, (self.z, *(key if isinstance(key, tuple) else (key,))))


def plan_bands(height: int, chunk_rows: int, band_rows: int) -> list[tuple[int, int]]:
    """Row ranges ``(r0, r1)`` covering ``[0, height)``, each of whole chunk rows (``band_rows``
    rounded up to a multiple of ``chunk_rows``; the last may be shorter), so no two share a chunk."""
    step = max(1, math.ceil(band_rows / chunk_rows)) * chunk_rows
    return [(r0, min(height, r0 + step)) for r0 in range(0, height, step)]


def is_small(shape_yx, config) -> bool:
    """Whether a plane is shorter than a tile along an axis: then it is predicted in memory, padded."""
    return config.tile_size > shape_yx[0] or config.tile_size > shape_yx[1]


def _chunk_rows(array, axis: int) -> int:
    chunks = getattr(array, "chunks", None)
    if not chunks:
        return 256
    c = chunks[axis]
    return int(c[0] if isinstance(c, tuple) else c)


class RowReader:
    """``read_rows(y0, y1)`` of a plane (and its 2.5D neighbours as channels), normalised with the
    given per-plane ``bounds``: the input is read in blocks of whole input chunk rows, each once, and
    the block after the one asked for is read ahead on a thread. Rows are asked for in increasing order."""

    def __init__(self, array, planes, bounds, *, repeat: int, tile: int, end: int):
        self.array, self.planes, self.bounds, self.repeat = array, planes, bounds, repeat
        axis = 0 if planes[0] is None else 1
        self.height = int(array.shape[axis])
        c = _chunk_rows(array, axis)
        self.block = c * math.ceil(tile / c) if c <= 4096 else max(tile, 1024)  # huge chunks: read a part
        self.end = min(self.height, end)  # no read ahead past the rows this band needs
        self._blocks: dict = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="segbox-read")

    def _load(self, b: int) -> np.ndarray:
        rows = slice(b * self.block, min(self.height, (b + 1) * self.block))
        parts = []
        for z, (lo, hi) in zip(self.planes, self.bounds):
            raw = read(self.array, (rows,) if z is None else (z, rows))
            parts.append(scale(raw[..., None] if raw.ndim == 2 else raw, lo, hi))
        parts = parts * self.repeat  # a lone 2D image for a 2.5D model: its own neighbours
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def __call__(self, y0: int, y1: int) -> np.ndarray:
        first, last = y0 // self.block, (y1 - 1) // self.block
        for b in [b for b in self._blocks if b < first]:
            del self._blocks[b]
        for b in range(first, last + 2):
            if b not in self._blocks and (b <= last or b * self.block < self.end):
                self._blocks[b] = self._pool.submit(self._load, b)
        parts = [self._blocks[b].result() for b in range(first, last + 1)]
        buf = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return buf[y0 - first * self.block : y1 - first * self.block]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._blocks.clear()


class RowWriter:
    """``write_rows(y0, probs)`` into zarr: rows arriving in order are buffered up to whole output
    chunk rows, then their labels (``to_labels``) and probabilities are written on a thread while the
    next rows compute (one write at a time in flight)."""

    def __init__(self, labels_arr, probs_arr, at, chunks, to_labels, dtype, start: int):
        self.labels_arr, self.probs_arr, self.at, self.chunks = labels_arr, probs_arr, at, chunks
        self.to_labels, self.dtype, self.start = to_labels, dtype, start
        self.pending: list[np.ndarray] = []
        self._future = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="segbox-write")

    def __call__(self, y0: int, probs: np.ndarray) -> None:
        self.pending.append(probs)  # a fresh array: no copy needed
        if sum(p.shape[1] for p in self.pending) >= self.chunks[0]:
            self._flush()

    def _flush(self, final: bool = False) -> None:
        if not self.pending:
            return
        buf = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending, axis=1)
        n = buf.shape[1] if final else (buf.shape[1] // self.chunks[0]) * self.chunks[0]
        if n == 0:
            return
        self.pending = [np.ascontiguousarray(buf[:, n:])] if buf.shape[1] > n else []
        self._wait()
        self._future = self._pool.submit(self._write, self.start, buf[:, :n])
        self.start += n

    def _write(self, y0: int, buf: np.ndarray) -> None:
        rows, at, step = slice(y0, y0 + buf.shape[1]), self.at, self.chunks[1]
        for x0 in range(0, buf.shape[2], step):  # chunk column by chunk column: small temporaries
            part, cols = buf[:, :, x0 : x0 + step], slice(x0, x0 + step)
            self.labels_arr[(*at, rows, cols)] = self.to_labels(part)
            if self.probs_arr is not None:
                self.probs_arr[(*at, slice(None), rows, cols)] = part.astype(self.dtype)

    def _wait(self) -> None:
        if self._future is not None:
            future, self._future = self._future, None
            future.result()

    def close(self) -> None:
        """Write what is left and wait for the writes to end (raises what a write raised)."""
        try:
            self._flush(final=True)
            self._wait()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def iter_band(array, z, predictor, config, bounds, labels_arr, probs_arr, *, rows=None, chunks, dtype, cancel=None, stage="predict"):
    """Predict output rows ``rows`` (default: all) of plane ``z`` of ``array`` (``None``: the 2D image
    itself) into ``labels_arr`` / ``probs_arr`` (a generator of Progress events).

    ``bounds``: ``{plane: (low, high)}`` normalisation percentiles of the planes it reads (the plane
    and, for a 2.5D model, its neighbours), from :func:`~.data.percentile_bounds` of the whole plane.
    A plane shorter than a tile is predicted in memory, whole (``rows`` must then be all of it).
    """
    if config.backend != "torch":
        predictor = predictor.with_backend(config.backend)
    k = predictor.context
    planes = context_planes(z, k, None if z is None else array.shape[0])
    H, W = array.shape[:2] if z is None else array.shape[1:3]
    at = () if z is None else (z,)
    if is_small((H, W), config):
        parts = [read(array, (slice(None),) if p is None else (p,)) for p in planes]
        if len(parts) == 1:
            plane = parts[0]
        else:
            plane = np.concatenate([p[..., None] if p.ndim == 2 else p for p in parts], axis=-1)
        probs = yield from _predict_2d(plane, predictor, config, cancel=cancel, stage=stage)
        labels_arr[at] = predictor.labels(probs)
        if probs_arr is not None:
            probs_arr[at] = probs.astype(dtype)
        return
    r0, r1 = rows or (0, H)
    tile = min(config.tile_size, H)
    repeat = 2 * k + 1 if z is None and k else 1
    reader = RowReader(array, planes, [bounds[p] for p in planes], repeat=repeat, tile=tile, end=r1 + 2 * tile)
    writer = RowWriter(labels_arr, probs_arr, at, chunks, predictor.labels, dtype, r0)
    try:
        yield from _predict_plane(
            predictor, reader, (H, W), predictor.in_channels, writer, config, rows=(r0, r1), cancel=cancel, stage=stage
        )
        writer.close()
    finally:
        reader.close()
        writer.shutdown()


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class BandJob:
    """What every band task of one prediction shares, in one object that schedulers pass through
    whole (dask would compute a dask array found in a dict of arguments before the task runs).

    ``source``: the lazy input (zarr or dask array); ``model``: a :class:`~.model_ref.ModelRef` (or a
    :class:`~.infer.Predictor` for threads); ``bounds``: ``{plane: (low, high)}``; ``labels`` /
    ``probabilities``: the output zarr arrays; ``chunks``: their (Y, X) chunk shape."""

    def __init__(self, *, source, model, config, bounds, labels, probabilities, chunks, dtype):
        self.source, self.model, self.config, self.bounds = source, model, config, bounds
        self.labels, self.probabilities, self.chunks, self.dtype = labels, probabilities, chunks, dtype


def band_task(task, job: BandJob) -> dict:
    """Run on a worker: predict band ``task = (z, r0, r1)`` into the output zarr. Returns the band,
    its seconds, the worker and its peak memory, or the error (the caller tries the band again)."""
    z, r0, r1 = task
    t0 = time.perf_counter()
    try:
        predictor = job.model.load() if isinstance(job.model, ModelRef) else job.model
        gen = iter_band(
            job.source,
            z,
            predictor,
            job.config,
            job.bounds,
            job.labels,
            job.probabilities,
            rows=(r0, r1),
            chunks=job.chunks,
            dtype=job.dtype,
        )
        run_to_end(gen)
    except CancelledError:
        raise
    except Exception as err:  # a worker's trouble (memory, storage): tried again, then reported by rows
        return {"band": task, "error": f"{type(err).__name__}: {err}"}
    worker = f"{socket.gethostname()}:{os.getpid()}"
    return {"band": task, "seconds": time.perf_counter() - t0, "worker": worker, "peak_rss_mb": peak_rss_mb()}
