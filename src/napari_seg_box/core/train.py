"""Training a U-Net from the annotations of a project store: one code path for widgets, CLI and scripts.

:func:`iter_train` is a generator: it yields typed events (:mod:`.events`) and returns the id of the
model version it saved. :func:`train` runs it to the end. A novice sets only ``epochs``; every other
:class:`TrainConfig` field left at ``None`` is chosen automatically (and the choice is reported and
saved with the model):

- patch size from the size of the annotated objects (a multiple of 32, 128..512);
- batch size from free GPU memory (CPU: a small fixed default);
- learning rate from a learning-rate range test (:func:`lr_find`);
- steps per epoch so that an epoch sees about as many pixels as are annotated;
- a validation split: the images marked ``validation``; otherwise ~20 % of the annotated images, or,
  with fewer than 4 images, the bottom ~20 % of each image's annotated region.

Held-out ``test`` images are never read. A resumable checkpoint (weights, optimiser state, history:
safetensors + JSON, never pickle) is written to ``training/<run>/`` after every epoch; a stopped or
crashed run continues with ``resume=True``.
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator

import numpy as np

from .data import DEFAULT_PERCENTILES, labels_to_target, normalize
from .errors import CancelledError, ConfigError, DataError, StoreError
from .events import CheckpointSaved, EpochEnd, Message, Preview, Progress, StepLoss, check_cancel, run_to_end
from .losses import IGNORE, LOSSES, edge_weight_map, make_loss
from .models import ENCODERS, MODEL_FORMAT_VERSION, ModelSpec, build_model, device_name, memory_format, pick_device, weights_to_bytes

TRAIN_CONFIG_VERSION = 1
SCHEDULES = ("onecycle", "cosine", "constant")
_DECODER = (256, 128, 64, 32, 16)
_VAL_TILE = 512  # validation regions are cut into crops of at most this size


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` means *choose automatically*.

    Parameters
    ----------
    epochs : number of epochs (the one setting a novice chooses).
    encoder : smp encoder, one of :data:`~napari_seg_box.core.models.ENCODERS`.
    encoder_depth, decoder_channels : U-Net size (smaller = faster); decoder default ``(256..16)``.
    encoder_weights_file : local safetensors/.pth file with pretrained encoder weights.
    finetune_from : a model version of the project to start from (transfer learning).
    patch_size : training patch side (multiple of 32).
    batch_size, learning_rate, steps_per_epoch : optimisation sizes.
    augmentation : ``none | light | standard | strong``; ``elastic`` adds elastic deformation.
    loss : ``dice_ce | ce | focal | edge_weighted``; ``edge_w0``/``edge_sigma`` shape the edge weights.
    boundary : also learn a *boundary* class, the outer ``boundary_width`` pixels of every object
        (projects with one object class; objects from the stored instances, else the connected
        regions of the object class). Post-processing then splits touching objects along the
        predicted boundaries (seeds = object interiors), which separates crowded, irregular objects
        better than the distance-transform watershed. Metrics and labels fold the boundary back into
        the object class: the model still segments the project's classes.
    schedule : ``onecycle | cosine | constant`` learning-rate schedule.
    weight_decay, grad_clip : AdamW weight decay, gradient-norm clipping (0 = off).
    patience : early stopping after this many epochs without a better validation IoU (0 = off).
    foreground_fraction : share of patches centred on a non-background annotated pixel.
    validation_fraction : share of images (or of each image's annotated rows) kept for validation.
    device : ``auto | cpu | cuda | cuda:N | mps``.
    mixed_precision : ``auto | bf16 | fp16 | off`` (CUDA only; never autocast on CPU).
    seed : the run is reproducible on CPU for a given seed.
    """

    epochs: int = 50
    encoder: str = "resnet34"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] | None = None
    encoder_weights_file: str | None = None
    finetune_from: str | None = None
    patch_size: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    steps_per_epoch: int | None = None
    augmentation: str = "standard"
    elastic: bool = False
    loss: str = "dice_ce"
    edge_w0: float = 10.0
    edge_sigma: float = 5.0
    boundary: bool = False
    boundary_width: int = 2
    schedule: str = "onecycle"
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    patience: int = 15
    foreground_fraction: float = 0.5
    validation_fraction: float = 0.2
    device: str = "auto"
    mixed_precision: str = "auto"
    seed: int = 0
    format_version: int = field(default=TRAIN_CONFIG_VERSION, repr=False)

    def __post_init__(self):
        from .augment import PRESETS

        if self.decoder_channels is not None:
            self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs must be a whole number >= 1, got {self.epochs!r}.")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"Unknown encoder {self.encoder!r}: choose one of {', '.join(ENCODERS)}.")
        if not 3 <= self.encoder_depth <= 5:
            raise ConfigError(f"encoder_depth must be 3, 4 or 5, got {self.encoder_depth}.")
        if self.decoder_channels is not None and len(self.decoder_channels) != self.encoder_depth:
            raise ConfigError(f"decoder_channels needs {self.encoder_depth} values (one per encoder stage), got {len(self.decoder_channels)}.")
        if self.patch_size is not None and (self.patch_size < 32 or self.patch_size % 32):
            raise ConfigError(f"patch_size must be a multiple of 32 (the U-Net halves it 5 times), got {self.patch_size}: try {max(32, round(self.patch_size / 32) * 32)}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be between 0 and 1, got {self.learning_rate}.")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}.")
        if self.augmentation not in PRESETS:
            raise ConfigError(f"Unknown augmentation {self.augmentation!r}: choose one of {', '.join(PRESETS)}.")
        if self.loss not in LOSSES:
            raise ConfigError(f"Unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"Unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}.")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"mixed_precision must be auto, bf16, fp16 or off, got {self.mixed_precision!r}.")
        if not 0 <= self.foreground_fraction <= 1 or not 0 < self.validation_fraction < 1:
            raise ConfigError("foreground_fraction must be in [0, 1] and validation_fraction in (0, 1).")
        if not isinstance(self.boundary_width, int) or not 1 <= self.boundary_width <= 10:
            raise ConfigError(f"boundary_width must be a whole number of pixels from 1 to 10, got {self.boundary_width!r}.")
        if self.patience < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("patience, grad_clip and weight_decay must be >= 0.")
        if self.format_version > TRAIN_CONFIG_VERSION:
            raise ConfigError("This training configuration comes from a newer napari-seg-box: update it.")

    @property
    def decoder(self) -> tuple[int, ...]:
        return self.decoder_channels or _DECODER[5 - self.encoder_depth :]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decoder_channels"] = list(self.decoder) if self.decoder_channels is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"Unknown training settings: {', '.join(sorted(unknown))}. Known: {', '.join(sorted(known))}.")
        return cls(**d)


