"""Automatic settings: patch size from the objects, batch size from free GPU memory, learning rate from a range test."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ..events import Progress, check_cancel, run_to_end
from .prepare import _Data
from .runtime import _Runtime
from .sampling import _Sampler


def auto_patch_size(data: _Data) -> int:
    """About six object diameters (multiple of 32, 128..512), no larger than the images need."""
    d = data.object_diameter or 32.0
    patch = int(np.clip(math.ceil(6 * d / 32) * 32, 128, 512))
    biggest = max(max(it.target.shape) for it in data.train)
    return int(min(patch, max(32, math.ceil(biggest / 32) * 32)))


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


LR_STAGE = "finding the learning rate"


def lr_find(model, sampler: _Sampler, rt: _Runtime, loss_fn, **kwargs) -> dict:
    """Blocking :func:`iter_lr_find`."""
    return run_to_end(iter_lr_find(model, sampler, rt, loss_fn, **kwargs))


def iter_lr_find(
    model, sampler: _Sampler, rt: _Runtime, loss_fn, *, batch_size: int, steps: int = 24, lo: float = 1e-5, hi: float = 1e-1, cancel=None
) -> Iterator[Progress]:
    """Learning-rate range test (Smith 2017): exponentially growing rate, loss recorded, model restored.

    Yields a :class:`Progress` per trial step (at most ``steps``). Returns ``{"lr": suggestion,
    "lrs": [...], "losses": [...]}``; the suggestion is a tenth of the rate with the lowest smoothed
    loss, kept within ``[lo * 10, hi / 10]``.
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
            yield Progress(i, steps, stage=LR_STAGE, message=f"trial step {i + 1} of {steps}")
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
