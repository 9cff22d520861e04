"""CLI subcommands ``evaluate`` (held-out scores, baseline, comparison of versions) and ``tune``."""

from __future__ import annotations

import argparse

from ._common import add_store_options, drive, open_project, print_json
from .predict import _add_predict_options, _predict_config


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model on held-out images",
        description="Classification projects: accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1, "
        "the confusion matrix, the most confident mistakes and the inference time per image. Segmentation projects: "
        "predict the store's test images and compute pixel metrics (IoU, Dice, precision, recall, accuracy, "
        "confusion) and object metrics (Hungarian matching at IoU 0.5/0.75/0.9 and 0.5:0.95: F1, DSB accuracy, PQ, "
        "count error). Results are saved in the store under results/evaluations/.",
    )
    add_store_options(p)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="images to evaluate on (default: %(default)s)")
    p.add_argument("--csv", help="also write the tables as CSV (and, for classifiers, the plots) into this folder")
    p.add_argument("--compare", action="store_true", help="print a table comparing all model versions (evaluates those not yet evaluated)")
    p.add_argument(
        "--baseline", action="store_true",
        help="also score a classical baseline on the same images (smoothed Otsu + watershed for two-class segmentation; a random forest "
        "on intensity, texture and shape features for classification): is the network worth it?",
    )  # fmt: skip
    _add_predict_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "tune",
        help="(re-)tune post-processing on validation images",
        description="Grid search of threshold, minimum size and watershed seed distance maximising object F1 at IoU 0.5 "
        "on the part of the data the model version's training kept aside for validation (or on --names); the best "
        "settings are saved with the model version and used by default. train already does this once.",
    )
    add_store_options(p)
    p.add_argument("--names", nargs="+", help="annotated images to tune on (default: the version's validation part)")
    p.add_argument("--thresholds", type=float, nargs="+", help="thresholds to try (default: 0.3 0.4 0.5 0.6 0.7)")
    p.add_argument(
        "--min-sizes", type=int, nargs="+", help="minimum object sizes in pixels (default: 0, 5, 15, 30 %% of the median object's area)"
    )
    p.add_argument(
        "--seed-distances", type=int, nargs="+", help="watershed seed distances (default: 20-70 %% of the median object's diameter)"
    )
    p.add_argument(
        "--seed-levels",
        type=float,
        nargs="+",
        help="models with a distance output: predicted distances (0 border, 1 centre) that seed objects (default: 0.3 0.45 0.6 0.75)",
    )
    p.add_argument("--instances", nargs="+", choices=("watershed", "components"), help="object splitting to try (default: both)")
    p.add_argument("--no-save", action="store_true", help="do not save the settings into the model version")
    _add_predict_options(p)
    p.set_defaults(func=cmd_tune)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..core.evaluate import _finite
    from ..core.infer import Predictor
    from ..workflows.evaluate import compare_models, evaluate_baseline, iter_evaluate_project

    project = open_project(args)
    if project.task == "classification":
        from .classify import evaluate_classification

        return evaluate_classification(args, project)
    predictor = Predictor.from_project(project, args.version, device=_predict_config(args).device)
    ev = drive(
        iter_evaluate_project(project, predictor=predictor, split=args.split, predict_config=_predict_config(args)),
        quiet=args.json,
        desc="tiles",
    )
    if args.csv:
        ev.to_csv(args.csv)
    base = evaluate_baseline(project, split=args.split) if args.baseline else None
    table = compare_models(project, split=args.split, predict_config=_predict_config(args)) if args.compare else None
    if args.json:
        out = {"evaluation": _finite(ev.summary)}
        if base is not None:
            out["baseline"] = _finite(base.summary)
        if table is not None:
            out["comparison"] = _finite(table.to_dict("records"))
        print_json(out)
        return 0
    print(f"Evaluation {ev.id} of model version {ev.summary['model_version']} on {ev.summary['n_images']} {args.split} image(s)")
    _print_scores(ev.summary)
    print(f"  saved in the store under results/evaluations/{ev.id}/")
    if base is not None:
        print("Classical baseline (smoothed Otsu + watershed) on the same images")
        _print_scores(base.summary)
    if table is not None:
        print(table.to_string(index=False))
    return 0


def _print_scores(summary: dict) -> None:
    px = summary["pixel"]
    print(f"  pixel: mean IoU {px['mean_iou']:.3f}  mean Dice {px['mean_dice']:.3f}  accuracy {px['accuracy']:.3f}")
    print("  IoU per class: " + "  ".join(f"{name} {v['iou']:.3f}" for name, v in px["per_class"].items()))
    for cname, o in summary["objects"].items():
        print(
            f"  objects [{cname}]: F1@0.5 {o['f1@0.5']:.3f}  F1@0.75 {o['f1@0.75']:.3f}  F1@0.9 {o['f1@0.9']:.3f}  "
            f"DSB accuracy@0.5:0.95 {o['accuracy@avg']:.3f}  PQ@0.5 {o['panoptic_quality@0.5']:.3f}  "
            f"count {o['n_pred']} vs {o['n_true']} true"
        )
    for volume, per_class in summary.get("objects_3d", {}).items():
        for cname, o in per_class.items():
            print(
                f"  3D objects of volume {volume} [{cname}]: F1@0.5 {o['f1@0.5']:.3f}  F1@0.75 {o['f1@0.75']:.3f}  "
                f"count {o['n_pred']} vs {o['n_true']} true"
            )


def cmd_tune(args: argparse.Namespace) -> int:
    from ..core.infer import Predictor
    from ..workflows.tune import iter_tune_postprocess

    project = open_project(args)
    grid = {}
    if args.thresholds:
        grid["threshold"] = args.thresholds
    if args.min_sizes:
        grid["min_size"] = args.min_sizes
    if args.seed_distances:
        grid["seed_distance"] = args.seed_distances
    if args.seed_levels:
        grid["seed_level"] = args.seed_levels
    if args.instances:
        grid["instances"] = args.instances
    predictor = Predictor.from_project(project, args.version, device=_predict_config(args).device)
    tuning = iter_tune_postprocess(
        project, predictor=predictor, names=args.names, grid=grid, predict_config=_predict_config(args), save=not args.no_save
    )
    best, table = drive(tuning, quiet=args.json, desc="tune")
    top = table.sort_values("score", ascending=False).head(5)
    if args.json:
        print_json(
            {"best": best.to_dict(), "score": float(top["score"].iloc[0]), "metric": top["metric"].iloc[0], "combinations": len(table)}
        )
        return 0
    words = best.objects_in_words(**predictor.info.output_facts)
    print(
        f"Best post-processing ({top['metric'].iloc[0]} {top['score'].iloc[0]:.3f}): threshold {best.threshold}, min size {best.min_size}, {words}"
    )
    print(top.to_string(index=False))
    return 0