# ---------------------------------------------------------------------- data
@dataclass
class _Item:
    """One training or validation region: normalised image, target, optional edge weights."""

    name: str
    image: np.ndarray  # (Y, X, C) float32
    target: np.ndarray  # (Y, X) int16, IGNORE = unlabelled
    weight: np.ndarray | None = None
    coords: np.ndarray | None = None  # (N, 2) annotated pixels (subsampled)
    fg_coords: np.ndarray | None = None  # annotated non-background pixels

    @property
    def annotated(self) -> int:
        return int((self.target != IGNORE).sum())


@dataclass
class _Data:
    train: list[_Item]
    val: list[_Item]
    classes: list[str]
    channels: int
    fingerprint: str
    train_names: list[str]
    val_names: list[str]
    split: str  # how validation was chosen
    object_diameter: float | None


def _fingerprint(pairs) -> str:
    h = hashlib.sha256()
    for name, image, labels in pairs:
        h.update(name.encode())
        h.update(str(image.shape).encode() + str(image.dtype).encode())
        h.update(np.ascontiguousarray(image).tobytes())
        h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def _instances_for(project, name: str, labels: np.ndarray) -> np.ndarray:
    """Instance ids for edge weights: stored instances, else connected components of non-background."""
    from skimage.measure import label

    inst = project.get_instances(name)
    if inst is not None:
        return inst
    return label(labels >= 2, connectivity=1)


BOUNDARY = 2  # target index of the boundary class (after background 0 and the object class 1)


def boundary_mask(instances: np.ndarray, width: int = 2) -> np.ndarray:
    """(Y, X) bool: the outer ``width`` pixels of every object of an instance image (touching
    objects each keep their own boundary pixels; object pixels next to background are boundary)."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    inside = instances > 0
    edge = find_boundaries(instances, connectivity=1, mode="inner") & inside
    if width > 1:
        edge = ndi.binary_dilation(edge, iterations=width - 1, mask=inside)
    return edge


def _fold_boundary(t):
    """Class indices with the boundary (2) counted as the object (1): metrics are of the project's classes."""
    return t.clamp(max=1)


def _object_diameter(labels_list) -> float | None:
    from skimage.measure import label, regionprops

    diam = []
    for labels in labels_list:
        for r in regionprops(label(labels >= 2, connectivity=1)):
            if r.area >= 9:
                diam.append(r.equivalent_diameter_area)
    return float(np.median(diam)) if diam else None


def _coords(mask: np.ndarray, rng: np.random.Generator, limit: int = 200_000) -> np.ndarray:
    c = np.argwhere(mask).astype(np.int32)
    if len(c) > limit:
        c = c[rng.choice(len(c), limit, replace=False)]
    return c


