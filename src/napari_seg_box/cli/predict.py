"""CLI subcommands: predict, evaluate, tune, quantify (tqdm progress bars, ``--json`` summaries)."""

from __future__ import annotations

import argparse
import os

from ._common import add_store_options, drive, open_project, print_json


def _add_predict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", help="model version (default: newest; 'best' = best validation IoU)")
    p.add_argument("--tile-size", type=int, default=256, help="tile side in pixels, a multiple of 32 (default: %(default)s)")
    p.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction (default: %(default)s; 0.5 = quality)")
    p.add_argument("--batch-size", type=int, help="tiles per forward pass (default: 4 on the CPU, 16 on a GPU)")
    p.add_argument("--tta", default="none", choices=["none", "flips", "d4"], help="test-time augmentation (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON summary for scripts (no progress bars)")


def _predict_config(args):
    from ..core.infer import PredictConfig

    return PredictConfig(tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, tta=args.tta, device=args.device)


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images with a trained model",
        description="Tiled prediction with Gaussian blending of image files (folder, glob, list), a large zarr image "
        "(block by block into a zarr output), or the images of the store; writes <name>_labels.tif and "
        "<name>_instances.tif (post-processed with the model's tuned settings).",
    )
    add_store_options(p)
    p.add_argument("--images", nargs="+", help="image files, folders or globs (default: the store's images of --split)")
    p.add_argument("--split", choices=["train", "validation", "test"], help="with no --images: only this split of the store")
    p.add_argument("--out", required=True, help="output folder (or, with --large, output .zarr)")
    p.add_argument("--large", action="store_true", help="the single --images entry is a zarr/OME-Zarr larger than memory: predict block by block")
    p.add_argument("--probabilities", action="store_true", help="also write per-class probabilities")
    _add_predict_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "evaluate",
        help="score a model on held-out images",
        description="Predict the store's test images and compute pixel metrics (IoU, Dice, precision, recall, accuracy, "
        "confusion) and object metrics (Hungarian matching at IoU 0.5/0.75/0.9 and 0.5:0.95: F1, DSB accuracy, PQ, "
        "count error). Results are saved in the store under results/evaluations/.",
    )
    add_store_options(p)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="images to evaluate on (default: %(default)s)")
    p.add_argument("--csv", help="also write the tables as CSV into this folder")
    p.add_argument("--compare", action="store_true", help="print a table comparing all model versions (evaluates those not yet evaluated)")
    p.add_argument(
        "--baseline", action="store_true",
        help="also score a classical baseline (smoothed Otsu + watershed, two-class projects) on the same images: is the network worth it?",
    )  # fmt: skip
    _add_predict_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "tune",
        help="tune post-processing on validation images",
        description="Grid search of threshold, minimum size and watershed seed distance maximising object F1 at IoU 0.5 "
        "on the validation images; the best settings are saved with the model version and used by default.",
    )
    add_store_options(p)
    p.add_argument("--thresholds", type=float, nargs="+", help="thresholds to try (default: 0.3 0.4 0.5 0.6 0.7)")
    p.add_argument("--min-sizes", type=int, nargs="+", help="minimum object sizes in pixels (default: 0 10 30 60)")
    p.add_argument("--seed-distances", type=int, nargs="+", help="watershed seed distances (default: 3 5 8 12)")
    p.add_argument("--instances", nargs="+", choices=("watershed", "components"), help="object splitting to try (default: both)")
    p.add_argument("--no-save", action="store_true", help="do not save the settings into the model version")
    _add_predict_options(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "quantify",
        help="measure objects in label images",
        description="Per image and class: object count, coverage, mean size; per object: area, perimeter, diameter, "
        "shape and intensity, in physical units when the pixel size is known. Writes CSV + Parquet tables and PNG plots. "
        "Parallel with dask; --scheduler tcp://host:8786 uses an existing dask.distributed cluster.",
    )
    p.add_argument("labels", nargs="*", help="label images: files, folders, globs or a .zarr (or use --store)")
    p.add_argument("--store", help="quantify the annotated images of this project store instead")
    p.add_argument("--endpoint-url", help="S3-compatible server for s3:// stores")
    p.add_argument("--images", nargs="+", help="intensity images matched to the label images by name")
    p.add_argument("--kind", choices=["instances", "semantic"], help="label images hold object ids (default for files) or class labels")
    p.add_argument("--pixel-size", type=float, nargs="+", metavar="SIZE", help="pixel size (one value, or y x)")
    p.add_argument("--unit", default=None, help="unit of the pixel size (default: µm)")
    p.add_argument("--out", required=True, help="output folder for tables and plots")
    p.add_argument("--scheduler", default="threads", help="sync, threads, processes, or a dask scheduler address (default: %(default)s). Measuring holds "
                   "Python's lock, so several --workers need processes or a cluster to use several cores")
    p.add_argument("--workers", type=int, default=1, help="parallel images for local schedulers (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--json", action="store_true", help="print a JSON summary for scripts (no progress bars)")
    p.set_defaults(func=cmd_quantify)


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.infer import Predictor, iter_predict_large
    from ..workflows.predict import iter_predict_files, iter_predict_project
    from ..core.postprocess import PostprocessConfig, postprocess

    project = open_project(args)
    cfg = _predict_config(args)
    predictor = Predictor.from_project(project, args.version, device=args.device)
    if args.large:
        if not args.images or len(args.images) != 1:
            from ..core.errors import DataError

            raise DataError("--large takes exactly one zarr/OME-Zarr image in --images.")
        group = drive(iter_predict_large(args.images[0], args.out, predictor, config=cfg, write_probabilities=args.probabilities), quiet=args.json, desc="tiles")
        summary = {"model_version": predictor.version, "output": args.out, "shape": list(group["labels"].shape)}
    elif args.images:
        rows = drive(iter_predict_files(args.images, args.out, predictor, config=cfg, save_probabilities=args.probabilities), quiet=args.json, desc="tiles")
        summary = {"model_version": predictor.version, "output": args.out, "images": rows, "failed": sum(r["error"] is not None for r in rows)}
    else:
        import tifffile

        probs = drive(iter_predict_project(project, predictor=predictor, split=args.split, config=cfg), quiet=args.json, desc="tiles")
        pp = PostprocessConfig.for_model(predictor.meta)
        os.makedirs(args.out, exist_ok=True)
        rows = []
        for name, p in probs.items():
            r = postprocess(p, pp)
            tifffile.imwrite(os.path.join(args.out, f"{name}_labels.tif"), r.semantic, compression="zlib")
            tifffile.imwrite(os.path.join(args.out, f"{name}_instances.tif"), r.instances.astype(np.uint32), compression="zlib")
            if args.probabilities:
                tifffile.imwrite(os.path.join(args.out, f"{name}_probabilities.tif"), p, compression="zlib")
            rows.append({"name": name, "n_objects": r.n_objects})
        summary = {"model_version": predictor.version, "output": args.out, "images": rows, "failed": 0}
    if args.json:
        print_json(summary)
    else:
        n = len(summary.get("images", [])) or 1
        print(f"Predicted {n} image(s) with model version {predictor.version} into {args.out}.")
    return 1 if summary.get("failed") else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..core.evaluate import _finite
    from ..workflows.evaluate import compare_models, evaluate_baseline, iter_evaluate_project

    project = open_project(args)
    ev = drive(iter_evaluate_project(project, args.version, split=args.split, predict_config=_predict_config(args)), quiet=args.json, desc="tiles")
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


