"""Past one machine: distributed training, batch prediction on dask, one huge image block-wise.

ddp     ISBI 2012 (train 0-19, validate 20-23, test 24-29 held out): the same training run as one
        process (all cores) and as ``torchrun --nproc-per-node N`` gloo processes (one core each)
        at the same effective batch, learning rate, steps and epochs, per seed; time per epoch and
        held-out IoU / cell F1. Correctness first: the held-out figures should agree within the
        spread over seeds. On a machine with several GPUs, ``--gpus`` runs NCCL on all of them.
batch   N images predicted by the single-process predictor and by a dask LocalCluster of 1 and 2
        workers (:mod:`scale_out_batch`); labels identical, images/s and ratios.
blocks  one large zarr image predicted by one process and by 2 dask workers block-wise
        (:mod:`scale_out_blocks`); labels identical, MP/s, peak memory per worker.

    python benchmarks/scale_out.py ddp --epochs 10 --seeds 0 1
    python benchmarks/scale_out.py batch --images 200
    python benchmarks/scale_out.py blocks --size 16384
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy import isbi_project, markdown, row  # noqa: E402


def _train(store: str, args, seed: int, processes: int) -> tuple[dict, float]:
    """Train through the command line as a user would; returns (JSON summary, wall seconds)."""
    cores = os.cpu_count() or 1
    settings = [
        "train", store, "--epochs", str(args.epochs), "--encoder", args.encoder, "--batch-size", str(args.batch), "--lr", str(args.lr),
        "--patch-size", str(args.patch), "--seed", str(seed), "--no-tune", "--json",
    ]  # fmt: skip
    if processes == 1:
        cmd = [sys.executable, "-m", "napari_seg_box", *settings]
        threads = cores
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "-m", "napari_seg_box", *settings]
        threads = max(1, cores // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"training failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout), time.perf_counter() - t


def cmd_ddp(args) -> list[dict]:
    from napari_seg_box.workflows.evaluate import evaluate_project
    from napari_seg_box.workflows.tune import tune_postprocess

    rows = []
    for seed in args.seeds:
        for processes in args.processes:
            with tempfile.TemporaryDirectory() as tmp:
                project = isbi_project(tmp)
                summary, wall = _train(str(project.url), args, seed, processes)
                tune_postprocess(project, summary["version"])
                ev = evaluate_project(project, summary["version"], save=False)
                epochs = summary["history"]
                per_epoch = sum(h["seconds"] for h in epochs) / len(epochs)
                rows.append(
                    {
                        **row(f"{processes} process(es), seed {seed}", ev, "interior"),
                        "s/epoch": per_epoch,
                        "wall s": wall,
                        "val IoU": summary["best_metrics"]["val_iou"],
                        "best epoch": summary["best_metrics"]["epoch"],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    base = {r["method"].split(", seed ")[1]: r["s/epoch"] for r in rows if r["method"].startswith("1 process")}
    for r in rows:
        r["speed-up"] = base.get(r["method"].split(", seed ")[1], float("nan")) / r["s/epoch"]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("ddp")
    d.add_argument("--epochs", type=int, default=10)
    d.add_argument("--encoder", default="resnet18")
    d.add_argument("--batch", type=int, default=8, help="effective batch (split over the processes)")
    d.add_argument("--lr", type=float, default=2e-3)
    d.add_argument("--patch", type=int, default=256)
    d.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    d.add_argument("--json")
    sub.add_parser("batch", add_help=False)
    sub.add_parser("blocks", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.cmd == "batch":
        import scale_out_batch

        return scale_out_batch.main(rest)
    if args.cmd == "blocks":
        import scale_out_blocks

        return scale_out_blocks.main(rest)
    print(
        f"# {platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch threads per process as set above"
    )
    rows = cmd_ddp(args)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
