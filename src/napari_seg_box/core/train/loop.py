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

import math
import threading
import time
import uuid
from typing import Any, Iterator

import numpy as np

from ..data import DEFAULT_PERCENTILES
from ..errors import CancelledError, DataError, StoreError
from ..events import CheckpointSaved, EpochEnd, Message, Preview, Progress, StepLoss, check_cancel, run_to_end
from ..losses import IGNORE, make_loss
from ..models import MODEL_FORMAT_VERSION, ModelSpec, build_model
from .auto import auto_batch_size, auto_patch_size, lr_find
from .checkpoint import _cpu_state, _packages, _save_checkpoint, _state_bytes, _unpack, unfinished_runs
from .config import TrainConfig
from .prepare import _fold_boundary, _Item, _prepare_data
from .runtime import _accumulate_confusion, _Runtime, _scores, _too_big, lr_at
from .sampling import _InlineBatches, _Prefetcher, _Sampler


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

    from ..data import pad_to_multiple

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


def train(project, config: TrainConfig | None = None, *, on_event=None, cancel: threading.Event | None = None, resume: bool | str = False) -> str:
    """Train and return the new model version id (blocking; ``on_event(event)`` sees each event)."""
    return run_to_end(iter_train(project, config, cancel=cancel, resume=resume), on_event)
