"""Training a classifier: :func:`iter_train_classifier` yields the same typed events as the U-Net's
loop (progress, step losses, epoch figures, checkpoints, messages) and returns the saved version id.

The machinery is the segmentation loop's: the device runtime (mixed precision on CUDA, one
optimisation step), the one-cycle schedule, resumable checkpoints in ``training/<run>/`` after every
epoch, ``cancel`` keeping the best epoch (status ``stopped``), ``resume=True``, halving the batch when
the GPU runs out of memory. The best epoch is the one of highest validation macro-F1 (ties: lower
validation loss); early stopping watches the same figure. Held-out ``test`` images are never read.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CancelledError, DataError
from ..events import CheckpointSaved, EpochEnd, Message, Progress, StepLoss, run_to_end
from ..models import ModelSpec
from ..train.checkpoint import cpu_state, restore_checkpoint, resumed, save_checkpoint, state_bytes
from ..train.runtime import _Runtime, _too_big, lr_at
from ..train.validate import is_better, recompute_batch_norm
from ..train.version import package_versions, training_record
from ..versions import ModelVersion, Normalization, Provenance
from .config import ClassifyConfig
from .data import ClassData, augment_batch, prepare_class_data
from .metrics import classification_metrics, confusion
from .model import build_classifier, classifier_spec

MAX_CLASS_WEIGHT = 10.0
PRECISE_BN_STEPS = 300  # while the run is this young (steps), batch-norm statistics are recomputed before validation


@dataclass
class ClassRun:
    """The state of one classifier run (the attributes :func:`~..train.checkpoint.save_checkpoint` reads)."""

    project: Any
    cfg: ClassifyConfig
    rt: _Runtime
    data: ClassData
    spec: ModelSpec
    model: Any
    run_id: str
    t_start: float
    opt: Any = None
    chosen: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    best_state: dict | None = None
    status: str = "completed"
    finetuned_from: str | None = None
    duration_before: float = 0.0
    start: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return round(self.duration_before + time.perf_counter() - self.t_start, 2)


def iter_train_classifier(
    project, config: ClassifyConfig | None = None, *, cancel: threading.Event | None = None, resume: bool | str = False
) -> Iterator[Any]:
    """Train an image classifier on the project's classified images; yields events, returns the new version id.

    Parameters
    ----------
    project : a :class:`~..store.Project` of task ``classification``.
    config : :class:`ClassifyConfig` (default: all automatic, 30 epochs).
    cancel : set it to stop within one step (the best epoch so far is saved, status ``stopped``).
    resume : ``True`` continues the newest unfinished run, or give its run id.
    """
    import torch

    if project.task != "classification":
        raise DataError(
            f"This is a {project.task} project: it has no image classes to learn. Train a U-Net (napari-seg-box train), "
            "or create a classification project (napari-seg-box init --task classification)."
        )
    t_start = time.perf_counter()
    cfg, state = resumed(project, config, resume, ClassifyConfig)
    rt = _Runtime(cfg)
    torch.manual_seed(cfg.seed)
    yield Message(f"Training on {rt.describe()}.", topic="device")
    yield Progress(0, 1, stage="preparing data")
    data = prepare_class_data(project, validation_fraction=cfg.validation_fraction, seed=cfg.seed, input_size=cfg.input_size)
    yield Message(f"Validation: {data.split} ({len(data.train)} training, {len(data.val)} validation image(s)).", topic="validation")
    if state is None:
        spec = classifier_spec(cfg.network, data.channels, len(data.classes))
        model = build_classifier(spec, weights_file=cfg.weights_file, pretrained=cfg.pretrained)
    else:
        spec = ModelSpec.from_dict(state["model"])
        if spec.classes != len(data.classes) or spec.in_channels != data.channels:
            raise DataError("The project's classes or channels changed since this run stopped: start a new training instead.")
        model = build_classifier(spec)
    model.to(rt.device)
    run_id = state["run"] if state else time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    run = ClassRun(project, cfg, rt, data, spec, model, run_id, t_start)
    run.chosen = dict(state["chosen"]) if state else _choose(cfg, rt, data)
    yield _settings_message(run)
    run.opt = torch.optim.AdamW(model.parameters(), lr=run.chosen["learning_rate"], weight_decay=cfg.weight_decay)
    run.best_state = cpu_state(model)
    start = 0
    if state is not None:
        run.best_state = restore_checkpoint(project, run_id, model, run.opt, state)
        run.history, run.best, start = state["history"], state["best"], state["epoch"]
        run.duration_before = float(state.get("duration_s") or 0.0)
        yield Message(f"Resuming run {run_id} after epoch {start} of {cfg.epochs}.")

    weights = _class_weights(data.counts) if cfg.balance == "loss" else None
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=None if weights is None else torch.as_tensor(weights, device=rt.device), label_smoothing=cfg.label_smoothing
    )
    for epoch in range(start, cfg.epochs):
        t_epoch = time.perf_counter()
        figures = yield from _train_epoch(run, loss_fn, epoch, cancel)
        if figures is None:
            run.status = "stopped"
            break
        train_time = time.perf_counter() - t_epoch
        if (epoch + 1) * run.chosen["steps_per_epoch"] <= PRECISE_BN_STEPS:
            _precise_batch_norm(run, epoch)
        val = _validate(run, loss_fn)
        metrics = {"epoch": epoch + 1, **figures, **val, "seconds": time.perf_counter() - t_epoch}
        metrics["images_per_s"] = len(data.train) / max(train_time, 1e-9)
        run.history.append(metrics)
        is_best = _is_better(metrics, run.best)
        if is_best:
            run.best = {k: metrics[k] for k in ("epoch", "val_f1", "val_acc", "val_balanced_acc", "val_loss")}
            run.best_state = cpu_state(model)
        yield EpochEnd(epoch + 1, cfg.epochs, metrics, is_best)
        save_checkpoint(run, epoch + 1)
        yield CheckpointSaved("last", epoch + 1, is_best, metrics)
        if cfg.patience and epoch + 1 - run.best["epoch"] >= cfg.patience and epoch + 1 < cfg.epochs:
            run.status = "early_stopped"
            yield Message(
                f"Early stopping: validation macro-F1 has not improved for {cfg.patience} epochs (best at epoch {run.best['epoch']})."
            )
            break
    if not run.history:
        raise CancelledError("Training was stopped before the first epoch ended: nothing was saved.")
    saved = _save_version(run)
    if run.status != "stopped":
        project.remove(f"training/{run.run_id}")
    yield CheckpointSaved(saved.version, run.best["epoch"], True, run.best)
    word = {"completed": "Training finished", "stopped": "Training stopped", "early_stopped": "Training stopped early"}[run.status]
    yield Message(f"{word}: model version {saved.version} (best epoch {run.best['epoch']}, validation macro-F1 {run.best['val_f1']:.3f}).")
    return saved.version


def train_classifier(project, config: ClassifyConfig | None = None, *, on_event=None, cancel=None, resume: bool | str = False) -> str:
    """Train and return the new model version id (blocking; ``on_event(event)`` sees each event)."""
    return run_to_end(iter_train_classifier(project, config, cancel=cancel, resume=resume), on_event)


# ---------------------------------------------------------------------- the steps
def _is_better(metrics: dict, best: dict) -> bool:
    """A higher validation macro-F1, or the same with a lower validation loss."""
    return is_better(metrics, best, key="val_f1", tie=1e-9)


def _choose(cfg: ClassifyConfig, rt: _Runtime, data: ClassData) -> dict:
    batch = cfg.batch_size or min(128 if rt.cuda else 32, len(data.train))
    lr = cfg.learning_rate or (3e-4 if cfg.pretrained or cfg.weights_file else 1e-3)
    steps = max(1, math.ceil(len(data.train) / batch))
    return {"input_size": data.size, "scale": data.scale, "batch_size": int(batch), "learning_rate": float(lr), "steps_per_epoch": steps}


def _settings_message(run: ClassRun) -> Message:
    cfg, c = run.cfg, run.chosen
    auto = [k.replace("_", " ") for k in ("input_size", "batch_size", "learning_rate") if getattr(cfg, k) is None]
    balance = {
        "loss": "classes weighted in the loss (inverse frequency)",
        "sampler": "class-balanced batches",
        "none": "classes unbalanced",
    }[cfg.balance]
    return Message(
        f"Settings: input {c['input_size']} px (images scaled x{c['scale']:.2f}), batch size {c['batch_size']}, learning rate "
        f"{c['learning_rate']:.2g}, {c['steps_per_epoch']} steps per epoch" + (f" (automatic: {', '.join(auto)})" if auto else "")
        + f"; {cfg.network}{' (ImageNet weights)' if cfg.pretrained else ''}, {cfg.augmentation} augmentation, {balance}"
        + (f", label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else "") + ".",
        topic="settings",
    )  # fmt: skip


def _class_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights of the classes present, mean 1 over the images, at most 10x apart."""
    counts = counts.astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    w = np.minimum(w, MAX_CLASS_WEIGHT * w[counts > 0].min())
    return (w / (w * counts).sum() * counts.sum()).astype(np.float32)