def _split_rows(target: np.ndarray, fraction: float) -> int:
    """Row where the bottom ``fraction`` of the annotated pixels begins."""
    per_row = (target != IGNORE).sum(axis=1)
    cum = np.cumsum(per_row)
    return int(np.searchsorted(cum, cum[-1] * (1 - fraction)))


def _prepare_data(project, cfg: TrainConfig) -> _Data:
    from .store import iter_training_pairs

    pairs = [(n, im, lb) for n, im, lb in iter_training_pairs(project, ("train", "validation")) if (lb > 0).any()]
    if not pairs:
        raise DataError(
            "No annotated images to train on: paint some labels (0 = unlabelled; 1.. = classes) on at least one "
            "train or validation image of the project, then save them."
        )
    K = project.n_classes
    if K < 2:
        raise DataError("Training needs at least two classes (for example background and nucleus): add a class to the project.")
    if cfg.boundary and K != 2:
        raise ConfigError(
            f"The boundary class works with one object class (a two-class project), but this project has {K} classes: "
            "train without boundary=True (the watershed still splits touching objects), or use a two-class project."
        )
    channels = {1 if im.ndim == 2 else im.shape[-1] for _, im, _ in pairs}
    if len(channels) > 1:
        raise DataError(f"The annotated images have different channel counts {sorted(channels)}: train on images with the same channels.")
    rng = np.random.default_rng(cfg.seed)
    fingerprint = _fingerprint(pairs)
    diameter = _object_diameter([lb for _, _, lb in pairs])
    split_of = {r.name: r.split for r in project.images()}

    def item(name, image, labels):
        target = labels_to_target(labels, ignore_index=IGNORE).astype(np.int16)
        weight = None
        if cfg.loss == "edge_weighted" or cfg.boundary:
            instances = _instances_for(project, name, labels)
        if cfg.loss == "edge_weighted":
            weight = edge_weight_map(instances, target, w0=cfg.edge_w0, sigma=cfg.edge_sigma)
        if cfg.boundary:  # class index 2: the object's outer pixels
            target[boundary_mask(instances, cfg.boundary_width) & (target == 1)] = BOUNDARY
        return _Item(name, normalize(image, percentiles=DEFAULT_PERCENTILES), target, weight)

    items = [item(*p) for p in pairs]
    marked = [it for it in items if split_of.get(it.name) == "validation"]
    if marked:
        train = [it for it in items if split_of.get(it.name) != "validation"]
        val, split = marked, f"{len(marked)} image(s) marked validation"
        if not train:
            raise DataError("Every annotated image is marked 'validation': mark at least one as 'train'.")
    elif len(items) >= 4:
        n_val = max(1, round(len(items) * cfg.validation_fraction))
        order = rng.permutation(len(items))
        val = [items[i] for i in sorted(order[:n_val])]
        train = [items[i] for i in sorted(order[n_val:])]
        split = f"automatic: {n_val} of {len(items)} images"
    else:
        train, val = [], []
        for it in items:
            cut = _split_rows(it.target, cfg.validation_fraction)
            top, bottom = slice(0, cut), slice(cut, None)
            if cut < 16 or it.target.shape[0] - cut < 16 or not (it.target[bottom] != IGNORE).any():
                train.append(it)
                continue
            w = it.weight
            train.append(_Item(it.name, it.image[top], it.target[top], None if w is None else w[top]))
            val.append(_Item(f"{it.name} (rows {cut}-)", it.image[bottom], it.target[bottom], None if w is None else w[bottom]))
        if not val:
            raise DataError(
                "No validation is possible: the annotations are too small to keep a part aside. Annotate a second image "
                "(or a larger area), or mark an annotated image as 'validation'."
            )
        split = "automatic: bottom ~20% of each image's annotated rows"
    if not any(it.annotated for it in train):
        raise DataError("The training part has no annotated pixels: annotate more, or mark fewer images as validation.")
    background_only = all((it.target[it.target != IGNORE] == 0).all() for it in train)
    if background_only:
        raise DataError("Only background (class 1) is annotated in the training images: paint some objects too.")
    for it in train:
        it.coords = _coords(it.target != IGNORE, rng)
        it.fg_coords = _coords(it.target >= 1, rng)
    val = [crop for it in val for crop in _tiles(it)]
    return _Data(
        train=[it for it in train if it.annotated],
        val=[it for it in val if it.annotated],
        classes=project.class_names,
        channels=channels.pop(),
        fingerprint=fingerprint,
        train_names=sorted({it.name for it in train}),
        val_names=sorted({it.name.split(" (rows")[0] for it in val}),
        split=split,
        object_diameter=diameter,
    )


