"""The training loop: :func:`iter_train` yields typed events and returns the saved model version's id.

A novice sets only ``epochs``; every other :class:`TrainConfig` field left at ``None`` is chosen
automatically (:mod:`.auto`), reported, and saved with the model. Held-out ``test`` images are never
read. A resumable checkpoint is written after every epoch (:mod:`.checkpoint`); a stopped or crashed
run continues with ``resume=True``. At the end the best epoch becomes a model version (:mod:`.version`).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CancelledError, DataError
from ..events import CheckpointSaved, EpochEnd, Message, Preview, Progress, StepLoss, run_to_end
from ..losses import make_loss
from ..models import ModelSpec, build_model
from ..versions import ModelVersion
from .auto import auto_batch_size, auto_patch_size, iter_lr_find
from .budget import FIRST_STEPS, VALIDATION_GUESS, TimeBudget
from .budget import LEARNING_RATE as BUDGET_LR
from .checkpoint import cpu_state, restore_checkpoint, resumed, save_checkpoint
from .config import TrainConfig
from .distributed import Distributed, peer_lost, wrap
from .distributed import step as distributed_step
from .finetune import emphasise_recent, validate_start
from .prepare import _Data, _fold_boundary, _prepare_data
from .runtime import _accumulate_confusion, _Runtime, _scores, _too_big, lr_at
from .sampling import _InlineBatches, _Prefetcher, _Sampler
from .validate import _class_logits, _precise_batch_norm, _validate, is_better
from .version import save_version

PRECISE_BN_STEPS = 50  # while the run is this young (in optimisation steps) the batch-norm statistics are recomputed each epoch


@dataclass
class Run:
    """The state of one training run, passed between the steps of the loop (and checkpointed)."""

    project: Any
    cfg: TrainConfig
    rt: _Runtime
    data: _Data
    spec: ModelSpec
    model: Any
    run_id: str
    t_start: float
    dist: Distributed = field(default_factory=Distributed)
    net: Any = None  # what the optimisation steps run: ``model``, or its DistributedDataParallel
    loss_fn: Any = None
    finetuned_from: str | None = None
    start: dict[str, Any] = field(default_factory=dict)  # fine-tuning: the starting version's validation figures
    duration_before: float = 0.0  # seconds spent by this run before it was resumed
    chosen: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    best_state: dict | None = None
    opt: Any = None
    start_epoch: int = 0
    status: str = "completed"
    step_seconds: float = 0.0  # time spent in optimisation steps this session (validation excluded)
    steps_done: int = 0
    validation_seconds: float = 0.0  # the last validation's duration
    epochs: int = 0  # planned: the configured number, or what fits the time budget
    budget: TimeBudget | None = None

    @property
    def duration_s(self) -> float:
        return round(self.duration_before + time.perf_counter() - self.t_start, 2)


def iter_train(
    project, config: TrainConfig | None = None, *, cancel: threading.Event | None = None, resume: bool | str = False
) -> Iterator[Any]:
    """Train a U-Net on the project's annotations; yields events, returns the saved model version id.

    Parameters
    ----------
    project : :class:`~napari_seg_box.core.store.Project`.
    config : :class:`TrainConfig` (default: all automatic, 50 epochs).
    cancel : set it to stop within one step; the best epoch so far is saved (status ``stopped``) and
        the run can be resumed. Before the first epoch ends, :class:`CancelledError` is raised.
    resume : ``True`` continues the newest unfinished run (``config`` may raise its ``epochs``), or give
        a run id from :func:`unfinished_runs`.

    Under ``torchrun`` every process runs this and together they train one model
    (:mod:`.distributed`); the events of rank 0 are the run's.
    """
    if project.task != "segmentation":
        raise DataError(
            f"This is a {project.task} project: a U-Net segments, it cannot learn image classes. Train a classifier "
            "(napari-seg-box train chooses by the project's task; in Python: napari_seg_box.core.classify.train_classifier)."
        )
    t_start = time.perf_counter()
    cfg, state = resumed(project, config, resume, TrainConfig)
    dist = Distributed.from_environment(cfg.device)
    try:
        return (yield from _train(project, cfg, state, dist, t_start, cancel))
    except Exception as err:
        if dist.active and peer_lost(err):
            raise DataError(
                f"Another process of this distributed run stopped (its connection closed), so rank {dist.rank} stops too. "
                "The checkpoint of the last finished epoch is kept: run the same command with --resume to continue."
            ) from err
        raise
    finally:
        dist.end()


def _train(project, cfg: TrainConfig, state: dict | None, dist: Distributed, t_start: float, cancel) -> Iterator[Any]:
    import torch

    rt = _Runtime(cfg, dist.device(cfg.device))
    torch.manual_seed(cfg.seed)
    yield Message(f"Training on {rt.describe()}" + (f", rank {dist.rank} of {dist.world}." if dist.active else "."), topic="device")
    yield Progress(0, 1, stage="preparing data")
    data = _prepare_data(
        project,
        cfg,
        distance=state["chosen"].get("distance", False) if state else (False if cfg.boundary else cfg.distance),
        validation_of=project.model_version(cfg.finetune_from).provenance if cfg.finetune_from else None,
    )
    if dist.share(data.fingerprint) != data.fingerprint:
        raise DataError(
            f"Rank {dist.rank} of the distributed run reads other annotations than rank 0: every process must read the same "
            "project store (a shared folder or an S3 URL)."
        )
    if state is not None and state["training_data"]["fingerprint"] != data.fingerprint:
        yield Message("The annotations changed since this run stopped: training continues on the new annotations.", "warning")
    yield Message(
        f"Validation: {data.split} ({len(data.train_names)} training, {len(data.val_names)} validation image(s)).", topic="validation"
    )
    run = yield from _start(project, cfg, rt, data, state, t_start)
    run.dist, run.run_id = dist, dist.share(run.run_id)
    chosen = (yield from _settings(run, state, cancel)) if dist.main else None
    run.chosen = dist.share(chosen)
    if dist.active:
        run.chosen["processes"] = dist.world  # recorded with the version
    # on a GPU one fused kernel updates all the weights (small batches are launch-bound: issue 18)
    run.opt = torch.optim.AdamW(
        run.model.parameters(), lr=run.chosen["learning_rate"], weight_decay=cfg.weight_decay, fused=rt.cuda or None
    )
    run.best_state = cpu_state(run.model)
    if state is not None:
        run.best_state = restore_checkpoint(project, run.run_id, run.model, run.opt, state)
        run.model.to(rt.device, memory_format=rt.memory_format)
        run.history, run.best, run.start_epoch = state["history"], state["best"], state["epoch"]
        run.start = dict(state.get("start") or {})
        yield Message(f"Resuming run {run.run_id} after epoch {run.start_epoch} of {cfg.epochs}.")
    run.net = wrap(run.model, dist, rt.device)
    if dist.active:
        yield Message(dist.describe(run.chosen["batch_size"]), topic="settings")

    sampler = _Sampler(data, run.chosen["patch_size"], cfg, rank=dist.rank if dist.active else None)
    loss_fn = run.loss_fn = make_loss(cfg.loss, distance=data.distance)
    if run.finetuned_from:
        yield from emphasise_recent(run)
        if state is None:
            yield from validate_start(run, loss_fn, cancel)
    run.epochs = cfg.epochs
    if cfg.minutes:
        run.budget = TimeBudget(cfg.minutes * 60, t_start)
    epoch, t_loop = run.start_epoch, time.perf_counter()
    while epoch < run.epochs:
        t_epoch = time.perf_counter()
        figures = yield from _train_epoch(run, sampler, loss_fn, epoch, cancel)
        if figures is None:
            run.status = "stopped"
            break
        train_time = time.perf_counter() - t_epoch
        if (epoch + 1) * run.chosen["steps_per_epoch"] <= PRECISE_BN_STEPS and not run.finetuned_from:
            _precise_batch_norm(run, sampler, epoch)
        dist.sync_buffers(run.model)  # every rank validates (and rank 0 saves) rank 0's batch-norm statistics
        t_val = time.perf_counter()
        try:
            val = _validate(
                run.model, data.val, loss_fn, rt, len(data.classes), None if dist.active else cancel,
                fold=cfg.boundary, distance=data.distance, dist=dist,
            )  # fmt: skip
        except CancelledError:
            run.status = "stopped"
            break
        run.validation_seconds = time.perf_counter() - t_val
        metrics = {
            "epoch": epoch + 1,
            **figures["metrics"],
            **val["metrics"],
            "seconds": time.perf_counter() - t_epoch,
            "images_per_s": figures["seen"] * dist.world / max(train_time, 1e-9),
            "data_wait_share": figures["wait_s"] / max(train_time, 1e-9),
        }
        run.history.append(metrics)
        is_best = is_better(metrics, run.best, by_loss=data.distance)
        if is_best:
            run.best = {k: metrics[k] for k in ("epoch", "val_iou", "val_loss", "val_acc", "val_distance_error") if k in metrics}
            run.best_state = cpu_state(run.model)
        yield EpochEnd(epoch + 1, run.epochs, metrics, is_best)
        if val["preview"] is not None:
            yield Preview(epoch + 1, *val["preview"])
        if dist.main:
            save_checkpoint(run, epoch + 1)
        yield CheckpointSaved("last", epoch + 1, is_best, metrics)
        if cfg.patience and epoch + 1 - run.best["epoch"] >= cfg.patience and epoch + 1 < run.epochs:
            run.status = "early_stopped"
            what = "loss" if data.distance else "IoU"
            yield Message(
                f"Early stopping: validation {what} has not improved for {cfg.patience} epochs (best at epoch {run.best['epoch']})."
            )
            break
        epoch += 1
        if run.budget is not None:
            yield from _plan_epochs(run, epoch, (time.perf_counter() - t_loop) / (epoch - run.start_epoch))
    if not run.history:
        raise CancelledError("Training was stopped before the first epoch ended: nothing was saved.")

    dist.check_replicas(run.best_state, rt.device)
    version = save_version(run).version if dist.main else None
    if run.status != "stopped" and dist.main:
        project.remove(f"training/{run.run_id}")
    version = dist.share(version)  # also: no rank ends before the version is written
    yield CheckpointSaved(version, run.best["epoch"], True, run.best)
    word = {"completed": "Training finished", "stopped": "Training stopped", "early_stopped": "Training stopped early"}[run.status]
    before = ""
    if run.start:
        before = f"; {run.start['version']} on the same images: {run.start['val_iou']:.3f}"
        if run.start["val_iou"] > run.best["val_iou"]:
            before += ", higher: compare both on your images (evaluate --compare, or Predict with each) and keep the better one"
    yield Message(f"{word}: model version {version} (best epoch {run.best['epoch']}, validation IoU {run.best['val_iou']:.3f}{before}).")
    return version


def train(
    project, config: TrainConfig | None = None, *, on_event=None, cancel: threading.Event | None = None, resume: bool | str = False
) -> str:
    """Train and return the new model version id (blocking; ``on_event(event)`` sees each event)."""
    return run_to_end(iter_train(project, config, cancel=cancel, resume=resume), on_event)


# ---------------------------------------------------------------------- the steps
def _start(project, cfg: TrainConfig, rt: _Runtime, data: _Data, state: dict | None, t_start: float):
    """Build the network: from scratch, from a version to fine-tune (a generator: it reports), or as
    the checkpointed run was."""
    outputs = len(data.classes) + cfg.boundary + data.distance
    base: ModelVersion | None = None
    if state is not None:
        spec = ModelSpec.from_dict(state["model"])
    elif cfg.finetune_from:
        base = project.model_version(cfg.finetune_from)
        spec = ModelSpec.from_dict({**base.spec.to_dict(), "classes": outputs})
        if spec.in_channels != data.channels:
            raise DataError(
                f"Model version {base.version} expects {spec.in_channels}-channel images but these have "
                f"{data.channels}: fine-tune from a model trained on images like these, or train from scratch."
            )
    else:
        spec = ModelSpec(cfg.encoder, data.channels, outputs, cfg.encoder_depth, cfg.decoder)
    model = build_model(spec, **({"encoder_weights_file": cfg.encoder_weights_file, "pretrained": cfg.pretrained} if state is None else {}))
    if base is not None:
        from safetensors.torch import load as load_bytes

        weights = load_bytes(project.model_weights(base))
        if base.spec.classes != spec.classes:  # other classes: a new head
            weights = {k: v for k, v in weights.items() if not k.startswith("segmentation_head.")}
        try:
            with warnings.catch_warnings():  # smp warns of tensors of other shapes: said below, in one clear error
                warnings.simplefilter("ignore")
                missing, unexpected = model.load_state_dict(weights, strict=False)
        except RuntimeError as err:  # tensors of other shapes
            missing, unexpected = [str(err).splitlines()[-1].strip()], []
        wrong = [k for k in [*missing, *unexpected] if not k.startswith("segmentation_head.")]
        if wrong:
            raise DataError(
                f"The weights of model version {base.version} do not fit its {base.spec.encoder} U-Net ({len(wrong)} tensor(s) differ, "
                f"e.g. {wrong[0]}): it cannot be fine-tuned. Train from scratch, or fine-tune another version."
            )
        yield Message(f"Fine-tuning from model version {base.version}.")
    model.to(rt.device, memory_format=rt.memory_format)
    run_id = state["run"] if state else time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    return Run(
        project, cfg, rt, data, spec, model, run_id, t_start,
        finetuned_from=state.get("finetuned_from") if state else (base.version if base else None),
        duration_before=float(state.get("duration_s") or 0.0) if state else 0.0,
    )  # fmt: skip


def _settings(run: Run, state: dict | None, cancel) -> Iterator[Any]:
    """Patch size, batch size, learning rate and steps per epoch: given, checkpointed, or automatic."""
    cfg, data = run.cfg, run.data
    chosen = dict(state["chosen"]) if state else {}
    patch = chosen.get("patch_size") or cfg.patch_size or auto_patch_size(data)
    biggest = max(max(it.target.shape) for it in data.train)
    if patch > max(32, math.ceil(biggest / 32) * 32):  # larger patches only pad the images: memory for nothing
        capped = max(32, math.ceil(biggest / 32) * 32)
        yield Message(f"Patch size {patch} is larger than the images ({biggest} px at most): training with {capped}.", "warning")
        patch = capped
    loss_fn = make_loss(cfg.loss, distance=data.distance)
    batch = chosen.get("batch_size") or cfg.batch_size or auto_batch_size(run.model, patch, data.channels, run.rt, loss_fn) * run.dist.world
    lr = cfg.learning_rate or chosen.get("learning_rate") or (BUDGET_LR if cfg.minutes else None)
    if not lr:
        yield Progress(0, 1, stage="finding the learning rate")
        lr = (yield from iter_lr_find(run.model, _Sampler(data, patch, cfg), run.rt, loss_fn, batch_size=min(batch, 8), cancel=cancel))[
            "lr"
        ]
    area = sum(it.annotated for it in data.train)
    steps = chosen.get("steps_per_epoch") or cfg.steps_per_epoch or int(np.clip(math.ceil(area / (patch * patch * batch)), 4, 500))
    chosen = {"patch_size": int(patch), "batch_size": int(batch), "learning_rate": float(lr), "steps_per_epoch": int(steps)}
    auto = [k for k in chosen if getattr(cfg, k) is None]
    if data.distance:
        why = f"automatic: {data.touching:.0%} of the objects touch another" if cfg.distance is None else "asked for"
        extra = f", distance output ({why})."
    elif cfg.boundary:
        extra = f", boundary class ({cfg.boundary_width} px)."
    else:
        extra = "."
    yield Message(
        "Settings: " + ", ".join(f"{k.replace('_', ' ')} {v:.2g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}" for k, v in chosen.items())
        + (f" (automatic: {', '.join(a.replace('_', ' ') for a in auto)})" if auto else "")
        + f"; {run.spec.encoder} U-Net, {cfg.loss} loss, {cfg.augmentation} augmentation{extra}",
        topic="settings",
    )  # fmt: skip
    return {**chosen, "distance": data.distance}


def _train_epoch(run: Run, sampler: _Sampler, loss_fn, epoch: int, cancel) -> Iterator[Any]:
    """One epoch of optimisation steps; returns its figures, or None when stopped. On CUDA, running
    out of memory halves the batch and retries the step with the same samples."""
    import torch

    cfg, rt, chosen = run.cfg, run.rt, run.chosen
    steps, lr, k = chosen["steps_per_epoch"], chosen["learning_rate"], len(run.data.classes)
    run.model.train()
    batch, dist = chosen["batch_size"], run.dist
    shard = dist.shard(batch)  # this rank's part of the batch
    prefetch = _Prefetcher(sampler, epoch, steps, shard, pin=True) if rt.cuda else _InlineBatches(sampler, epoch, steps, shard)
    conf_t = torch.zeros(k * k + 1, dtype=torch.long, device=rt.device)
    loss_sum, seen, lr_now = 0.0, 0, lr
    pending = None  # the previous step's (loss tensor, images, lr, step): read one step late, so the GPU never idles

    def settle(p):
        nonlocal loss_sum, seen
        value = float(p[0])
        if not math.isfinite(value):
            raise DataError(f"The loss became {value} at epoch {epoch + 1}: lower the learning rate (it is {lr:.2g}).")
        loss_sum += value * p[1]
        seen += p[1]
        return StepLoss(epoch + 1, p[3], steps, value, p[2])

    stopped = False
    t0 = time.perf_counter()
    try:
        for step in range(steps):
            if cancel is not None and cancel.is_set() and not dist.active:  # distributed: all ranks agree in the step
                stopped = True
                break
            host = prefetch.get()
            lr_now = lr_at(epoch * steps + step, run.epochs * steps, lr, cfg.schedule)
            for g in run.opt.param_groups:
                g["lr"] = lr_now
            while True:  # out of memory: halve the batch and retry this step with the same samples
                x, y, w = rt.to(*(None if a is None else a[:shard] for a in host))
                try:
                    if dist.active:
                        logits, loss, stopped = distributed_step(run, x, y, w, cancel)
                    else:
                        logits, loss = rt.optimise(run.model, loss_fn, run.opt, x, y, w, grad_clip=cfg.grad_clip)
                    break
                except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
                    if not (rt.cuda or dist.active) or not _too_big(err):
                        raise
                    if batch == 1:
                        raise DataError(
                            "The GPU ran out of memory even with batch size 1: choose a smaller patch size or a lighter encoder."
                        ) from err
                # out of the except clause: the error's traceback no longer holds the activations
                run.opt.zero_grad(set_to_none=True)
                del x, y, w
                logits = loss = None
                torch.cuda.empty_cache()
                batch = max(1, batch // 2)
                chosen["batch_size"], shard = batch, dist.shard(batch)
                prefetch.size = shard
                yield Message(f"GPU out of memory: batch size halved to {batch}; training continues.", "warning")
            for note in rt.pop_notes():
                yield Message(*note)
            if stopped:
                break
            pred = _class_logits(logits.detach(), run.data.distance).argmax(1)
            if cfg.boundary:
                pred, y = _fold_boundary(pred), _fold_boundary(y)
            _accumulate_confusion(conf_t, pred, y, k)
            if pending is not None:
                yield settle(pending)
            pending = (loss.detach(), len(x), lr_now, step + 1)
            done = epoch * steps + step + 1
            run.steps_done += 1
            per_step = (run.step_seconds + time.perf_counter() - t0) / run.steps_done
            per_epoch = per_step * steps + run.validation_seconds
            if run.budget is not None and run.budget.estimates == 0 and step + 1 == min(FIRST_STEPS, steps):
                yield from _plan_epochs(run, epoch, per_step * steps * (1 + VALIDATION_GUESS))
            eta = per_step * (steps - step - 1) + per_epoch * (run.epochs - epoch - 1)
            yield Progress(done, run.epochs * steps, stage="train", eta_s=eta, message=f"epoch {epoch + 1} of {run.epochs}")
        if pending is not None:
            yield settle(pending)
    finally:
        prefetch.close()
        run.step_seconds += time.perf_counter() - t0
    if stopped:
        return None
    acc, iou, _ = _scores(conf_t[: k * k].reshape(k, k).cpu().numpy())
    return {
        "metrics": {"train_loss": loss_sum / max(seen, 1), "train_acc": acc, "train_iou": iou, "lr": lr_now},
        "seen": seen,
        "wait_s": prefetch.wait_s,
    }


def _plan_epochs(run: Run, done: int, per_epoch: float) -> Iterator[Message]:
    """Fit the run's epochs to the time budget (:mod:`.budget`), and say so when that changes them."""
    before = run.epochs
    run.epochs = run.dist.share(run.budget.fit(done, before, per_epoch))  # rank 0's clock decides for all
    if run.budget.estimates <= 2 or run.epochs != before:
        left = max(run.budget.left(), 0) / 60
        yield Message(
            f"Time budget {run.cfg.minutes:g} min ({left:.1f} left): {run.epochs} epoch(s) in all, about {per_epoch:.0f} s each.",
            topic="budget",
        )
