"""Distributed training (torchrun + DDP, gloo on this CPU): one model trained by two processes, an
out-of-memory error on one rank agreed on by both, a rank killed mid-run and the run resumed."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port

SETTINGS = dict(
    encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8), patch_size=128, batch_size=8, learning_rate=3e-3,
    steps_per_epoch=6, augmentation="light", seed=0,
)  # fmt: skip


def _rank(rank: int, store: str, port: int, out: str) -> None:
    """One process of a 2-process run, as torchrun would start it; rank 1 runs out of memory once,
    and rank 0 is asked to stop (Ctrl-C) in the middle of epoch 4."""
    import threading

    import torch
    from safetensors.torch import save_file

    from napari_seg_box.core import Project
    from napari_seg_box.core.events import EpochEnd, Message, StepLoss
    from napari_seg_box.core.train import TrainConfig, iter_train
    from napari_seg_box.core.train.distributed import Distributed
    from napari_seg_box.core.train.runtime import _Runtime

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    real_optimise, calls = _Runtime.optimise, {"n": 0}

    def optimise(self, *args, **kwargs):
        calls["n"] += 1
        if rank == 1 and calls["n"] == 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")  # what torch says: the loop must halve, on both ranks
        return real_optimise(self, *args, **kwargs)

    _Runtime.optimise = optimise
    real_check = Distributed.check_replicas

    def check_replicas(self, state, device):  # what each rank would save: compared by the test
        save_file({k: v.contiguous() for k, v in state.items()}, f"{out}/rank{rank}.safetensors")
        return real_check(self, state, device)

    Distributed.check_replicas = check_replicas
    events = {"messages": [], "val_iou": [], "batch": []}
    cancel = threading.Event()
    gen = iter_train(Project.open(store), TrainConfig(epochs=5, **SETTINGS), cancel=cancel)
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            events["version"] = stop.value
            break
        if isinstance(ev, Message):
            events["messages"].append(ev.text)
        elif isinstance(ev, EpochEnd):
            events["val_iou"].append(ev.metrics["val_iou"])
        elif isinstance(ev, StepLoss) and rank == 0 and (ev.epoch, ev.step) == (4, 2):
            cancel.set()  # on rank 0 only: both ranks must stop at the same step
    events["world_after"] = torch.distributed.is_initialized()
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump(events, fh)


def test_two_processes_train_one_model_and_agree_on_out_of_memory_and_stopping(nuclei_project, tmp_path):
    import torch.multiprocessing as mp
    from safetensors.torch import load, load_file

    from napari_seg_box.core.train import unfinished_runs
    from napari_seg_box.workflows.evaluate import evaluate_project

    mp.spawn(_rank, args=(str(nuclei_project.url), free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["version"] == ranks[1]["version"] == "v001"
    # the out-of-memory error on rank 1 halved the batch on both ranks, and training went on
    for events in ranks:
        assert any("batch size halved to 4" in m for m in events["messages"]), events["messages"]
        assert not events["world_after"]  # the run ended the process group it started
    assert any("effective batch of 8" in m for m in ranks[0]["messages"])
    # validation is sharded and reduced: both ranks saw the same figures, so they decide alike; the
    # stop asked of rank 0 in epoch 4 stopped both there (a rank going on alone would hang the other)
    assert ranks[0]["val_iou"] == ranks[1]["val_iou"] and len(ranks[0]["val_iou"]) == 3

    # one model: both replicas hold the same weights, and the version holds exactly those
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys() and all(np.array_equal(w0[k].numpy(), w1[k].numpy()) for k in w0)
    info = nuclei_project.model_version("v001")
    saved = load(nuclei_project.model_weights(info))
    assert all(np.array_equal(saved[k].numpy(), w0[k].numpy()) for k in saved)
    assert info.training.chosen["batch_size"] == 4 and info.training.chosen["processes"] == 2
    assert info.training.status == "stopped" and unfinished_runs(nuclei_project)  # resumable
    # and it learnt: held-out nuclei (q3, never seen)
    ev = evaluate_project(nuclei_project, "v001", save=False, predict_config={"tile_size": 128})
    assert ev.summary["pixel"]["mean_iou"] > 0.7


def _train_cmd(store: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "napari_seg_box", "train", store, "--epochs", "6",
        "--encoder", "resnet18", "--encoder-depth", "3", "--decoder-channels", "32", "16", "8", "--batch-size", "8", "--lr", "3e-3",
        "--steps-per-epoch", "6", "--patch-size", "128", "--augment", "light", "--no-tune", *extra,
    ]  # fmt: skip


def test_a_killed_rank_stops_the_run_clearly_and_resume_continues(nuclei_project):
    psutil = pytest.importorskip("psutil")  # a dependency of distributed, installed with the package
    store = str(nuclei_project.url)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_train_cmd(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    state = None
    while time.time() - t0 < 180 and proc.poll() is None:
        states = glob.glob(f"{store}/training/*/state.json")
        if states and json.loads(Path(states[0]).read_text())["epoch"] >= 1:
            state = states[0]
            break
        time.sleep(0.2)
    assert state is not None, proc.communicate()[1][-2000:]
    killed = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
    assert len(killed) == 1
    killed[0].send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    # rank 0 says why it stopped and what to do (whether it saw the lost connection or torchrun's SIGTERM first)
    assert "--resume to continue" in err and ("stops too" in err or "told to stop" in err), err[-3000:]
    assert nuclei_project.model_versions() == []  # nothing half-saved
    before = json.loads(Path(state).read_text())["history"]

    proc = subprocess.run(_train_cmd(store, "--resume", "--json"), capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["status"] == "completed" and summary["epochs_run"] == 6
    # it continued the killed run: the epochs done before the kill are those of its checkpoint, not redone
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4, 5, 6]
    assert summary["history"][: len(before)] == before
    assert not glob.glob(f"{store}/training/*/state.json")  # the finished run's checkpoint is gone


def test_only_a_lost_peer_is_reported_as_one():
    from torch.distributed import DistBackendError

    from napari_seg_box.core.train.distributed import peer_lost

    gone = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500")
    assert peer_lost(gone) and peer_lost(DistBackendError("NCCL communicator was aborted"))
    wrapped = ValueError("the step failed")
    wrapped.__cause__ = gone
    assert peer_lost(wrapped)
    # the project store timing out or dropping a connection is the store's error, not another rank's
    for err in (TimeoutError("Read timed out. (read timeout=60)"), OSError("Connection reset by peer"), RuntimeError("timed out")):
        assert not peer_lost(err)