def _tiles(it: _Item) -> list[_Item]:
    H, W = it.target.shape
    out = []
    for y in range(0, H, _VAL_TILE):
        for x in range(0, W, _VAL_TILE):
            sl = (slice(y, y + _VAL_TILE), slice(x, x + _VAL_TILE))
            out.append(_Item(it.name, it.image[sl], it.target[sl], None if it.weight is None else it.weight[sl]))
    return out


def auto_patch_size(data: _Data) -> int:
    """About six object diameters (multiple of 32, 128..512), no larger than the images need."""
    d = data.object_diameter or 32.0
    patch = int(np.clip(math.ceil(6 * d / 32) * 32, 128, 512))
    biggest = max(max(it.target.shape) for it in data.train)
    return int(min(patch, max(32, math.ceil(biggest / 32) * 32)))


class _Sampler:
    """Random patches with foreground oversampling; batch ``i`` of epoch ``e`` depends only on the seed."""

    def __init__(self, data: _Data, patch: int, cfg: TrainConfig):
        from .augment import Augmenter

        self.items = data.train
        self.patch = patch
        self.cfg = cfg
        self.augment = Augmenter(cfg.augmentation, elastic=cfg.elastic)
        counts = np.array([it.annotated for it in self.items], np.float64)
        self.p_item = counts / counts.sum()
        self.with_weight = cfg.loss == "edge_weighted"

    def batch(self, epoch: int, step: int, size: int):
        rng = np.random.default_rng([self.cfg.seed, epoch, step])
        xs, ys, ws = [], [], []
        for _ in range(size):
            x, y, w = self.sample(rng)
            xs.append(x.transpose(2, 0, 1))
            ys.append(y)
            ws.append(w)
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
        if img.shape[0] < p or img.shape[1] < p:  # small image: pad (reflect image, ignore target)
            py, px = p - img.shape[0], p - img.shape[1]
            img = np.pad(img, ((0, py), (0, px), (0, 0)), mode="reflect" if (py < img.shape[0] and px < img.shape[1]) else "symmetric")
            tgt = np.pad(tgt, ((0, py), (0, px)), constant_values=IGNORE)
            if w is not None:
                w = np.pad(w, ((0, py), (0, px)), constant_values=1.0)
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


# ---------------------------------------------------------------------- optimisation helpers
def lr_at(step: int, total: int, max_lr: float, schedule: str) -> float:
    """Learning rate at ``step`` of ``total``: one-cycle (cosine warm-up 30 %, cosine decay), cosine, constant."""
    t = min(step / max(total - 1, 1), 1.0)
    if schedule == "constant":
        return max_lr
    if schedule == "cosine":
        warm = 0.05
        if t < warm:
            return max_lr * (0.1 + 0.9 * t / warm)
        return max_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm))))
    warm = 0.3
    if t < warm:
        return max_lr / 25 + (max_lr - max_lr / 25) * 0.5 * (1 - math.cos(math.pi * t / warm))
    return max_lr / 1e3 + (max_lr - max_lr / 1e3) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))


def _accumulate_confusion(conf_t, pred, target, k: int) -> None:
    """Add (truth, prediction) pairs of labelled pixels to a flat (K*K + 1) counter on the device, without a sync."""
    idx = (target * k + pred).masked_fill_(target == IGNORE, k * k)
    conf_t.scatter_add_(0, idx.reshape(-1), idx.new_ones(idx.numel()))


def _too_big(err: BaseException) -> bool:
    """A CUDA out-of-memory error, or a tensor too large for a kernel (both: a smaller batch helps)."""
    text = str(err)
    return "out of memory" in text or "INT_MAX" in text or type(err).__name__ == "OutOfMemoryError"


def _scores(conf: np.ndarray) -> tuple[float, float, list[float | None]]:
    """Pixel accuracy, mean IoU over the classes present, IoU per class (None where absent)."""
    tp = np.diag(conf).astype(np.float64)
    total = conf.sum()
    acc = float(tp.sum() / total) if total else 0.0
    union = conf.sum(0) + conf.sum(1) - tp
    present = conf.sum(1) > 0
    per = [float(tp[i] / union[i]) if present[i] and union[i] else None for i in range(len(tp))]
    vals = [v for v in per if v is not None]
    return acc, float(np.mean(vals)) if vals else 0.0, per