def cmd_tune(args: argparse.Namespace) -> int:
    from ..workflows.tune import iter_tune_postprocess

    project = open_project(args)
    grid = {}
    if args.thresholds:
        grid["threshold"] = args.thresholds
    if args.min_sizes:
        grid["min_size"] = args.min_sizes
    if args.seed_distances:
        grid["seed_distance"] = args.seed_distances
    if args.instances:
        grid["instances"] = args.instances
    best, table = drive(
        iter_tune_postprocess(project, args.version, grid=grid, predict_config=_predict_config(args), save=not args.no_save), quiet=args.json, desc="tune"
    )
    top = table.sort_values("score", ascending=False).head(5)
    if args.json:
        print_json({"best": best.to_dict(), "score": float(top["score"].iloc[0]), "metric": top["metric"].iloc[0], "combinations": len(table)})
        return 0
    print(f"Best post-processing ({top['metric'].iloc[0]} {top['score'].iloc[0]:.3f}): threshold {best.threshold}, min size {best.min_size}, {best.objects_in_words()}")
    print(top.to_string(index=False))
    return 0


def cmd_quantify(args: argparse.Namespace) -> int:
    from ..core.errors import DataError
    from ..core.quantify import iter_quantify

    project = None
    if args.store:
        from ..core.store import Project

        project = Project.open(args.store, storage_options={"endpoint_url": args.endpoint_url} if args.endpoint_url else None)
    elif not args.labels:
        raise DataError("Give label images to quantify, or --store STORE.")
    pixel_size = None
    if args.pixel_size:
        pixel_size = args.pixel_size[0] if len(args.pixel_size) == 1 else args.pixel_size
    source = None if project else (args.labels if len(args.labels) > 1 else args.labels[0])
    q = drive(
        iter_quantify(source, images=args.images, project=project, kind=args.kind, pixel_size=pixel_size, unit=args.unit, scheduler=args.scheduler, workers=args.workers),
        quiet=args.json,
        desc="images",
    )
    paths = q.save(args.out, plots=not args.no_plots)
    n_img = q.images["image"].nunique()
    summary = {"images": int(n_img), "objects": int(len(q.objects)), "failed": len(q.errors), "errors": q.errors, "files": paths}
    if args.json:
        print_json(summary)
    else:
        print(f"Quantified {n_img} image(s), {len(q.objects)} objects; tables and plots in {args.out}.")
        for e in q.errors:
            print(f"  could not quantify {e['image']}: {e['error']}")
    return 1 if q.errors else 0