def _order(run: ClassRun, epoch: int) -> np.ndarray:
    """The training images of one epoch, in order: shuffled, or drawn class-balanced."""
    rng = np.random.default_rng([run.cfg.seed, epoch])
    y = run.data.train.y
    if run.cfg.balance != "sampler":
        return rng.permutation(len(y))
    p = 1.0 / np.bincount(y)[y]
    return rng.choice(len(y), size=len(y), p=p / p.sum())


def _train_epoch(run: ClassRun, loss_fn, epoch: int, cancel) -> Iterator[Any]:
    import torch

    cfg, rt, chosen = run.cfg, run.rt, run.chosen
    order = _order(run, epoch)
    steps, batch, k = chosen["steps_per_epoch"], chosen["batch_size"], len(run.data.classes)
    rng = np.random.default_rng([cfg.seed, epoch, 1])
    run.model.train()
    conf = np.zeros((k, k), np.int64)
    loss_sum, seen, lr = 0.0, 0, chosen["learning_rate"]
    t0 = time.perf_counter()
    for step in range(steps):
        if cancel is not None and cancel.is_set():
            return None
        idx = order[step * batch : (step + 1) * batch]
        if len(idx) < 2 and step:  # a last batch of one: batch norm cannot train on it
            continue
        lr = lr_at(epoch * steps + step, cfg.epochs * steps, chosen["learning_rate"], "onecycle")
        for g in run.opt.param_groups:
            g["lr"] = lr
        xb = augment_batch(run.data.train.x[idx], rng, cfg.augmentation)
        yb = torch.from_numpy(run.data.train.y[idx])
        while True:
            x, y, _ = rt.to(xb, yb)
            try:
                logits, loss = rt.optimise(
                    run.model, lambda out, t, _w: loss_fn(out.float(), t), run.opt, x, y, None, grad_clip=cfg.grad_clip
                )
                break
            except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
                if not rt.cuda or not _too_big(err) or len(xb) == 1:
                    raise
            run.opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            xb, yb = xb[: len(xb) // 2], yb[: len(yb) // 2]
            yield Message(f"GPU out of memory: this step continues with {len(xb)} images.", "warning")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DataError(f"The loss became {value} at epoch {epoch + 1}: lower the learning rate (it is {lr:.2g}).")
        conf += confusion(y.cpu().numpy(), logits.detach().argmax(1).cpu().numpy(), k)
        loss_sum, seen = loss_sum + value * len(xb), seen + len(xb)
        yield StepLoss(epoch + 1, step + 1, steps, value, lr)
        per_step = (time.perf_counter() - t0) / (step + 1)
        eta = per_step * (steps - step - 1 + steps * (cfg.epochs - epoch - 1))
        yield Progress(epoch * steps + step + 1, cfg.epochs * steps, stage="train", eta_s=eta, message=f"epoch {epoch + 1} of {cfg.epochs}")
    m = classification_metrics(conf)
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": m["accuracy"], "train_f1": m["macro_f1"], "lr": lr}


def _precise_batch_norm(run: ClassRun, epoch: int) -> None:
    """Recompute the batch-norm statistics of the current weights from a few training batches
    (cumulative average, train mode, no update of the weights): early in a run the running averages
    still describe weights long gone, and the network in eval mode (validation, the saved model)
    predicts one class for everything (the segmentation loop does the same, :mod:`..train.loop`)."""
    rng = np.random.default_rng([run.cfg.seed, epoch, 2])
    order, batch = _order(run, epoch), run.chosen["batch_size"]
    steps = range(min(8, max(1, len(order) // batch)))
    recompute_batch_norm(
        run, (augment_batch(run.data.train.x[order[i * batch : (i + 1) * batch]], rng, run.cfg.augmentation) for i in steps)
    )


def _validate(run: ClassRun, loss_fn) -> dict:
    import torch

    run.model.eval()
    k = len(run.data.classes)
    x_all, y_all = run.data.val.x, run.data.val.y
    loss_sum, preds = 0.0, []
    with torch.no_grad(), run.rt.autocast():
        for i in range(0, len(x_all), 256):
            x, y, _ = run.rt.to(x_all[i : i + 256].astype(np.float32), torch.from_numpy(y_all[i : i + 256]))
            logits = run.model(x).float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            preds.append(logits.argmax(1).cpu().numpy())
    m = classification_metrics(confusion(y_all, np.concatenate(preds), k))
    return {
        "val_loss": loss_sum / len(y_all),
        "val_acc": m["accuracy"],
        "val_balanced_acc": m["balanced_accuracy"],
        "val_f1": m["macro_f1"],
        "val_f1_per_class": [float(v) for v in m["f1"]],
    }


def _save_version(run: ClassRun) -> ModelVersion:
    data = run.data
    info = ModelVersion(
        spec=run.spec,
        class_names=tuple(data.classes),
        task="classification",
        normalization=Normalization("dataset", low=tuple(data.low.tolist()), high=tuple(data.high.tolist())),
        patch_size=int(run.chosen["input_size"]),
        training=training_record(run),
        provenance=Provenance(
            data_fingerprint=data.fingerprint,
            train_images=tuple(data.train.names),
            validation_images=tuple(data.val.names),
            validation=data.split,
            packages=package_versions(),
        ),
    )
    return run.project.save_model_version(state_bytes(run.best_state), info)