class _Runtime:
    """Device, precision and memory layout of a run."""

    def __init__(self, cfg: TrainConfig):
        import torch

        self.device = pick_device(cfg.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = None
        if self.cuda and cfg.mixed_precision != "off":
            if cfg.mixed_precision == "fp16" or (cfg.mixed_precision == "auto" and not torch.cuda.is_bf16_supported()):
                self.dtype = torch.float16
            else:
                self.dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.memory_format = memory_format(self.device)
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    def autocast(self):
        import contextlib

        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)

    def to(self, x, y=None, w=None):
        import torch

        x, y, w = (a if a is None or isinstance(a, torch.Tensor) else torch.from_numpy(a) for a in (x, y, w))
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        y = None if y is None else y.to(self.device, non_blocking=True)
        w = None if w is None else w.to(self.device, non_blocking=True)
        return x, y, w

    def optimise(self, model, loss_fn, opt, x, y, w, *, grad_clip: float | None):
        """One training step (forward, loss, backward, clipping, update) in this run's precision;
        returns (logits, loss)."""
        import torch

        with self.autocast():
            logits = model(x)
            loss = loss_fn(logits, y, w)
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)
        else:
            loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        return logits, loss

    def describe(self) -> str:
        prec = {None: "float32"}.get(self.dtype, str(self.dtype).replace("torch.", ""))
        import torch

        return f"{device_name(self.device)}, {prec}" + (", channels_last" if self.memory_format == torch.channels_last else "")


def auto_batch_size(model, patch: int, channels: int, rt: _Runtime, loss_fn) -> int:
    """CPU: 8 (patch <= 128) or 4; CUDA: what fits in ~60 % of free memory (2..64, a power of two)."""
    import torch

    if not rt.cuda:
        return 8 if patch <= 128 else 4
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(rt.device)
    torch.cuda.reset_peak_memory_stats(rt.device)
    base = torch.cuda.memory_allocated(rt.device)
    probe = 2
    x = torch.randn(probe, channels, patch, patch, device=rt.device).contiguous(memory_format=rt.memory_format)
    y = torch.zeros(probe, patch, patch, dtype=torch.long, device=rt.device)
    model.train()
    with rt.autocast():
        loss = loss_fn(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    per_sample = max((torch.cuda.max_memory_allocated(rt.device) - base) / probe, 1)
    del x, y, loss
    torch.cuda.empty_cache()
    fits = int(0.6 * free / per_sample)
    return int(2 ** np.clip(np.floor(np.log2(max(fits, 1))), 1, 6))


def lr_find(model, sampler: _Sampler, rt: _Runtime, loss_fn, *, batch_size: int, steps: int = 24, lo: float = 1e-5, hi: float = 1e-1, cancel=None) -> dict:
    """Learning-rate range test (Smith 2017): exponentially growing rate, loss recorded, model restored.

    Returns ``{"lr": suggestion, "lrs": [...], "losses": [...]}``; the suggestion is a tenth of the rate
    with the lowest smoothed loss, kept within ``[lo * 10, hi / 10]``.
    """
    import copy

    import torch

    state = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=lo, weight_decay=0.0)
    model.train()
    lrs, losses, smooth = [], [], None
    try:
        for i in range(steps):
            check_cancel(cancel)
            lr = lo * (hi / lo) ** (i / max(steps - 1, 1))
            for g in opt.param_groups:
                g["lr"] = lr
            x, y, w = rt.to(*sampler.batch(1_000_000, i, batch_size))
            with rt.autocast():
                loss = loss_fn(model(x), y, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            smooth = value if smooth is None else 0.7 * smooth + 0.3 * value
            lrs.append(lr)
            losses.append(smooth)
            if smooth > 4 * min(losses):
                break
    finally:
        model.load_state_dict(state)
    best = lrs[int(np.argmin(losses))] if losses else 1e-3
    return {"lr": float(np.clip(best / 10, lo * 10, hi / 10)), "lrs": lrs, "losses": losses}


# ---------------------------------------------------------------------- checkpoints (no pickle)
def _pack(model, opt, best_state) -> bytes:
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best_state.items()})
    for pid, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            tensors[f"opt.{pid}.{name}"] = v.detach().cpu().contiguous() if hasattr(v, "detach") else __import__("torch").tensor(v)
    return save(tensors)


def _unpack(data: bytes, model, opt, param_groups) -> dict:
    from safetensors.torch import load

    t = load(data)
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})
    return {k[5:]: v for k, v in t.items() if k.startswith("best.")}


def _run_dirs(project) -> list[str]:
    return sorted(d for d in project.list_dir("training") if project.exists(f"training/{d}/state.json"))


def unfinished_runs(project) -> list[dict]:
    """Training runs that stopped or crashed before their last epoch and can be resumed."""
    return [project.read_json(f"training/{d}/state.json") for d in _run_dirs(project)]


