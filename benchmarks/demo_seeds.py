"""The demo's headline over several training seeds, beside the classical baseline scored on the same image.

    python benchmarks/demo_seeds.py                                # the demo's defaults, seeds 0 1 2
    python benchmarks/demo_seeds.py --distance on off --seeds 0 1 2  # with and without the distance output

Each run is what ``napari-seg-box demo`` does up to its evaluation (the bundled nuclei: q0, q1 train,
q2 validation, q3 held out; train, then tune on the validation quadrant), so the figures are the
demo's headline: nucleus IoU, object precision / recall / F1 at IoU 0.5, F1 averaged over IoU
0.5:0.95, and the count. Prints one line per run, then for each setting the mean and range over the
seeds and whether the U-Net beat the baseline on every headline figure in every seed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

HEADLINE = ("nucleus_iou", "object_precision@0.5", "object_recall@0.5", "object_f1@0.5", "object_f1@0.5:0.95")


def main(argv=None) -> int:
    from napari_seg_box.workflows.demo import _headline_row, build_demo_project, demo_config
    from napari_seg_box.workflows.evaluate import evaluate_baseline, evaluate_project
    from napari_seg_box.workflows.train import train_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--distance", nargs="+", choices=("default", "auto", "on", "off"), default=["default"], help="distance output (default: the demo's)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo's (20 on a CPU)")
    args = parser.parse_args(argv)
    rows: dict[str, list[dict]] = {d: [] for d in args.distance}
    baseline = None
    for seed in args.seeds:
        for setting in args.distance:
            with tempfile.TemporaryDirectory() as root:
                project = build_demo_project(f"{root}/p.zarr")
                if baseline is None:
                    baseline = _headline_row("baseline", evaluate_baseline(project))
                cfg = demo_config(args.epochs).replace(seed=seed)
                if setting != "default":
                    cfg = cfg.replace(distance={"auto": None, "on": True, "off": False}[setting])
                t = time.perf_counter()
                version = train_model(project, cfg)
                info = project.model_version(version)
                row = _headline_row(setting, evaluate_project(project, version, save=False))
                row.update(seconds=time.perf_counter() - t, distance_output=info.distance, postprocess=info.postprocess.to_dict())
                rows[setting].append(row)
                figures = ", ".join(f"{k} {row[k]:.3f}" for k in HEADLINE)
                print(f"seed {seed} distance {setting}: {figures}, count {row['predicted_count']}/{row['true_count']}, "
                      f"{row['seconds']:.0f} s; distance output {info.distance}; objects: "
                      f"{info.postprocess.objects_in_words(**info.output_facts)}", flush=True)  # fmt: skip
    print("\nbaseline (classical Otsu + watershed): " + ", ".join(f"{k} {baseline[k]:.3f}" for k in HEADLINE))
    for setting, runs in rows.items():
        print(f"distance {setting}, {len(runs)} seeds:")
        for k in HEADLINE:
            v = np.array([r[k] for r in runs])
            print(f"  {k}: mean {v.mean():.3f} (range {v.min():.3f}-{v.max():.3f}); baseline {baseline[k]:.3f}")
        wins = [all(r[k] > baseline[k] for k in HEADLINE) for r in runs]
        print(f"  ahead of the baseline on every headline figure in {sum(wins)} of {len(runs)} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
