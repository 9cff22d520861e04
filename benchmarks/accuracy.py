"""Held-out accuracy on real data, beside a classical baseline measured in the same run.

isbi     ISBI 2012 EM (membrane / cell interior): train on images 0-19, validate (model selection,
         post-processing tuning) on 20-23, test on the held-out images 24-29, as benchmarks/isbi_cli.sh
         does through the command line. Pixel IoU and Dice per class and cell matching (cells = the
         interior regions the membranes separate).
nuclei   DSB2018 nuclei, quadrant cross-validation: in fold f quadrant f is held out for testing,
         quadrant f-1 validates (model selection, post-processing tuning) and the other two train;
         the four held-out quadrants pool to 137 nuclei (the image's 125, those cut by the quadrant
         borders counted in both halves; a single quadrant has only ~30, too few to tell methods apart). Several encoders side by side (AIMIC-style accurate vs light): IoU,
         object F1, count, training time, parameters, prediction speed; the classical baseline is
         scored on the same four quadrants.
edge     nuclei, same folds: splitting touching nuclei. Dice+CE with the tuned choice of watershed or
         connected components, the U-Net edge-weighted loss, the boundary class, and the distance
         output (objects grown from the predicted centres) with either loss; ``--seeds`` repeats it and
         prints the mean and range of each figure over the seeds.

    python benchmarks/accuracy.py isbi --epochs 20 --encoder resnet18
    python benchmarks/accuracy.py nuclei --epochs 25 --encoders resnet18 resnet34 efficientnet-b0 mobilenet_v2 --loss edge_weighted
    python benchmarks/accuracy.py nuclei --folds 3   # only the original split (q3 held out)
    python benchmarks/accuracy.py edge --epochs 25
    python benchmarks/accuracy.py edge --epochs 25 --setups edge_weighted edge_distance --seeds 0 1 2

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
        split = "test" if i >= 24 else "validation" if i >= 20 else "train"
        project.add_image(f"isbi{i:02d}", image, labels=np.where(mask > 0, 2, 1).astype(np.uint8), split=split)
    return project


def nuclei_project(root: str, name: str = "nuclei", test: int = 3):
    """The four quadrants; ``test`` is held out, the one before it validates, the others train."""
    import tifffile

    from napari_seg_box.core import Project

    image = tifffile.imread(DATA / "dsb2018-nuclei" / "image.tif")
    mask = tifffile.imread(DATA / "dsb2018-nuclei" / "mask.tif")
    project = Project.create(f"{root}/{name}-fold{test}.zarr", classes=["background", "nucleus"])
    for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        split = "test" if i == test else "validation" if i == (test - 1) % 4 else "train"
        inst = mask[y : y + 256, x : x + 256]
        project.add_image(f"q{i}", image[y : y + 256, x : x + 256], labels=(1 + (inst > 0)).astype(np.uint8), instances=inst, split=split)
    return project


def pooled_row(method: str, evaluations) -> dict:
    """One row from the evaluations of several folds: pixel counts and object matches summed."""
    import pandas as pd

    conf = sum(ev.confusion.to_numpy() for ev in evaluations)
    tp = np.diag(conf).astype(float)
    iou = tp / (conf.sum(0) + conf.sum(1) - tp)
    per = pd.concat([ev.per_image for ev in evaluations])
    out = {"method": method, "IoU nucleus": iou[1], "Dice nucleus": 2 * tp[1] / (conf.sum(0)[1] + conf.sum(1)[1]), "mean IoU": iou.mean()}
    for thr in ("0.5", "0.75"):
        t, f_p, f_n = (per[f"{k}@{thr}"].sum() for k in ("tp", "fp", "fn"))
        out[f"F1@{thr}"] = 2 * t / (2 * t + f_p + f_n)
    out["count (pred/true)"] = f"{int(per['n_pred'].sum())}/{int(per['n_true'].sum())}"
    out["mean abs count error"] = float(per["count_error"].abs().mean())
    return out


def row(method: str, ev, object_class: str) -> dict:
    pixel = ev.summary["pixel"]
    obj = ev.summary["objects"][object_class]
    out = {"method": method}
    for name, vals in pixel["per_class"].items():
        out[f"IoU {name}"] = vals["iou"]
    for name, vals in pixel["per_class"].items():
        out[f"Dice {name}"] = vals["dice"]
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
    from napari_seg_box.core.train import train
    from napari_seg_box.workflows.evaluate import evaluate_project
    from napari_seg_box.workflows.tune import tune_postprocess

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
    from napari_seg_box.core.train import TrainConfig
    from napari_seg_box.workflows.evaluate import evaluate_baseline

    with tempfile.TemporaryDirectory() as tmp:
        project = isbi_project(tmp)
        # only the encoder and epochs are set: patch, batch, learning rate and steps are automatic
        cfg = TrainConfig(epochs=args.epochs, encoder=args.encoder, batch_size=args.batch, steps_per_epoch=args.steps, loss=args.loss)
        version, seconds, ev = train_and_evaluate(project, cfg, "interior")
        info = project.model_version(version)
        t = time.perf_counter()
        base = evaluate_baseline(project)
        base_s = time.perf_counter() - t
        base_cc = evaluate_baseline(project, watershed=False)
        tr = info.training
        print(
            f"U-Net {args.encoder}: {tr.epochs_run} epochs, {seconds:.0f} s on {tr.device}; settings {tr.chosen}; post-processing {info.postprocess.to_dict()}"
        )
        rows = [
            {**row(f"U-Net {args.encoder} ({seconds / 60:.1f} min training)", ev, "interior")},
            {**row(f"classical Otsu + watershed ({base_s:.1f} s)", base, "interior")},
            {**row("classical Otsu + connected components", base_cc, "interior")},
        ]
    return rows


def nuclei_config(args, encoder: str, **kw):
    from napari_seg_box.core.train import TrainConfig

    kw = {"distance": False, "seed": getattr(args, "seed", 0), **kw}  # the distance output only where a setup asks for it
    return TrainConfig(
        epochs=args.epochs, encoder=encoder, patch_size=128, batch_size=8, steps_per_epoch=args.steps,
        learning_rate=args.lr, patience=0, **kw,
    )  # fmt: skip


def cross_validate(tmp: str, name: str, cfg, folds, *, variants=None) -> dict:
    """Train ``cfg`` in every fold, tune on its validation quadrant, evaluate on its test quadrant.

    ``variants`` maps a row name to a post-processing override (None: the tuned settings).
    Returns {row name: [evaluation per fold]}, the training seconds of each fold and the last fold's model.
    """
    from napari_seg_box.workflows.evaluate import evaluate_project

    variants = variants or {name: None}
    out = {k: [] for k in variants}
    seconds = []
    for f in folds:
        project = nuclei_project(tmp, name.replace(" ", "_"), test=f)
        version, s, ev = train_and_evaluate(project, cfg, "nucleus")
        seconds.append(s)
        tuned = project.model_version(version).postprocess
        for row_name, override in variants.items():
            if override is None:
                out[row_name].append(ev)
            else:
                pp = tuned.replace(**override)
                out[row_name].append(evaluate_project(project, version, postprocess=pp, save=False))
        print(
            f"  {name} fold {f}: F1@0.5 {ev.summary['objects']['nucleus']['f1@0.5']:.3f} ({s:.0f} s); tuned {tuned.to_dict()}", flush=True
        )
    return {"evaluations": out, "train_s": seconds, "project": project, "version": version}


def baseline_row(tmp: str, folds) -> dict:
    from napari_seg_box.workflows.evaluate import evaluate_baseline

    evs = [evaluate_baseline(nuclei_project(tmp, "baseline", test=f)) for f in folds]
    return pooled_row("classical Otsu + watershed", evs)


def cmd_nuclei(args) -> list[dict]:
    from napari_seg_box.core.infer import load_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for encoder in args.encoders:
            res = cross_validate(tmp, encoder, nuclei_config(args, encoder, loss=args.loss, boundary=args.boundary), args.folds)
            model, _ = load_model(res["project"], res["version"], device="cpu")
            r = pooled_row(f"U-Net {encoder}, {args.loss}" + (" + boundary class" if args.boundary else ""), res["evaluations"][encoder])
            r.update({
                "params (M)": sum(p.numel() for p in model.parameters()) / 1e6,
                "train s / fold (median)": float(np.median(res["train_s"])),
                "predict s/MP": 1 / (prediction_speed(res["project"], res["version"]) * 512 * 512 / 1e6),
            })  # fmt: skip
            rows.append(r)
            print(markdown([r]), flush=True)
        rows.append(baseline_row(tmp, args.folds))
    return rows


def cmd_edge(args) -> list[dict]:
    if len(args.seeds) == 1:
        args.seed = args.seeds[0]
        return edge_rows(args)
    runs = []
    for seed in args.seeds:
        args.seed = seed
        runs.append(edge_rows(args))
        print(f"seed {seed}:\n{markdown(runs[-1])}", flush=True)
    return [over_seeds(rows) for rows in zip(*runs)]


def over_seeds(rows: list[dict]) -> dict:
    """One row from the same row of several seeds: 'mean (min-max)' of each number."""
    out = {"method": f"{rows[0]['method']} ({len(rows)} seeds)"}
    for key, value in rows[0].items():
        if isinstance(value, float):
            v = np.array([r[key] for r in rows])
            out[key] = f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})"
        elif key != "method":
            out[key] = ", ".join(str(r[key]) for r in rows)
    return out


def edge_rows(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        setups = {
            "dice_ce": (
                nuclei_config(args, args.encoder),
                {
                    "dice_ce, tuned (watershed or components)": None,
                    "dice_ce + watershed": {"instances": "watershed"},
                    "dice_ce + connected components": {"instances": "components"},
                },
            ),
            "edge_weighted": (nuclei_config(args, args.encoder, loss="edge_weighted"), {"edge-weighted loss, tuned": None}),
            "boundary": (
                nuclei_config(args, args.encoder, boundary=True),
                {
                    "dice_ce + boundary class, tuned": None,
                    "dice_ce + boundary class, boundary-seeded watershed": {"instances": "watershed"},
                },
            ),
            "distance": (nuclei_config(args, args.encoder, distance=True), {"dice_ce + distance output, tuned": None}),
            "edge_distance": (
                nuclei_config(args, args.encoder, loss="edge_weighted", distance=True),
                {"edge-weighted loss + distance output, tuned": None},
            ),
        }
        for name in args.setups:
            cfg, variants = setups[name]
            res = cross_validate(tmp, name, cfg, args.folds, variants=variants)
            for row_name, evs in res["evaluations"].items():
                rows.append(pooled_row(row_name, evs))
            print(markdown(rows[-len(variants) :]), flush=True)
        rows.append(baseline_row(tmp, args.folds))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="which", required=True)
    p = sub.add_parser("isbi")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--batch", type=int, default=None, help="default: automatic")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default: automatic)")
    p.add_argument("--loss", default="dice_ce")
    p = sub.add_parser("nuclei")
    p.add_argument("--encoders", nargs="+", default=["resnet18", "resnet34", "efficientnet-b0", "mobilenet_v2"])
    p.add_argument("--loss", default="edge_weighted", help="training loss (default: %(default)s, the best at splitting nuclei in `edge`)")
    p.add_argument("--boundary", action="store_true", help="train with the boundary class")
    p = sub.add_parser("edge")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument(
        "--setups",
        nargs="+",
        choices=("dice_ce", "edge_weighted", "boundary", "distance", "edge_distance"),
        default=["dice_ce", "edge_weighted", "boundary", "distance", "edge_distance"],
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (several: mean and range)")
    for p in (sub.choices["nuclei"], sub.choices["edge"]):
        p.add_argument("--epochs", type=int, default=25)
        p.add_argument("--steps", type=int, default=8)
        p.add_argument("--lr", type=float, default=None, help="fixed learning rate (default: the range test)")
        p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3], help="held-out quadrants (default: all four)")
    for p in sub.choices.values():
        p.add_argument("--json", help="write the rows to this JSON file")
    args = ap.parse_args(argv)

    import torch

    from napari_seg_box.core.models import device_name, pick_device

    t = time.perf_counter()
    rows = {"isbi": cmd_isbi, "nuclei": cmd_nuclei, "edge": cmd_edge}[args.which](args)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {device_name(pick_device())}, torch {torch.__version__}"
    )
    print(f"\n{args.which}: {machine}; {time.perf_counter() - t:.0f} s in all\n")
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