# ---------------------------------------------------------------------- the training loop
def iter_train(project, config: TrainConfig | None = None, *, cancel: threading.Event | None = None, resume: bool | str = False) -> Iterator[Any]:
    """Train a U-Net on the project's annotations; yields events, returns the saved model version id.

    Parameters
    ----------
    project : :class:`~napari_seg_box.core.store.Project`.
    config : :class:`TrainConfig` (default: all automatic, 50 epochs).
    cancel : set it to stop within one step; the best epoch so far is saved (status ``stopped``) and
        the run can be resumed. Before the first epoch ends, :class:`CancelledError` is raised.
    resume : ``True`` continues the newest unfinished run (``config`` may raise its ``epochs``), or give
        a run id from :func:`unfinished_runs`.
    """
    import torch

    t_start = time.perf_counter()
    state = None
    if resume:
        runs = unfinished_runs(project)
        if resume is not True:
            runs = [r for r in runs if r["run"] == resume]
        if not runs:
            raise StoreError("There is no unfinished training run to resume in this project: start a new training instead.")
        state = runs[-1]
        saved = TrainConfig.from_dict(state["config"])
        if config is not None and config.epochs > saved.epochs:
            saved.epochs = config.epochs
        cfg = saved
    else:
        cfg = config or TrainConfig()
    rt = _Runtime(cfg)
    torch.manual_seed(cfg.seed)
    yield Message(f"Training on {rt.describe()}.")
    yield Progress(0, 1, stage="preparing data")
    data = _prepare_data(project, cfg)
    if state is not None and state["training_data"]["fingerprint"] != data.fingerprint:
        yield Message("The annotations changed since this run stopped: training continues on the new annotations.", "warning")
    chosen: dict[str, Any] = dict(state["chosen"]) if state else {}
    yield Message(f"Validation: {data.split} ({len(data.train_names)} training, {len(data.val_names)} validation image(s)).")

    # model
    finetune_meta = None
    if cfg.finetune_from and state is None:
        finetune_meta = project.model_metadata(cfg.finetune_from)
        spec = ModelSpec.from_dict({**finetune_meta["model"], "classes": len(data.classes) + cfg.boundary})
        if spec.in_channels != data.channels:
            raise DataError(
                f"Model version {finetune_meta['version']} expects {spec.in_channels}-channel images but these have "
                f"{data.channels}: fine-tune from a model trained on images like these, or train from scratch."
            )
    else:
        spec = ModelSpec(cfg.encoder, data.channels, len(data.classes) + cfg.boundary, cfg.encoder_depth, cfg.decoder)
        if state is not None:
            spec = ModelSpec.from_dict(state["model"])
    model = build_model(spec, encoder_weights_file=cfg.encoder_weights_file if state is None else None)
    if finetune_meta is not None:
        from safetensors.torch import load as load_bytes

        weights = load_bytes(project.model_weights(finetune_meta["version"]))
        if finetune_meta["model"]["classes"] != spec.classes:
            weights = {k: v for k, v in weights.items() if not k.startswith("segmentation_head.")}
        model.load_state_dict(weights, strict=False)
        yield Message(f"Fine-tuning from model version {finetune_meta['version']}.")
    model.to(rt.device, memory_format=rt.memory_format)
    loss_fn = make_loss(cfg.loss)

    patch = chosen.get("patch_size") or cfg.patch_size or auto_patch_size(data)
    sampler = _Sampler(data, patch, cfg)
    batch = chosen.get("batch_size") or cfg.batch_size or auto_batch_size(model, patch, data.channels, rt, loss_fn)
    if cfg.learning_rate:
        lr = cfg.learning_rate
    elif "learning_rate" in chosen:
        lr = chosen["learning_rate"]
    else:
        yield Progress(0, 1, stage="finding the learning rate")
        lr = lr_find(model, sampler, rt, loss_fn, batch_size=min(batch, 8), cancel=cancel)["lr"]
    area = sum(it.annotated for it in data.train)
    steps = chosen.get("steps_per_epoch") or cfg.steps_per_epoch or int(np.clip(math.ceil(area / (patch * patch * batch)), 4, 500))
    chosen = {"patch_size": int(patch), "batch_size": int(batch), "learning_rate": float(lr), "steps_per_epoch": int(steps)}
    auto = [k for k in chosen if getattr(cfg, k) is None]
    yield Message(
        "Settings: " + ", ".join(f"{k.replace('_', ' ')} {v:.2g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}" for k, v in chosen.items())
        + (f" (automatic: {', '.join(a.replace('_', ' ') for a in auto)})" if auto else "")
        + f"; {spec.encoder} U-Net, {cfg.loss} loss, {cfg.augmentation} augmentation"
        + (f", boundary class ({cfg.boundary_width} px)." if cfg.boundary else ".")
    )

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    best_state = _cpu_state(model)
    best: dict[str, Any] = {}
    start_epoch = 0
    run_id = time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    if state is not None:
        run_id = state["run"]
        best_state = _unpack(project.read_bytes(f"training/{run_id}/checkpoint.safetensors"), model, opt, state["param_groups"])
        model.to(rt.device, memory_format=rt.memory_format)
        history, best, start_epoch = state["history"], state["best"], state["epoch"]
        yield Message(f"Resuming run {run_id} after epoch {start_epoch} of {cfg.epochs}.")

    total_steps = cfg.epochs * steps
    status = "completed"
    k = len(data.classes)
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        model.train()
        prefetch = _Prefetcher(sampler, epoch, steps, batch, pin=True) if rt.cuda else _InlineBatches(sampler, epoch, steps, batch)
        conf_t = torch.zeros(k * k + 1, dtype=torch.long, device=rt.device)
        loss_sum, seen = 0.0, 0
        step = 0
        pending = None  # the previous step's (loss tensor, images, lr): read one step late, so the GPU never idles

        def settle(p):
            nonlocal loss_sum, seen
            value = float(p[0])
            if not math.isfinite(value):
                raise DataError(f"The loss became {value} at epoch {epoch + 1}: lower the learning rate (it is {lr:.2g}).")
            loss_sum += value * p[1]
            seen += p[1]
            return StepLoss(epoch + 1, p[3], steps, value, p[2])

        try:
            while step < steps:
                if cancel is not None and cancel.is_set():
                    status = "stopped"
                    break
                host = prefetch.get()
                lr_now = lr_at(epoch * steps + step, total_steps, lr, cfg.schedule)
                for g in opt.param_groups:
                    g["lr"] = lr_now
                while True:  # out of memory: halve the batch and retry this step with the same samples
                    x, y, w = rt.to(*(None if a is None else a[:batch] for a in host))
                    try:
                        logits, loss = rt.optimise(model, loss_fn, opt, x, y, w, grad_clip=cfg.grad_clip)
                        break
                    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
                        if not rt.cuda or not _too_big(err):
                            raise
                        if batch == 1:
                            raise DataError("The GPU ran out of memory even with batch size 1: choose a smaller patch size or a lighter encoder.") from err
                    # out of the except clause: the error's traceback no longer holds the activations
                    opt.zero_grad(set_to_none=True)
                    del x, y, w
                    logits = loss = None
                    torch.cuda.empty_cache()
                    batch = max(1, batch // 2)
                    prefetch.size = batch
                    chosen["batch_size"] = batch
                    yield Message(f"GPU out of memory: batch size halved to {batch}; training continues.", "warning")
                pred = logits.detach().argmax(1)
                if cfg.boundary:
                    pred, y = _fold_boundary(pred), _fold_boundary(y)
                _accumulate_confusion(conf_t, pred, y, k)
                step += 1
                if pending is not None:
                    yield settle(pending)
                pending = (loss.detach(), len(x), lr_now, step)
                done = epoch * steps + step
                el = time.perf_counter() - t_start
                yield Progress(done, total_steps, stage="train", eta_s=el / max(done - start_epoch * steps, 1) * (total_steps - done))
            if pending is not None:
                yield settle(pending)
        finally:
            prefetch.close()
        if status == "stopped":
            break
        train_time = time.perf_counter() - t_epoch
        try:
            val = _validate(model, data.val, loss_fn, rt, k, cancel, fold=cfg.boundary)
        except CancelledError:
            status = "stopped"
            break
        train_acc, train_iou, _ = _scores(conf_t[: k * k].reshape(k, k).cpu().numpy())
        metrics = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": train_acc,
            "train_iou": train_iou,
            **val["metrics"],
            "lr": lr_now,
            "seconds": time.perf_counter() - t_epoch,
            "images_per_s": seen / max(train_time, 1e-9),
            "data_wait_share": prefetch.wait_s / max(train_time, 1e-9),
        }
        history.append(metrics)
        is_best = not best or metrics["val_iou"] > best["val_iou"] + 1e-6 or (
            abs(metrics["val_iou"] - best["val_iou"]) <= 1e-6 and metrics["val_loss"] < best["val_loss"]
        )
        if is_best:
            best = {"epoch": epoch + 1, "val_iou": metrics["val_iou"], "val_loss": metrics["val_loss"], "val_acc": metrics["val_acc"]}
            best_state = _cpu_state(model)
        yield EpochEnd(epoch + 1, cfg.epochs, metrics, is_best)
        if val["preview"] is not None:
            yield Preview(epoch + 1, *val["preview"])
        _save_checkpoint(project, run_id, model, opt, best_state, cfg, spec, data, chosen, history, best, epoch + 1, finetune_meta)
        yield CheckpointSaved("last", epoch + 1, is_best, metrics)
        if cfg.patience and epoch + 1 - best["epoch"] >= cfg.patience and epoch + 1 < cfg.epochs:
            status = "early_stopped"
            yield Message(f"Early stopping: validation IoU has not improved for {cfg.patience} epochs (best at epoch {best['epoch']}).")
            break
    if not history:
        raise CancelledError("Training was stopped before the first epoch ended: nothing was saved.")

    meta = {
        "format_version": MODEL_FORMAT_VERSION,
        "model": spec.to_dict(),
        "encoder": spec.encoder,
        "class_names": list(data.classes),
        "boundary": {"width": cfg.boundary_width} if cfg.boundary else None,
        "normalization": {"kind": "percentile", "percentiles": list(DEFAULT_PERCENTILES)},
        "patch_size": int(chosen["patch_size"]),
        "config": cfg.to_dict(),
        "chosen": chosen,
        "training_data": {"fingerprint": data.fingerprint, "train_images": data.train_names, "validation_images": data.val_names, "validation": data.split},
        "history": history,
        "best_metrics": best,
        "status": status,
        "epochs_run": len(history),
        "run": run_id,
        "finetuned_from": finetune_meta["version"] if finetune_meta else None,
        "device": rt.describe(),
        "duration_s": round(time.perf_counter() - t_start + (state or {}).get("duration_s", 0.0), 2),
        "packages": _packages(),
        "postprocess": {},
    }
    version = project.new_version_id()
    project.save_model_version(version, _state_bytes(best_state), meta)
    if status != "stopped":
        project.remove(f"training/{run_id}")
    yield CheckpointSaved(version, best["epoch"], True, best)
    word = {"completed": "Training finished", "stopped": "Training stopped", "early_stopped": "Training stopped early"}[status]
    yield Message(f"{word}: model version {version} (best epoch {best['epoch']}, validation IoU {best['val_iou']:.3f}).")
    return version


