"""Training batches: random patches with foreground oversampling, built in a thread (GPU) or inline (CPU)."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from ..losses import IGNORE
from .config import TrainConfig
from .prepare import _Data


class _Sampler:
    """Random patches with foreground oversampling; batch ``i`` of epoch ``e`` depends only on the seed
    (and, in a distributed run, on the ``rank``: each rank draws its own patches)."""

    def __init__(self, data: _Data, patch: int, cfg: TrainConfig, rank: int | None = None):
        from ..augment import Augmenter

        self.items = data.train
        self.patch = patch
        self.cfg = cfg
        self.augment = Augmenter(cfg.augmentation, elastic=cfg.elastic)
        counts = np.array([it.annotated * it.emphasis for it in self.items], np.float64)
        self.p_item = counts / counts.sum()
        self.with_weight = cfg.loss == "edge_weighted"
        self.distance = data.distance  # maps = (weight, distance) stacked, see make_loss
        self.rank = rank

    def batch(self, epoch: int, step: int, size: int):
        rng = np.random.default_rng([self.cfg.seed, epoch, step] + ([] if self.rank is None else [self.rank]))
        xs, ys, ws = [], [], []
        for _ in range(size):
            x, y, w = self.sample(rng)
            xs.append(x.transpose(2, 0, 1))
            ys.append(y)
            ws.append(w)
        if self.distance:
            return np.stack(xs), np.stack(ys).astype(np.int64), np.stack(ws).transpose(0, 3, 1, 2).copy()
        return np.stack(xs), np.stack(ys).astype(np.int64), (np.stack(ws) if self.with_weight else None)

    def sample(self, rng):
        it = self.items[rng.choice(len(self.items), p=self.p_item)]
        coords = it.fg_coords if (len(it.fg_coords) and rng.random() < self.cfg.foreground_fraction) else it.coords
        cy, cx = coords[rng.integers(len(coords))]
        p = self.patch
        H, W = it.target.shape
        y0 = int(np.clip(cy - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, max(H - p, 0)))
        x0 = int(np.clip(cx - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, max(W - p, 0)))
        sl = (slice(y0, y0 + p), slice(x0, x0 + p))
        img, tgt = it.image[sl], it.target[sl]
        w = it.weight[sl] if self.with_weight else None
        if self.distance:
            w = np.dstack([np.ones(tgt.shape, np.float32) if w is None else w, it.distance[sl]])
        if img.shape[0] < p or img.shape[1] < p:  # small image: pad (reflect image, ignore target)
            py, px = p - img.shape[0], p - img.shape[1]
            img = np.pad(img, ((0, py), (0, px), (0, 0)), mode="reflect" if (py < img.shape[0] and px < img.shape[1]) else "symmetric")
            tgt = np.pad(tgt, ((0, py), (0, px)), constant_values=IGNORE)
            if w is not None:
                w = np.pad(w, ((0, py), (0, px)) + ((0, 0),) * (w.ndim - 2), constant_values=1.0)
        img, tgt, w = self.augment(img, tgt, w, rng)
        return img, tgt, w


class _Prefetcher:
    """Builds batches in a background thread (NumPy/OpenCV release the GIL) and measures data waits."""

    def __init__(self, sampler: _Sampler, epoch: int, steps: int, size: int, depth: int = 3, pin: bool = False):
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.wait_s = 0.0
        self.size = size

        def work():
            try:
                for step in range(steps):
                    if self.stop.is_set():
                        return
                    batch = sampler.batch(epoch, step, self.size)
                    if pin:  # page-locked host memory: the copy to the GPU overlaps compute
                        import torch

                        batch = tuple(None if a is None else torch.from_numpy(a).pin_memory() for a in batch)
                    while not self.stop.is_set():
                        try:
                            self.q.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as err:  # surfaced in get()
                self.q.put(err)

        self.thread = threading.Thread(target=work, name="segbox-data", daemon=True)
        self.thread.start()

    def get(self):
        t = time.perf_counter()
        while True:
            try:
                item = self.q.get(timeout=1.0)
                break
            except queue.Empty:
                if not self.thread.is_alive() and self.q.empty():  # never wait for a batch that will not come
                    raise RuntimeError("The data thread has no more batches for this epoch (a bug: please report it).") from None
        self.wait_s += time.perf_counter() - t
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


class _InlineBatches:
    """The same batches, built in the calling thread: on a CPU device a data thread would only take
    cores from the compute threads (there is no idle accelerator time to overlap with)."""

    def __init__(self, sampler: _Sampler, epoch: int, steps: int, size: int):
        self.sampler, self.epoch, self.size = sampler, epoch, size
        self.step = 0
        self.wait_s = 0.0

    def get(self):
        t = time.perf_counter()
        batch = self.sampler.batch(self.epoch, self.step, self.size)
        self.step += 1
        self.wait_s += time.perf_counter() - t
        return batch

    def close(self):
        pass
