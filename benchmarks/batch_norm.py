"""Batch-norm statistics in short runs: recomputed while the run is young ("precise BN") or not.

    python benchmarks/batch_norm.py short [--seeds 0 1 2]   # 3 epochs of 4 steps at LR 0.01 (issue 20, point 7)
    python benchmarks/batch_norm.py demo  [--seeds 0 1 2]   # the demo (20 epochs of 8 steps), held-out q3

Each run trains twice with the same seed: ``recomputed`` (the default, PRECISE_BN_STEPS) and
``running`` (PRECISE_BN_STEPS = 0: the running averages only, as before), and prints one line per run
and the mean of each. ``--steps N`` sets PRECISE_BN_STEPS for ``recomputed`` (e.g. 1000: every epoch
of the demo).
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np


def short_run(seed: int) -> dict:
    from napari_seg_box.core import Project, TrainConfig
    from napari_seg_box.core.samples import load_nuclei
    from napari_seg_box.core.train import train

    image, truth = load_nuclei()
    with tempfile.TemporaryDirectory() as d:
        p = Project.create(f"{d}/p.zarr", classes=["background", "nucleus"])
        for (y, x), split in zip([(0, 0), (0, 256), (256, 0)], ["train", "train", "validation"]):
            labels = np.zeros((256, 256), np.uint8)
            labels[:160] = 1 + (truth[y : y + 160, x : x + 256] > 0)
            p.add_image(f"q{y // 256 * 2 + x // 256}", image[y : y + 256, x : x + 256], labels=labels, split=split)
        cfg = TrainConfig(epochs=3, encoder="resnet18", patch_size=128, batch_size=4, steps_per_epoch=4, learning_rate=1e-2, seed=seed)
        history = p.model_version(train(p, cfg)).training.history
        return {"max_val_loss": max(h["val_loss"] for h in history), "last_val_iou": history[-1]["val_iou"]}


def demo_run(seed: int) -> dict:
    from napari_seg_box import evaluate_project, train_model, tune_postprocess
    from napari_seg_box.workflows.demo import build_demo_project, demo_config

    with tempfile.TemporaryDirectory() as d:
        p = build_demo_project(f"{d}/p.zarr")
        version = train_model(p, demo_config(20).replace(seed=seed))
        tune_postprocess(p, version)
        ev = evaluate_project(p, version, save=False)
        objects = ev.summary["objects"]["nucleus"]
        return {"test_iou": ev.summary["pixel"]["per_class"]["nucleus"]["iou"], "test_f1": objects["f1@0.5"], "found": objects["n_pred"]}


def main(argv=None) -> int:
    from napari_seg_box.core.train import loop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["short", "demo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=loop.PRECISE_BN_STEPS)
    args = parser.parse_args(argv)
    run = short_run if args.which == "short" else demo_run
    results: dict[str, list[dict]] = {"recomputed": [], "running": []}
    for seed in args.seeds:
        for mode, steps in (("recomputed", args.steps), ("running", 0)):
            loop.PRECISE_BN_STEPS = steps
            figures = run(seed)
            results[mode].append(figures)
            print(
                json.dumps({"mode": mode, "precise_bn_steps": steps, "seed": seed, **{k: round(v, 4) for k, v in figures.items()}}),
                flush=True,
            )
    for mode, rows in results.items():
        keys = rows[0].keys()
        print(mode, "mean:", ", ".join(f"{k} {np.mean([r[k] for r in rows]):.4g}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
