"""The device side of a training run: precision, memory layout, one optimisation step, the schedule."""

from __future__ import annotations

import math
import time

import numpy as np

from ..losses import IGNORE
from ..metrics import metrics_from_confusion
from ..models import device_name, memory_format, pick_device
from .config import TrainConfig


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
    """Pixel accuracy, mean IoU and IoU per class (None where not applicable), by the rules of
    :mod:`..metrics` (the same figures evaluation reports)."""
    m = metrics_from_confusion(conf)
    per = [None if np.isnan(v) else float(v) for v in m["iou"]]
    scored = [v for v in per if v is not None]
    accuracy = m["accuracy"]
    return (0.0 if np.isnan(accuracy) else float(accuracy)), (float(np.mean(scored)) if scored else 0.0), per


class _Step:
    """The network's forward pass and its loss, as one callable: what ``torch.compile`` compiles."""

    def __init__(self, model, loss_fn):
        self.model, self.loss_fn = model, loss_fn

    def __call__(self, x, y, w):
        logits = self.model(x)
        return logits, self.loss_fn(logits, y, w)


class _Runtime:
    """Device, precision and memory layout of a run."""

    def __init__(self, cfg: TrainConfig, device: str | None = None):
        import torch

        self.device = pick_device(device or cfg.device)
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
        self.compile = getattr(cfg, "compile", "off")  # "off", or the torch.compile mode until compilation fails
        self._compiled: dict[tuple[int, int], object] = {}  # (id(module), id(loss)) -> the compiled step (same parameters)
        self.notes: list[tuple[str, str, str]] = []  # (text, level, topic) Messages for the loop to pass on: compilation time, a fallback

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

    def optimise(self, model, loss_fn, opt, x, y, w, *, grad_clip: float | None, update: bool = True):
        """One training step (forward, loss, backward, then with ``update`` clipping and the optimiser
        step) in this run's precision; returns (logits, loss)."""
        if self.compile != "off":
            key = (id(model), id(loss_fn))
            first, t0 = key not in self._compiled, time.perf_counter()
            try:
                logits, loss = self._forward_backward(self._compiled_step(key, model, loss_fn), opt, x, y, w)
                if first:  # this step compiled the forward pass with the loss, and their backward
                    self.notes.append(
                        (f"Network compiled (torch.compile, {self.compile}) in {time.perf_counter() - t0:.0f} s.", "info", "device")
                    )
            except Exception as err:
                if _too_big(err):  # out of memory: the loop halves the batch, compiled or not
                    raise
                line = (str(err).strip().splitlines() or [""])[0][:200]
                what = f"torch.compile ({self.compile}) failed: {type(err).__name__}: {line}. Training continues without it."
                self.notes.append((what, "warning", "device"))
                self.compile = "off"
        if self.compile == "off":  # plain PyTorch: as asked, or after a failed compilation (the step is redone)
            logits, loss = self._forward_backward(_Step(model, loss_fn), opt, x, y, w)
        if update:
            self.update(model, opt, grad_clip=grad_clip)
        return logits, loss

    def _forward_backward(self, step, opt, x, y, w):
        with self.autocast():
            logits, loss = step(x, y, w)
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        return logits, loss

    def _compiled_step(self, key, model, loss_fn):
        """The network with its loss, compiled with this run's mode: one graph (fewer kernel launches
        for small batches), built once per (module, loss); it shares the module's parameters."""
        import torch

        step = self._compiled.get(key)
        if step is None:
            mode = None if self.compile == "default" else self.compile
            step = self._compiled[key] = torch.compile(_Step(model, loss_fn), mode=mode, dynamic=False)
        return step

    def pop_notes(self) -> list[tuple[str, str, str]]:
        notes, self.notes = self.notes, []
        return notes

    def update(self, model, opt, *, grad_clip: float | None) -> None:
        """Clip the gradients (when asked) and take the optimiser step."""
        import torch

        if self.scaler is not None:
            self.scaler.unscale_(opt)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def describe(self) -> str:
        prec = {None: "float32"}.get(self.dtype, str(self.dtype).replace("torch.", ""))
        import torch

        return (
            f"{device_name(self.device)}, {prec}"
            + (", channels_last" if self.memory_format == torch.channels_last else "")
            + ("" if self.compile == "off" else f", torch.compile {self.compile}")
        )