def _validate(model, items: list[_Item], loss_fn, rt: _Runtime, k: int, cancel, *, fold: bool = False) -> dict:
    import torch

    from .data import pad_to_multiple

    model.eval()
    conf_t = torch.zeros(k * k + 1, dtype=torch.long, device=rt.device)
    loss_sum, n = 0.0, 0
    preview = None
    with torch.inference_mode():
        for i, it in enumerate(items):
            check_cancel(cancel)
            img, (h, w) = pad_to_multiple(it.image, 32)
            x, _, _ = rt.to(img.transpose(2, 0, 1)[None].copy())
            with rt.autocast():
                logits = model(x)[..., :h, :w].float()
            y = torch.from_numpy(it.target.astype(np.int64))[None].to(rt.device)
            wt = None if it.weight is None else torch.from_numpy(it.weight)[None].to(rt.device)
            npx = int((y != IGNORE).sum())
            loss_sum += float(loss_fn(logits, y, wt)) * npx
            n += npx
            pred = logits.argmax(1)
            if fold:
                pred, y = _fold_boundary(pred), _fold_boundary(y)
            _accumulate_confusion(conf_t, pred, y, k)
            if i == 0:
                s = (slice(0, 256), slice(0, 256))
                view = np.clip(it.image[s][..., 0], 0, 1)
                truth = (np.minimum(it.target[s], 1) if fold else it.target[s]).astype(np.int32) + 1
                truth[it.target[s] == IGNORE] = 0
                preview = (view, pred[0].cpu().numpy()[s].astype(np.int32) + 1, truth)
    acc, iou, per = _scores(conf_t[: k * k].reshape(k, k).cpu().numpy())
    return {"metrics": {"val_loss": loss_sum / max(n, 1), "val_acc": acc, "val_iou": iou, "val_iou_per_class": per}, "preview": preview}


