"""Training one model on several processes: ``torchrun`` + DistributedDataParallel.

Started by ``torchrun --nproc-per-node N -m napari_seg_box train STORE ...`` (which sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``), :func:`iter_train <.loop.iter_train>` runs on every process with
a :class:`Distributed` of that world: NCCL between GPUs (each process on the GPU of its local rank),
gloo between CPU processes. What each rank does:

- the settings (patch, batch, learning rate) are chosen on rank 0 and shared; the batch is the
  *effective* one, split over the ranks; every rank samples its own patches (its own seeds);
- DDP puts the same weights and batch-norm buffers on every rank at the start and each step; the
  gradients are averaged over the ranks after every rank has said its step went well: an
  out-of-memory error (or a Ctrl-C) on one rank is agreed on by all before any gradient is
  exchanged, so all halve the batch (or stop) together and none waits for a collective that will not
  come;
- validation is sharded over the ranks and reduced, so every rank takes the same early-stopping and
  best-epoch decisions; only rank 0 writes checkpoints and the model version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import DataError

# what gloo and NCCL say in the RuntimeError of a collective whose peer is gone
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "gloo", "Gloo", "NCCL")


class PeerOutOfMemory(RuntimeError):
    """Another rank ran out of memory in this step: every rank halves its batch."""

    def __init__(self):
        super().__init__("out of memory on another rank")


@dataclass
class Distributed:
    """This process's place in a distributed run (``world == 1``: an ordinary run)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    owns_group: bool = False  # this run started the process group (and ends it)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_preference: str) -> Distributed:
        """The world ``torchrun`` describes in the environment (or a process group already started)."""
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
            return cls(rank, world, int(os.environ.get("LOCAL_RANK", rank)), dist.get_backend())
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device_preference not in ("cpu", "mps") and torch.cuda.is_available()
        backend = "nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(local)
        from datetime import timedelta

        dist.init_process_group(backend, timeout=timedelta(minutes=int(os.environ.get("SEGBOX_DIST_TIMEOUT_MIN", "30"))))
        _stop_on_sigterm(rank)
        return cls(rank, world, local, backend, owns_group=True)

    def device(self, preference: str) -> str:
        """The device of this rank: its own GPU (``cuda:LOCAL_RANK``) when the run is on GPUs."""
        if self.active and self.backend == "nccl" and preference in ("auto", "cuda"):
            return f"cuda:{self.local_rank}"
        return preference

    def describe(self, batch: int) -> str:
        per = self.shard(batch)
        return (
            f"Distributed training: {self.world} processes ({self.backend}), {per} patch(es) per process and step, "
            f"an effective batch of {per * self.world}; the learning rate is that of the effective batch (gradients are averaged)."
        )

    def shard(self, batch: int) -> int:
        """Patches per rank and step for an effective batch of ``batch``."""
        return max(1, batch // self.world)

    # ------------------------------------------------------------------ collectives
    def share(self, value):
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, ok: bool, stop: bool, device) -> tuple[bool, bool]:
        """(every rank's step went well, some rank asks to stop): one small all-reduce."""
        if not self.active:
            return ok, stop
        import torch
        import torch.distributed as dist

        flags = torch.tensor([0 if ok else 1, 1 if stop else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return not bool(flags[0]), bool(flags[1])

    def average_gradients(self, model) -> None:
        """Average the gradients over the ranks, in one flat all-reduce per dtype."""
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        for dtype in {g.dtype for g in grads}:
            same = [g for g in grads if g.dtype == dtype]
            flat = _flatten_dense_tensors(same)
            dist.all_reduce(flat)
            flat /= self.world
            for g, new in zip(same, _unflatten_dense_tensors(flat, same)):
                g.copy_(new)

    def sum(self, *tensors) -> None:
        """Sum tensors over the ranks, in place."""
        if self.active:
            import torch.distributed as dist

            for t in tensors:
                dist.all_reduce(t)

    def sync_buffers(self, model) -> None:
        """Rank 0's batch-norm statistics on every rank (each rank's last forward pass moved its own)."""
        if self.active:
            import torch.distributed as dist

            for b in model.buffers():
                dist.broadcast(b, src=0)

    def check_replicas(self, state: dict, device) -> None:
        """Refuse to save weights (a state dict) that differ between the ranks (they never should)."""
        if not self.active:
            return
        import torch
        import torch.distributed as dist

        mine = torch.stack([v.double().sum() for v in state.values() if v.is_floating_point()]).sum().reshape(1).to(device)
        seen = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(seen, mine)
        if any(not torch.equal(s, seen[0]) for s in seen):
            raise DataError("The model's copies on the distributed ranks differ (a bug: please report it); nothing was saved.")

    def end(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _stop_on_sigterm(rank: int) -> None:
    """torchrun ends the other processes with SIGTERM when one fails: say why, instead of dying silently."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        raise DataError(
            f"Rank {rank} was told to stop (SIGTERM): another process of this distributed run failed, or the job was "
            "cancelled. The checkpoint of the last finished epoch is kept: run the same command with --resume to continue."
        )

    signal.signal(signal.SIGTERM, stop)


def launched_rank() -> int:
    """This process's rank when ``torchrun`` started several (0 otherwise): only rank 0 reports and tunes."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def peer_lost(err: BaseException) -> bool:
    """A collective failed because another rank of the run is gone: a ``torch.distributed`` error,
    or a backend's RuntimeError, here or in the chain of causes. An OSError or a timeout of the
    project store (S3, a network disk) is not one: it is reported as itself."""
    from torch.distributed import DistError

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DistError) or (type(err) is RuntimeError and any(s in str(err) for s in _PEER_LOST)):
            return True
        err = err.__cause__ or err.__context__
    return False


def wrap(model, dist: Distributed, device):
    """The network every rank trains: a DistributedDataParallel of ``model`` (``model`` itself when
    not distributed). DDP starts all ranks from rank 0's weights and buffers."""
    if not dist.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def step(run, x, y, w, cancel) -> tuple:
    """One optimisation step on every rank together, or none: returns (logits, loss, stop).

    Forward and backward run without DDP's gradient hooks (``no_sync``); then the ranks agree on the
    step (an out-of-memory error on any rank raises :class:`PeerOutOfMemory` on the others, and the
    loop halves the batch everywhere) and on stopping (a Ctrl-C on any rank stops all, before the
    update); then the gradients are averaged and every rank takes the same optimiser step.
    """
    import torch

    from .runtime import _too_big

    rt, net, dist = run.rt, run.net, run.dist
    failure = None
    with net.no_sync():
        try:
            logits, loss = rt.optimise(net, run.loss_fn, run.opt, x, y, w, grad_clip=None, update=False)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
            if not _too_big(err):
                raise
            failure, logits, loss = err, None, None
    ok, stop = dist.agree(failure is None, cancel is not None and cancel.is_set(), rt.device)
    if not ok:
        raise failure if failure is not None else PeerOutOfMemory()
    if stop:
        run.opt.zero_grad(set_to_none=True)
        return logits, loss, True
    dist.average_gradients(run.model)
    rt.update(run.model, run.opt, grad_clip=run.cfg.grad_clip)
    return logits, loss, False
