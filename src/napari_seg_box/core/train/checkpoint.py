"""Resumable checkpoints of a run (safetensors + JSON, never pickle) in ``training/<run>/`` of the store."""

from __future__ import annotations


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
