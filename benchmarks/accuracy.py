"""Held-out accuracy on real data, beside a classical baseline measured in the same run.

isbi     ISBI 2012 EM (membrane / cell interior): train + validate on images 0-23 (validation split
         automatic), test on the held-out images 24-29. Pixel IoU per class and cell matching.
nuclei   DSB2018 nuclei quadrants (q0, q1 train, q2 validation, q3 test), several encoders side by
         side (AIMIC-style accurate vs light): IoU, object F1, training time, parameters, prediction speed.
edge     nuclei: Dice+CE against the U-Net edge-weighted loss, and watershed against plain connected
         components, for splitting touching nuclei (object F1 at IoU 0.5 and 0.75).

    python benchmarks/accuracy.py isbi --epochs 15 --encoder resnet18
    python benchmarks/accuracy.py nuclei --epochs 25 --encoders resnet18 resnet34 efficientnet-b0 mobilenet_v2
    python benchmarks/accuracy.py edge --epochs 25

Each prints a table (markdown) and writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEGBOX_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))


def isbi_project(root: str):
    import imageio.v3 as iio

    from napari_seg_box.core import Project

    project = Project.create(f"{root}/isbi.zarr", classes=["membrane", "interior"])
    for i in range(30):
        image = iio.imread(DATA / "isbi2012" / "images" / f"{i}.png")
        mask = iio.imread(DATA / "isbi2012" / "labels" / f"{i}.png")
        project.add_image(f"isbi{i:02d}", image, labels=np.where(mask > 0, 2, 1).astype(np.uint8), split="test" if i >= 24 else "train")
    return project


def nuclei_project(root: str, name: str = "nuclei"):
    import tifffile

    from napari_seg_box.core import Project

    image = tifffile.imread(DATA / "dsb2018-nuclei" / "image.tif")
    mask = tifffile.imread(DATA / "dsb2018-nuclei" / "mask.tif")
    project = Project.create(f"{root}/{name}.zarr", classes=["background", "nucleus"])
    for i, ((y, x), split) in enumerate(zip([(0, 0), (0, 256), (256, 0), (256, 256)], ["train", "train", "validation", "test"])):
        inst = mask[y : y + 256, x : x + 256]
        project.add_image(f"q{i}", image[y : y + 256, x : x + 256], labels=(1 + (inst > 0)).astype(np.uint8), instances=inst, split=split)
    return project


def row(method: str, ev, object_class: str) -> dict:
    pixel = ev.summary["pixel"]
    obj = ev.summary["objects"][object_class]
    out = {"method": method}
    for name, vals in pixel["per_class"].items():
        out[f"IoU {name}"] = vals["iou"]
    out["mean IoU"] = pixel["mean_iou"]
    out["accuracy"] = pixel["accuracy"]
    out["pixel error"] = 1 - pixel["accuracy"]
    out["F1@0.5"] = obj["f1@0.5"]
    out["F1@0.75"] = obj["f1@0.75"]
    out["count (pred/true)"] = f"{obj['n_pred']}/{obj['n_true']}"
    return out


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(lines)


def train_and_evaluate(project, cfg, object_class: str, *, tune: bool = True, postprocess=None):
    from napari_seg_box.core.evaluate import evaluate_project
    from napari_seg_box.core.postprocess import tune_postprocess
    from napari_seg_box.core.train import train

    t = time.perf_counter()
    version = train(project, cfg)
    seconds = time.perf_counter() - t
    if tune and project.image_names("validation"):
        tune_postprocess(project, version)
    ev = evaluate_project(project, version, postprocess=postprocess, save=False)
    return version, seconds, ev


def prediction_speed(project, version, repeats: int = 3) -> float:
    from napari_seg_box.core.infer import Predictor, predict

    predictor = Predictor.from_project(project, version)
    image = np.tile(project.get_image(project.image_names("test")[0]), (2, 2))  # 512 x 512
    predict(image, predictor)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        predict(image, predictor)
    return repeats / (time.perf_counter() - t)


def cmd_isbi(args) -> list[dict]:
    from napari_seg_box.core.baseline import evaluate_baseline
    from napari_seg_box.core.postprocess import PostprocessConfig
    from napari_seg_box.core.train import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        project = isbi_project(tmp)
        cfg = TrainConfig(epochs=args.epochs, encoder=args.encoder, patch_size=256, batch_size=args.batch, steps_per_epoch=args.steps, loss=args.loss)
        # EM cells are separated by membranes: objects are the connected interior regions (no watershed)
        cells = PostprocessConfig(instances="components", min_size=30, fill_holes=False)
        version, seconds, ev = train_and_evaluate(project, cfg, "interior", tune=False, postprocess=cells)
        meta = project.model_metadata(version)
        t = time.perf_counter()
        base = evaluate_baseline(project, min_size=30, min_distance=7)
        base_s = time.perf_counter() - t
        base_cc = evaluate_baseline(project, min_size=30, watershed=False)
        print(f"U-Net {args.encoder}: {meta['epochs_run']} epochs, {seconds:.0f} s on {meta['device']}; validation images {meta['training_data']['validation_images']}")
        rows = [
            {**row(f"U-Net {args.encoder} ({seconds / 60:.1f} min training)", ev, "interior")},
            {**row(f"classical Otsu + watershed ({base_s:.1f} s)", base, "interior")},
            {**row("classical Otsu + connected components", base_cc, "interior")},
        ]
    return rows


def cmd_nuclei(args) -> list[dict]:
    from napari_seg_box.core.baseline import evaluate_baseline
    from napari_seg_box.core.models import load_model
    from napari_seg_box.core.train import TrainConfig

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = nuclei_project(tmp)
        for encoder in args.encoders:
            cfg = TrainConfig(epochs=args.epochs, encoder=encoder, patch_size=128, batch_size=8, steps_per_epoch=args.steps, learning_rate=args.lr, patience=0)
            version, seconds, ev = train_and_evaluate(project, cfg, "nucleus")
            model, _ = load_model(project, version, device="cpu")
            params = sum(p.numel() for p in model.parameters()) / 1e6
            r = row(f"U-Net {encoder}", ev, "nucleus")
            r.update({"params (M)": params, "train s": seconds, "predict s/MP": 1 / (prediction_speed(project, version) * 512 * 512 / 1e6)})
            rows.append(r)
            print(markdown([r]), flush=True)
        rows.append(row("classical Otsu + watershed", evaluate_baseline(project), "nucleus"))
    return rows


def cmd_edge(args) -> list[dict]:
    from napari_seg_box.core.postprocess import PostprocessConfig
    from napari_seg_box.core.train import TrainConfig

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for loss in ("dice_ce", "edge_weighted"):
            project = nuclei_project(tmp, loss)
            cfg = TrainConfig(epochs=args.epochs, encoder=args.encoder, patch_size=128, batch_size=8, steps_per_epoch=args.steps, loss=loss, patience=0)
            version, seconds, ev = train_and_evaluate(project, cfg, "nucleus")
            tuned = PostprocessConfig.for_model(project.model_metadata(version))
            rows.append(row(f"{loss} + watershed (tuned)", ev, "nucleus"))
            from napari_seg_box.core.evaluate import evaluate_project

            plain = PostprocessConfig.from_dict({**tuned.to_dict(), "instances": "components"})
            rows.append(row(f"{loss} + connected components", evaluate_project(project, version, postprocess=plain, save=False), "nucleus"))
            print(markdown(rows[-2:]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="which", required=True)
    p = sub.add_parser("isbi")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--loss", default="dice_ce")
    p = sub.add_parser("nuclei")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--encoders", nargs="+", default=["resnet18", "resnet34", "efficientnet-b0", "mobilenet_v2"])
    p.add_argument("--lr", type=float, default=None, help="fixed learning rate (default: the range test)")
    p = sub.add_parser("edge")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--encoder", default="resnet18")
    for p in sub.choices.values():
        p.add_argument("--json", help="write the rows to this JSON file")
    args = ap.parse_args(argv)

    import torch

    from napari_seg_box.core.models import device_name, pick_device

    t = time.perf_counter()
    rows = {"isbi": cmd_isbi, "nuclei": cmd_nuclei, "edge": cmd_edge}[args.which](args)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {device_name(pick_device())}, torch {torch.__version__}"
    print(f"\n{args.which}: {machine}; {time.perf_counter() - t:.0f} s in all\n")
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
