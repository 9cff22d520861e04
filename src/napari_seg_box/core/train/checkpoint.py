"""Resumable checkpoints of a run (safetensors + JSON, never pickle) in ``training/<run>/`` of the store.

After every epoch: the current weights, the best weights so far and the optimiser state go into
``checkpoint.safetensors`` first, then ``state.json`` (atomic) says which epoch they belong to, with
the whole configuration, the automatic choices, the history, the time spent and the version the run
was fine-tuned from, so a resumed run ends as if it had never stopped. A kill leaves the previous pair.
"""

from __future__ import annotations


def cpu_state(model) -> dict:
    """A CPU copy of the weights, in contiguous layout (channels_last weights are not)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def state_bytes(state: dict) -> bytes:
    """Weights as safetensors bytes."""
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def save_checkpoint(run, epoch: int) -> None:
    """Checkpoint ``run`` (a :class:`~.loop.Run`) after ``epoch``: tensors first, then ``state.json``."""
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in run.opt.state_dict()["param_groups"]]
    run.project.write_bytes(f"training/{run.run_id}/checkpoint.safetensors", _pack(run.model, run.opt, run.best_state))
    run.project.write_json(
        f"training/{run.run_id}/state.json",
        {
            "run": run.run_id,
            "epoch": epoch,
            "config": run.cfg.to_dict(),
            "model": run.spec.to_dict(),
            "chosen": run.chosen,
            "history": run.history,
            "best": run.best,
            "param_groups": groups,
            "training_data": {"fingerprint": run.data.fingerprint},
            "finetuned_from": run.finetuned_from,
            "start": run.start,
            "duration_s": run.duration_s,
        },
    )


def restore_checkpoint(project, run_id: str, model, opt, state: dict) -> dict:
    """Load a run's checkpoint into ``model`` and ``opt``; returns the best weights so far."""
    return _unpack(project.read_bytes(f"training/{run_id}/checkpoint.safetensors"), model, opt, state["param_groups"])


def unfinished_runs(project) -> list[dict]:
    """Training runs that stopped or crashed before their last epoch and can be resumed."""
    runs = sorted(d for d in project.list_dir("training") if project.exists(f"training/{d}/state.json"))
    return [project.read_json(f"training/{d}/state.json") for d in runs]


def resumed(project, config, resume: bool | str, config_cls) -> tuple:
    """A run's configuration (a ``config_cls``) and, when resuming, its checkpointed state: the newest
    unfinished run (``resume=True``) or the one named; a larger ``config.epochs`` extends it."""
    from ..errors import StoreError

    if not resume:
        return config or config_cls(), None
    runs = [r for r in unfinished_runs(project) if resume is True or r["run"] == resume]
    if not runs:
        raise StoreError("There is no unfinished training run to resume in this project: start a new training instead.")
    state = runs[-1]
    saved = config_cls.from_dict(state["config"])
    if config is not None and config.epochs > saved.epochs:
        saved = saved.replace(epochs=config.epochs)
    return saved, state


def _pack(model, opt, best_state) -> bytes:
    import torch
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best_state.items()})
    for pid, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            tensors[f"opt.{pid}.{name}"] = v.detach().cpu().contiguous() if hasattr(v, "detach") else torch.tensor(v)
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
    # how the update runs (fused on a GPU, ...) is this machine's choice, not the checkpoint's
    here = {k: v for k, v in opt.param_groups[0].items() if k in ("fused", "foreach", "capturable")}
    opt.load_state_dict({"state": state, "param_groups": [{**g, **here} for g in param_groups]})
    return {k[5:]: v for k, v in t.items() if k.startswith("best.")}
