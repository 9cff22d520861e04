"""Image classification on mlcp-cellcycle: networks against a classical baseline, measured in one run.

Two tasks, each split per image with a fixed seed (70/15/15, stratified by class):
  dna        4 classes (G1, S, G2, mitosis = the four mitotic phases pooled), all three channels
  labelfree  the same classes from brightfield + darkfield only (no DNA stain)
Rows: the networks asked for (default ResNet18, MobileNet-V2, ResNeXt-50 32x4d), trained from scratch
by the project's own training (validation = the 15 % validation split, best epoch by macro-F1), and
a random forest on intensity, texture and shape features (:mod:`napari_seg_box.core.classify.baseline`).
Columns: accuracy, balanced accuracy, macro-F1 on the 15 % test split, training time, ms per image
on this machine (one at a time and batched), parameters; each network also with test-time
augmentation (the mean over the 8 flips and rotations of each image).

    .venv/bin/python benchmarks/classification.py --tasks dna labelfree --epochs 20
    .venv/bin/python benchmarks/classification.py --networks resnet18 --epochs 10 --limit 150   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import tifffile

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mlcp-cellcycle"
POOLED = {"G1": "G1", "S_phase": "S", "G2": "G2", "Prophase": "M", "Metaphase": "M", "Anaphase": "M", "Telophase": "M"}
CHANNELS = {"dna": (0, 1, 2), "labelfree": (0, 2)}


def build_project(root: str, task: str, limit: int | None, seed: int):
    from napari_seg_box.core import Project
    from napari_seg_box.core.classify import split_stratified

    project = Project.create(root, classes=["G1", "S", "G2", "M"], task="classification")
    items = []
    for folder, cls in POOLED.items():
        files = sorted((DATA / folder).glob("*.tif"))[:limit]
        for f in files:
            image = tifffile.imread(f)[..., list(CHANNELS[task])]
            items.append((f.stem, image, {"image_class": cls, "channel_axis": 2, "stack": False, "source": str(f)}))
    project.add_images(items)
    split_stratified(project, (0.7, 0.15, 0.15), seed=seed)
    return project


def run_task(task: str, args) -> list[dict]:
    from napari_seg_box.core.classify import ClassifyConfig, evaluate_classifier, train_classifier
    from napari_seg_box.core.classify.baseline import evaluate_baseline_classifier
    from napari_seg_box.core.events import EpochEnd

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = build_project(os.path.join(tmp, "p"), task, args.limit, args.seed)
        counts = project.class_counts()
        print(
            f"[{task}] images per class (train/val/test): "
            + ", ".join(f"{c} {v['train']}/{v['validation']}/{v['test']}" for c, v in counts.items()),
            flush=True,
        )
        t = time.perf_counter()
        base = evaluate_baseline_classifier(project, split="test", seed=args.seed)
        rows.append({"task": task, "model": "random forest (features)", **{k: base[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")},
                     "train_s": time.perf_counter() - t, "ms_batch1": None, "ms_batched": None, "parameters_M": None})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        for network in args.networks:
            t = time.perf_counter()
            epochs = args.epochs_for.get(network, args.epochs)
            cfg = ClassifyConfig(epochs=epochs, network=network, seed=args.seed, patience=0)
            version = train_classifier(
                project,
                cfg,
                on_event=lambda e, n=network: print(f"  [{task} {n}] {e.line()}", flush=True) if isinstance(e, EpochEnd) else None,
            )
            train_s = time.perf_counter() - t
            ev = evaluate_classifier(project, version, split="test")
            rows.append({"task": task, "model": f"{network} ({epochs} epochs)", **ev.metrics, "train_s": train_s,
                         "ms_batch1": ev.timing["ms_per_sample_batch1"], "ms_batched": ev.timing["ms_per_sample_batched"],
                         "parameters_M": ev.parameters / 1e6})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            ev = evaluate_classifier(project, version, split="test", tta=True)
            rows.append({"task": task, "model": f"{network} ({epochs} epochs) + TTA (8 views)", **ev.metrics, "train_s": train_s,
                         "ms_batch1": ev.timing["ms_per_sample_batch1"], "ms_batched": ev.timing["ms_per_sample_batched"],
                         "parameters_M": ev.parameters / 1e6})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["dna", "labelfree"], choices=list(CHANNELS))
    p.add_argument("--networks", nargs="+", default=["resnet18", "mobilenetv2_100", "resnext50_32x4d"])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--epochs-for", nargs="*", default=[], metavar="NETWORK=N", help="other epochs for some networks (slow ones)")
    p.add_argument("--limit", type=int, help="at most this many images per phase folder (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    args.epochs_for = {k: int(v) for k, v in (s.split("=") for s in args.epochs_for)}
    if not DATA.is_dir():
        print(f"mlcp-cellcycle not found at {DATA}", file=sys.stderr)
        return 2
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda {torch.cuda.is_available()}", flush=True)
    rows = [r for task in args.tasks for r in run_task(task, args)]
    print("\n| task | model | accuracy | balanced acc. | macro-F1 | training s | ms/image (1) | ms/image (batched) | parameters (M) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        print(f"| {r['task']} | {r['model']} | {fmt(r['accuracy'])} | {fmt(r['balanced_accuracy'])} | {fmt(r['macro_f1'])} | "
              f"{r['train_s']:.0f} | {fmt(r['ms_batch1'], 2)} | {fmt(r['ms_batched'], 2)} | {fmt(r['parameters_M'], 1)} |")  # fmt: skip
    for task in args.tasks:
        base = next(r["macro_f1"] for r in rows if r["task"] == task and r["model"].startswith("random forest"))
        for r in rows:
            if r["task"] == task and not r["model"].startswith("random forest"):
                verdict = "beats" if r["macro_f1"] > base else "does NOT beat"
                print(
                    f"[{task}] {r['model']}: macro-F1 {r['macro_f1']:.3f} {verdict} the baseline's {base:.3f} (ratio {r['macro_f1'] / base:.3f})"
                )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
