"""Volumes: 2D vs 2.5D input on a real EM stack, 3D objects; prediction of a large zarr volume.

accuracy  The ISBI 2012 stack (30 consecutive serial sections, 4x4x50 nm voxels) as three volumes
          of one project: sections 0-19 train, 20-23 validate (model selection, post-processing
          tuning), 24-29 test. The same U-Net is trained with the same settings and budget on plain
          2D slices (context 0) and with 2.5D input (context automatic: 1 neighbouring section on
          each side at this anisotropy). Held out, as `evaluate` scores a volume: voxel IoU / Dice
          of the cell interior, per-section cell F1 (2D objects) and 3D cell F1 (the predicted cells
          joined across sections by `postprocess_volume`: stitched at this anisotropy; the true 3D
          cells are the true sections' cells joined the same way, as 3D connected regions of the
          interior leak through thin membrane gaps). ``--seeds`` repeats each setup and prints the
          mean and range.
speed     Prediction of a large zarr volume made by tiling the real stack (``--tile 4``: 30 x 2048 x
          2048) block by block (`predict_large`, bounded memory) beside in-memory prediction of the
          same volume (`predict`), each in a child process: seconds, voxels/s, peak RSS, ratio,
          and whether the labels agree.

    python benchmarks/volumes.py accuracy --epochs 20 --seeds 0 1 2 --json benchmarks/results/volumes_isbi_cpu.json
    python benchmarks/volumes.py speed --tile 4
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEGBOX_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))
from benchmarks.accuracy import markdown, over_seeds  # noqa: E402  (the same tables as the other benchmarks)

VOXEL = (0.05, 0.004, 0.004)  # µm: 50 nm sections, 4 nm pixels
PARTS = {"train": range(20), "validation": range(20, 24), "test": range(24, 30)}


def isbi_stack() -> tuple[np.ndarray, np.ndarray]:
    """(30, 512, 512) images and project labels (1 = membrane, 2 = cell interior)."""
    import imageio.v3 as iio

    images = np.stack([iio.imread(DATA / "isbi2012" / "images" / f"{i}.png") for i in range(30)])
    masks = np.stack([iio.imread(DATA / "isbi2012" / "labels" / f"{i}.png") for i in range(30)])
    return images, np.where(masks > 0, 2, 1).astype(np.uint8)


def volume_project(root: str):
    from napari_seg_box.core import Project

    images, labels = isbi_stack()
    project = Project.create(f"{root}/isbi-volume.zarr", classes=["membrane", "interior"])
    for split, sections in PARTS.items():
        sl = slice(sections.start, sections.stop)
        project.add_image(f"isbi_{split}", images[sl], labels=labels[sl], split=split, stack=True, pixel_size=VOXEL)
    return project


def cmd_accuracy(args) -> list[dict]:
    from napari_seg_box.core.train import TrainConfig, train
    from napari_seg_box.workflows.evaluate import evaluate_project
    from napari_seg_box.workflows.tune import tune_postprocess

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = volume_project(tmp)
        for seed in args.seeds:
            for setup, context in (("2D", 0), ("2.5D", None)):
                cfg = TrainConfig(epochs=args.epochs, encoder=args.encoder, steps_per_epoch=args.steps, seed=seed, context=context)
                t = time.perf_counter()
                version = train(project, cfg)
                seconds = time.perf_counter() - t
                t1 = time.perf_counter()
                tune_postprocess(project, version)
                info = project.model_version(version)
                t2 = time.perf_counter()
                ev = evaluate_project(project, version, save=False)
                t3 = time.perf_counter()
                pixel, obj = ev.summary["pixel"]["per_class"]["interior"], ev.summary["objects"]["interior"]
                cells = ev.summary["objects_3d"]["isbi_test"]["interior"]  # `evaluate` scores a dense volume in 3D too
                row = {
                    "method": f"{setup} (context {info.context})",
                    "seed": seed,
                    "IoU interior": pixel["iou"],
                    "Dice interior": pixel["dice"],
                    "2D F1@0.5": obj["f1@0.5"],
                    "3D F1@0.5": cells["f1@0.5"],
                    "3D F1@0.75": cells["f1@0.75"],
                    "3D cells (pred/true)": f"{cells['n_pred']}/{cells['n_true']}",
                    "training min": seconds / 60,
                }
                print(f"tune {t2 - t1:.0f} s, evaluate (2D and 3D) {t3 - t2:.0f} s", flush=True)
                print(
                    json.dumps(row, default=str),
                    f"settings {info.training.chosen}, post-processing {info.postprocess.to_dict()}",
                    flush=True,
                )
                rows.append(row)
    return rows


def per_method(rows: list[dict]) -> list[dict]:
    """One row per method: 'mean (min-max)' of each number over the seeds."""
    return [over_seeds([r for r in rows if r["method"] == m]) for m in dict.fromkeys(r["method"] for r in rows)]


# ---------------------------------------------------------------------- speed and memory
def _child(args) -> None:
    """In a child process: predict the zarr volume (block by block, or in memory); print a JSON line."""
    import resource

    import torch
    import zarr

    from napari_seg_box.core.infer import Predictor, predict
    from napari_seg_box.core.infer_large import predict_large
    from napari_seg_box.core.models import ModelSpec, build_model
    from napari_seg_box.core.versions import ModelVersion
    from tests.core._models import TINY

    torch.manual_seed(0)
    info = ModelVersion(ModelSpec(in_channels=2 * args.context + 1, classes=2, **TINY), ("membrane", "interior"), context=args.context)
    predictor = Predictor(build_model(info.spec).eval(), info, torch.device("cpu"))
    t = time.perf_counter()
    if args.mode == "blocks":
        predict_large(args.zarr, args.out, predictor, tile_size=512, write_probabilities=False)
    else:
        volume = zarr.open_array(args.zarr, mode="r")[...]
        probs = predict(volume, predictor, stack=True, tile_size=512)
        labels = np.stack([predictor.labels(p) for p in probs])
        zarr.save_array(args.out, labels)
    seconds = time.perf_counter() - t
    print(json.dumps({"mode": args.mode, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def cmd_speed(args) -> list[dict]:
    import zarr

    images, _ = isbi_stack()
    volume = np.tile(images, (1, args.tile, args.tile))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/volume.zarr"
        z = zarr.create_array(src, shape=volume.shape, dtype=volume.dtype, chunks=(1, 512, 512))
        z[...] = volume
        del volume
        results = {}
        for mode in ("memory", "blocks"):
            out = f"{tmp}/{mode}.zarr"
            cmd = [sys.executable, __file__, "_child", "--mode", mode, "--zarr", src, "--out", out, "--context", str(args.context)]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[mode] = json.loads(line)
        blocks = zarr.open_group(f"{tmp}/blocks.zarr", mode="r")["labels"][...]
        memory = zarr.open_array(f"{tmp}/memory.zarr", mode="r")[...]
        voxels = int(np.prod(z.shape))
        for mode, r in results.items():
            rows.append(
                {
                    "method": {"memory": "in memory (predict)", "blocks": "block by block (predict_large)"}[mode],
                    "volume": "x".join(map(str, z.shape)),
                    "seconds": r["seconds"],
                    "Mvoxel/s": voxels / r["seconds"] / 1e6,
                    "peak RSS MB": r["peak_rss_mb"],
                    "speed ratio": results["memory"]["seconds"] / r["seconds"],
                    "labels equal": f"{(blocks == memory).mean():.6f}",
                }
            )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="which", required=True)
    p = sub.add_parser("accuracy")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default: automatic)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p = sub.add_parser("speed")
    p.add_argument("--tile", type=int, default=4, help="tile the 512 x 512 sections this many times along y and x")
    p.add_argument("--context", type=int, default=1, help="the model's 2.5D context (0 = 2D)")
    for p in sub.choices.values():
        p.add_argument("--json", help="write the rows to this JSON file")
    p = sub.add_parser("_child")
    for opt in ("--mode", "--zarr", "--out"):
        p.add_argument(opt)
    p.add_argument("--context", type=int, default=1)
    args = ap.parse_args(argv)
    if args.which == "_child":
        _child(args)
        return 0

    import torch

    from napari_seg_box.core.models import device_name, pick_device

    t = time.perf_counter()
    rows = {"accuracy": cmd_accuracy, "speed": cmd_speed}[args.which](args)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {device_name(pick_device())}, torch {torch.__version__}"
    )
    print(f"\n{args.which}: {machine}; {time.perf_counter() - t:.0f} s in all\n")
    print(markdown(rows))
    if args.which == "accuracy" and len(args.seeds) > 1:
        print("\nMean (min-max) over seeds:\n")
        print(markdown(per_method(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
