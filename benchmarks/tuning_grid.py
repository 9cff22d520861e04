"""Post-processing tuned with seed distances and minimum sizes fixed in pixels (before) or relative to the objects (now).

    python benchmarks/tuning_grid.py nuclei [--seeds 0 1 2]                # the demo: q0, q1 train, q2 validation, q3 test
    python benchmarks/tuning_grid.py isbi   [--seeds 0 1 2] [--epochs 20]  # ISBI 2012: 0-19 / 20-23 / 24-29

Each seed trains once and tunes twice on the same validation images (``fixed``: the grid before
issue 21, seed distances 3-12 px and minimum sizes 0-60 px; ``relative``: the default now, 20-70 %
of the median object's diameter and 0-30 % of its area), then scores the held-out images with
each. The classical baseline (smoothed Otsu + watershed) is scored in the same run. Prints one JSON
line per seed and setting, then mean and range.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
from accuracy import isbi_project, row


def nuclei(root: str, seed: int, epochs: int):
    from napari_seg_box.workflows.demo import build_demo_project, demo_config

    return (
        build_demo_project(f"{root}/p.zarr"),
        demo_config(epochs).replace(seed=seed, distance=False),
        "nucleus",
    )  # seed distances: no distance output


def isbi(root: str, seed: int, epochs: int):
    from napari_seg_box.core.train import TrainConfig

    return isbi_project(root), TrainConfig(epochs=epochs, encoder="resnet18", seed=seed), "interior"


def main(argv=None) -> int:
    from napari_seg_box.core.infer import Predictor
    from napari_seg_box.core.train import train
    from napari_seg_box.workflows.evaluate import evaluate_baseline, evaluate_project
    from napari_seg_box.workflows.tune import DEFAULT_GRID, tune_postprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["nuclei", "isbi"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    make = nuclei if args.which == "nuclei" else isbi
    keys = ("F1@0.5", "F1@0.75", "mean IoU")
    results: dict[str, list[dict]] = {"fixed": [], "relative": [], "baseline": []}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as root:
            project, cfg, object_class = make(root, seed, args.epochs)
            version = train(project, cfg)
            predictor = Predictor.from_project(project, version)
            for mode, grid in (("fixed", DEFAULT_GRID), ("relative", None)):
                best, _ = tune_postprocess(project, version, predictor=predictor, grid=grid)
                figures = row(mode, evaluate_project(project, version, predictor=predictor, save=False), object_class)
                figures.update(min_size=best.min_size, seed_distance=best.seed_distance, instances=best.instances, threshold=best.threshold)
                results[mode].append(figures)
                print(json.dumps({"seed": seed, **{k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}}), flush=True)
            if seed == args.seeds[0]:
                results["baseline"].append(row("baseline", evaluate_baseline(project), object_class))
    for mode, rows in results.items():
        print(
            f"{mode:9s}",
            ", ".join(
                f"{k} {np.mean([r[k] for r in rows]):.3f} ({min(r[k] for r in rows):.3f}-{max(r[k] for r in rows):.3f})" for k in keys
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