def _cpu_state(model) -> dict:
    """A CPU copy of the weights, in contiguous layout (channels_last weights are not)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _state_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def _save_checkpoint(project, run_id, model, opt, best_state, cfg, spec, data, chosen, history, best, epoch, finetune_meta):
    """Weights + optimiser (safetensors) first, then ``state.json`` (atomic): a kill leaves the old pair."""
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt.state_dict()["param_groups"]]
    project.write_bytes(f"training/{run_id}/checkpoint.safetensors", _pack(model, opt, best_state))
    project.write_json(
        f"training/{run_id}/state.json",
        {
            "run": run_id,
            "epoch": epoch,
            "config": cfg.to_dict(),
            "model": spec.to_dict(),
            "chosen": chosen,
            "history": history,
            "best": best,
            "param_groups": groups,
            "training_data": {"fingerprint": data.fingerprint},
            "finetuned_from": finetune_meta["version"] if finetune_meta else None,
        },
    )


def _packages() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("napari-seg-box", "torch", "segmentation-models-pytorch", "albumentations", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def train(project, config: TrainConfig | None = None, *, on_event=None, cancel: threading.Event | None = None, resume: bool | str = False) -> str:
    """Train and return the new model version id (blocking; ``on_event(event)`` sees each event)."""
    return run_to_end(iter_train(project, config, cancel=cancel, resume=resume), on_event)
