"""Tiled prediction of one plane, band by band: tile geometry, Gaussian blending, test-time augmentation.

The image is cut into square tiles with overlap. Tile starts are spread evenly over each axis as in
nnU-Net, so every tile lies inside the image. Per-class probabilities of overlapping tiles are
blended with a Gaussian importance map (sigma = tile / 8, as nnU-Net and MONAI's
``mode="gaussian"``), which removes seams.

Tiles are processed in rows, top to bottom. Only a band of accumulators two tiles high and one image
wide is held (on the model's device); rows above the current tile row are final and are handed to
the caller as soon as no later tile touches them. The input is read band by band too, so an image of
any height is predicted with bounded memory. Torch is imported inside the functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .events import Progress, check_cancel


# ---------------------------------------------------------------------- tiling geometry
def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Evenly spread tile starts covering ``[0, length)`` with at least ``overlap`` (nnU-Net style)."""
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    n = math.ceil((length - tile) / step) + 1
    actual = (length - tile) / (n - 1)
    return [int(round(actual * i)) for i in range(n)]


def importance_map(shape: tuple[int, int], *, blending: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """(tY, tX) float32 blending weights: a Gaussian with max 1 (no zeros), or ones."""
    if blending == "constant":
        return np.ones(shape, np.float32)
    axes = []
    for n in shape:
        c = (n - 1) / 2.0
        sigma = max(n * sigma_scale, 1e-3)
        x = np.arange(n, dtype=np.float64)
        axes.append(np.exp(-((x - c) ** 2) / (2 * sigma * sigma)))
    g = np.outer(axes[0], axes[1])
    g /= g.max()
    g = np.maximum(g, g[g > 0].min() if np.any(g > 0) else 1e-6)
    return g.astype(np.float32)


def _tta_ops(mode: str, square: bool):
    """List of (forward, inverse) functions on (N, C, Y, X) tensors."""
    import torch

    ops = [(lambda t: t, lambda t: t)]
    if mode in ("flips", "d4"):
        ops += [
            (lambda t: torch.flip(t, (3,)), lambda t: torch.flip(t, (3,))),
            (lambda t: torch.flip(t, (2,)), lambda t: torch.flip(t, (2,))),
            (lambda t: torch.flip(t, (2, 3)), lambda t: torch.flip(t, (2, 3))),
        ]
    if mode == "d4" and square:
        ops += [
            (lambda t: torch.rot90(t, 1, (2, 3)), lambda t: torch.rot90(t, -1, (2, 3))),
            (lambda t: torch.rot90(t, 3, (2, 3)), lambda t: torch.rot90(t, -3, (2, 3))),
            (lambda t: torch.flip(torch.rot90(t, 1, (2, 3)), (3,)), lambda t: torch.rot90(torch.flip(t, (3,)), -1, (2, 3))),
            (lambda t: torch.flip(torch.rot90(t, 1, (2, 3)), (2,)), lambda t: torch.rot90(torch.flip(t, (2,)), -1, (2, 3))),
        ]
    return ops


def _forward_probs(predictor, batch: np.ndarray, tta: str):
    """(N, C, tY, tX) float32 -> (N, K, tY, tX) float32 probabilities on the predictor's device
    (softmax; sigmoid when K == 1, and for a distance output, the last channel of a distance model)."""
    import torch

    from .models import memory_format

    x = (
        torch.from_numpy(np.ascontiguousarray(batch))
        .to(predictor.device, non_blocking=True)
        .contiguous(memory_format=memory_format(predictor.device))
    )
    ops = _tta_ops(tta, batch.shape[2] == batch.shape[3])
    acc = None
    distance = predictor.distance
    with torch.inference_mode():
        for fwd, inv in ops:
            logits = predictor.network(fwd(x))
            if distance:
                probs = torch.cat([torch.softmax(logits[:, :-1], dim=1), torch.sigmoid(logits[:, -1:])], dim=1)
            else:
                probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
            probs = inv(probs)
            acc = probs if acc is None else acc + probs
        if len(ops) > 1:
            acc = acc / len(ops)
        return acc.float()


def _predict_plane(
    predictor,
    read_rows,
    shape_yx: tuple[int, int],
    channels: int,
    write_rows,
    config,
    *,
    rows: tuple[int, int] | None = None,
    cancel=None,
    stage: str = "predict",
) -> Iterator[Any]:
    """Core band-by-band tiled prediction of one (already normalised / padded) plane.

    ``read_rows(y0, y1)`` returns float32 (y1-y0, X, C), asked for in increasing ``y0``;
    ``write_rows(y0, probs)`` receives final (K, rows, X) float32 probabilities in order. Yields
    Progress events (tiles). ``rows=(r0, r1)``: only output rows ``r0..r1`` are predicted and written
    (a band of the plane, for work spread over workers): the tiles of the plane's global grid that
    touch them, run in the very batches the whole plane runs (a batch may span two tile rows) and
    summed in the same order, so each row is bit for bit what the whole plane gives.
    """
    import torch

    H, W = shape_yx
    r0, r1 = rows or (0, H)
    K = predictor.outputs
    tY, tX = min(config.tile_size, H), min(config.tile_size, W)
    ys = tile_starts(H, tY, config.overlap)
    xs = tile_starts(W, tX, config.overlap)
    # blending runs on the predictor's device: on a GPU only finished rows come back to the host
    dev = predictor.device
    weight = torch.from_numpy(importance_map((tY, tX), blending=config.blending, sigma_scale=config.sigma_scale)).to(dev)
    tiles = [(y, x) for y in ys for x in xs]  # row-major; a batch may span two tile rows
    per_batch = config.batch_size or (4 if dev.type == "cpu" else 16)
    touches = lambda y: y < r1 and y + tY > r0
    batches = [tiles[b : b + per_batch] for b in range(0, len(tiles), per_batch)]
    batches = [b for b in batches if any(touches(y) for y, _ in b)]  # the plane's own batches, those this band needs
    total = sum(map(len, batches))
    t0 = time.perf_counter()
    # accumulator band covering rows [band0, band0 + band_h)
    band_h = tY + (ys[1] - ys[0] if len(ys) > 1 else 0)
    state = {"band0": min((y for y in ys if touches(y)), default=0), "row": None}
    acc = torch.zeros((K, band_h, W), dtype=torch.float32, device=dev)
    wsum = torch.zeros((band_h, W), dtype=torch.float32, device=dev)
    inputs: dict[int, np.ndarray] = {}  # tile row start -> (tY, W, C) input rows, kept while a batch needs them

    def emit(n):
        """Hand over the first ``n`` accumulated rows, those of them inside ``rows``."""
        band0 = state["band0"]
        lo, hi = max(band0, r0) - band0, min(band0 + n, r1) - band0
        if hi > lo:
            write_rows(band0 + lo, (acc[:, lo:hi] / wsum[None, lo:hi]).cpu().numpy())

    def start_row(y):
        """Write out the rows that no tile from row ``y`` on touches, and slide the band down."""
        nonlocal acc, wsum
        band0 = state["band0"]
        if y > band0:
            n = y - band0
            emit(n)
            acc = torch.roll(acc, -n, dims=1)
            wsum = torch.roll(wsum, -n, dims=0)
            acc[:, -n:] = 0
            wsum[-n:] = 0
            state["band0"] = band0 = y
        if y + tY - band0 > acc.shape[1]:  # uneven steps: grow the band
            extra = y + tY - band0 - acc.shape[1]
            acc = torch.cat([acc, acc.new_zeros((K, extra, W))], dim=1)
            wsum = torch.cat([wsum, wsum.new_zeros((extra, W))], dim=0)
        state["row"] = y

    done = 0
    for batch_tiles in batches:
        check_cancel(cancel)
        for y in list(inputs):
            if y < batch_tiles[0][0]:
                del inputs[y]
        for y, _ in batch_tiles:
            if y not in inputs:
                inputs[y] = read_rows(y, y + tY)
        batch = np.stack([inputs[y][:, x : x + tX].transpose(2, 0, 1) for y, x in batch_tiles]).astype(np.float32, copy=False)
        # weighted apart, then added: two roundings whatever the kernel (no fused multiply-add), so a
        # band on another worker, with other threads, sums exactly what the whole plane sums
        weighted = _forward_probs(predictor, batch, config.tta) * weight
        for p, (y, x) in zip(weighted, batch_tiles):
            if not touches(y):
                continue
            if y != state["row"]:
                start_row(y)
            r = y - state["band0"]
            acc[:, r : r + tY, x : x + tX] += p
            wsum[r : r + tY, x : x + tX] += weight
        done += len(batch_tiles)
        el = time.perf_counter() - t0
        yield Progress(done, total, stage=stage, eta_s=el / done * (total - done))
    emit(min(H - state["band0"], acc.shape[1]))
