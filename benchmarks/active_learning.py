"""Correct-and-retrain with simulated annotation: does the model's suggestion beat random choice, and
how many pixels does a correction cost against painting from scratch?

isbi    ISBI 2012 EM: images 0-23 are the pool, 24-29 are held out. Start from 2 annotated images
        (chosen at random per seed, the same for both strategies), then 5 rounds: choose k more
        (``random``, or ``suggest``: napari-seg-box's ranking by the model's uncertainty with its
        diversity term), "correct" them (the ground truth is saved as a correction of the current
        model version) and fine-tune (``finetune_config``: the short warm-started run).
nuclei  the DSB2018 nuclei image cut into 16 tiles of 128 px: the bottom-right quadrant's 4 tiles
        are held out, the other 12 are the pool.

Per round: held-out pixel IoU of the object class (ISBI: cell interior; nuclei: nucleus), object F1
at IoU 0.5 (connected components), and for the images chosen that round the pixels a user changes
to correct the current model's prediction against the pixels painted from scratch (every pixel not
of the image's most frequent class: that one is a fill). Mean and range over the seeds.

    python benchmarks/active_learning.py isbi --seeds 0 1 2 --epochs 10 --finetune-epochs 5 --json benchmarks/results/active_learning_isbi_cpu.json
    python benchmarks/active_learning.py nuclei --seeds 0 1 2 --k 1 --epochs 10 --finetune-epochs 5
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
sys.path.insert(0, str(ROOT / "src"))

NETWORK = dict(encoder="resnet18", encoder_depth=4, decoder_channels=(128, 64, 32, 16), augmentation="standard")


def pool_and_test(dataset: str):
    """(classes, pool [(name, image, labels)], test [(name, image, labels)])."""
    if dataset == "isbi":
        import imageio.v3 as iio

        items = []
        for i in range(30):
            image = iio.imread(DATA / "isbi2012" / "images" / f"{i}.png")
            mask = iio.imread(DATA / "isbi2012" / "labels" / f"{i}.png")
            items.append((f"isbi{i:02d}", image, np.where(mask > 0, 2, 1).astype(np.uint8)))
        return ["membrane", "interior"], items[:24], items[24:]
    import tifffile

    image = tifffile.imread(DATA / "dsb2018-nuclei" / "image.tif")
    mask = tifffile.imread(DATA / "dsb2018-nuclei" / "mask.tif")
    pool, test = [], []
    for y in range(0, 512, 128):
        for x in range(0, 512, 128):
            item = (f"t{y // 128}{x // 128}", image[y : y + 128, x : x + 128], (1 + (mask[y : y + 128, x : x + 128] > 0)).astype(np.uint8))
            (test if y >= 256 and x >= 256 else pool).append(item)
    return ["background", "nucleus"], pool, test


def held_out(project, version) -> dict:
    from napari_seg_box.core.postprocess import PostprocessConfig
    from napari_seg_box.workflows.evaluate import evaluate_project

    ev = evaluate_project(project, version, save=False, postprocess=PostprocessConfig(instances="components", min_size=20))
    name = project.class_names[1]
    pixel = ev.summary["pixel"]
    return {"iou": pixel["per_class"][name]["iou"], "mean_iou": pixel["mean_iou"], "f1": ev.summary["objects"][name]["f1@0.5"]}


def effort(project, version, chosen, truth) -> tuple[int, int]:
    """Pixels to correct the prediction of ``chosen`` vs pixels to paint them from scratch."""
    from napari_seg_box.core.infer import Predictor, predict

    predictor = Predictor.from_project(project, version)
    fix = paint = 0
    for name in chosen:
        labels = predictor.postprocess(predict(project.get_image(name), predictor)).semantic
        fix += int((labels != truth[name]).sum())
        paint += int(truth[name].size - np.bincount(truth[name].ravel()).max())
    return fix, paint


def run(dataset: str, seed: int, strategies, k: int, rounds: int, args) -> dict:
    from napari_seg_box.core import Project
    from napari_seg_box.core.correct import save_correction
    from napari_seg_box.core.suggest import suggest
    from napari_seg_box.core.train import TrainConfig, finetune_config, train

    classes, pool, test = pool_and_test(dataset)
    truth = {n: lb for n, _, lb in pool}
    rng = np.random.default_rng(seed)
    start = [pool[i][0] for i in rng.choice(len(pool), 2, replace=False)]
    out = {}
    with tempfile.TemporaryDirectory() as root:
        base = Project.create(f"{root}/base.zarr", classes=classes)
        for name, image, _ in pool:
            base.add_image(name, image, split="train")
        for name, image, labels in test:
            base.add_image(name, image, labels=labels, split="test")
        for name in start:
            base.set_labels(name, truth[name])
        cfg = TrainConfig(**NETWORK, epochs=args.epochs, patch_size=args.patch, batch_size=8, steps_per_epoch=args.steps, seed=seed)
        t = time.perf_counter()
        v0 = train(base, cfg)
        first = {**held_out(base, v0), "annotated": 2, "seconds": round(time.perf_counter() - t, 1)}
        print(f"[{dataset} seed {seed}] round 0: {first}", flush=True)
        for strategy in strategies:
            project = _copy(base, f"{root}/{strategy}.zarr")
            version, rows, annotated = v0, [first], list(start)
            pick_rng = np.random.default_rng(1000 + seed)
            for r in range(1, rounds + 1):
                left = [n for n in truth if n not in annotated]
                if strategy == "random":
                    chosen = [left[i] for i in pick_rng.choice(len(left), min(k, len(left)), replace=False)]
                else:
                    chosen = [s.image for s in suggest(project, version, top=k, images=left)]
                fix, paint = effort(project, version, chosen, truth)
                for name in chosen:
                    save_correction(project, name, truth[name], model_version=version)
                annotated += chosen
                t = time.perf_counter()
                version = train(
                    project, finetune_config(project, version, epochs=args.finetune_epochs, batch_size=8, steps_per_epoch=args.steps)
                )
                row = {
                    **held_out(project, version), "annotated": len(annotated), "chosen": chosen, "fix_pixels": fix, "paint_pixels": paint,
                    "fix_share": round(fix / max(paint, 1), 3), "seconds": round(time.perf_counter() - t, 1),
                }  # fmt: skip
                rows.append(row)
                print(f"[{dataset} seed {seed} {strategy}] round {r}: {row}", flush=True)
            out[strategy] = rows
    return out


def _copy(project, url: str):
    """A copy of a project store (both strategies start from the same round-0 model)."""
    import shutil

    shutil.copytree(str(project.url), url)
    from napari_seg_box.core import Project

    return Project.open(url)


def summary(results: dict, strategies) -> str:
    seeds = sorted(results)
    rounds = len(results[seeds[0]][strategies[0]])
    lines = [
        "| round | annotated | " + " | ".join(f"{s} IoU | {s} F1@0.5 | {s} fix/paint" for s in strategies) + " |",
        "|---|---|" + "---|---|---|" * len(strategies),
    ]

    def cell(values, fmt="{:.3f}"):
        v = np.array(values, float)
        return f"{fmt.format(v.mean())} ({fmt.format(v.min())}-{fmt.format(v.max())})" if len(v) > 1 else fmt.format(v.mean())

    for r in range(rounds):
        row = [str(r), str(results[seeds[0]][strategies[0]][r]["annotated"])]
        for s in strategies:
            rs = [results[seed][s][r] for seed in seeds]
            row += [cell([x["iou"] for x in rs]), cell([x["f1"] for x in rs])]
            row.append(cell([x["fix_share"] for x in rs], "{:.2f}") if r else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["isbi", "nuclei"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=["random", "suggest"], choices=["random", "suggest"])
    p.add_argument("--k", type=int, default=2, help="images (tiles) added per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=12, help="epochs of the first model (from scratch)")
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=15, help="steps per epoch")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--json", help="write the per-round figures here")
    args = p.parse_args()
    import torch

    t0 = time.perf_counter()
    results = {seed: run(args.dataset, seed, args.strategies, args.k, args.rounds, args) for seed in args.seeds}
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    text = summary(results, args.strategies)
    print(f"\n{args.dataset}: seeds {args.seeds}, k={args.k}, {args.rounds} rounds, {machine}, {time.perf_counter() - t0:.0f} s")
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": machine, "results": results}, indent=1))


if __name__ == "__main__":
    main()
