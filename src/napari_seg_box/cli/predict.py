"""CLI subcommand ``predict``: image files, a large zarr image, or the store's images into label files."""

from __future__ import annotations

import argparse

from ._common import add_store_options, drive, open_project, print_json


def _add_predict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", help="model version (default: newest; 'best' = best validation IoU)")
    from ..core.infer import TTA_MODES, PredictConfig

    d = PredictConfig()  # the defaults are the core's, said once
    p.add_argument("--tile-size", type=int, help=f"tile side in pixels, a multiple of 32 (default: {d.tile_size})")
    p.add_argument("--overlap", type=float, help=f"tile overlap fraction (default: {d.overlap}; 0.5 = quality)")
    p.add_argument("--batch-size", type=int, help="tiles per forward pass (default: 4 on the CPU, 16 on a GPU)")
    p.add_argument("--tta", choices=TTA_MODES, help=f"test-time augmentation (default: {d.tta})")
    p.add_argument("--device", help=f"auto, cpu, cuda or mps (default: {d.device})")
    p.add_argument(
        "--orthogonal", action="store_true", default=None,
        help="volumes with near-isotropic voxels: predict along z, y and x and average (3x the time)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON summary for scripts (no progress bars)")


def _predict_config(args):
    from ..core.infer import PredictConfig

    given = {k: getattr(args, k, None) for k in ("tile_size", "overlap", "batch_size", "tta", "device", "orthogonal")}
    return PredictConfig.from_dict({k: v for k, v in given.items() if v is not None})


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
    p.add_argument(
        "--large", action="store_true", help="the single --images entry is a zarr/OME-Zarr larger than memory: predict block by block"
    )
    p.add_argument("--probabilities", action="store_true", help="also write per-class probabilities")
    _add_predict_options(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..core.errors import DataError
    from ..core.infer import Predictor
    from ..core.infer_large import iter_predict_large
    from ..workflows.predict import iter_predict_files, iter_predict_store_to_files

    project = open_project(args)
    cfg = _predict_config(args)
    predictor = Predictor.from_project(project, args.version, device=_predict_config(args).device)
    if args.large:
        if not args.images or len(args.images) != 1:
            raise DataError("--large takes exactly one zarr/OME-Zarr image in --images.")
        group = drive(
            iter_predict_large(args.images[0], args.out, predictor, config=cfg, write_probabilities=args.probabilities),
            quiet=args.json,
            desc="tiles",
        )
        summary = {"model_version": predictor.version, "output": args.out, "shape": list(group["labels"].shape)}
    else:
        if args.images:
            gen = iter_predict_files(args.images, args.out, predictor, config=cfg, save_probabilities=args.probabilities)
        else:
            gen = iter_predict_store_to_files(
                project, args.out, split=args.split, config=cfg, predictor=predictor, save_probabilities=args.probabilities
            )
        rows = drive(gen, quiet=args.json, desc="tiles")
        if not rows:
            where = " ".join(args.images) if args.images else f"the store's {args.split or ''} images".replace("  ", " ")
            raise DataError(f"No images to predict in {where}: nothing was written.")
        summary = {
            "model_version": predictor.version,
            "output": args.out,
            "images": rows,
            "failed": sum(r["error"] is not None for r in rows),
        }
    if args.json:
        print_json(summary)
    elif "images" in summary:
        done = len(summary["images"]) - summary["failed"]
        print(f"Predicted {done} of {len(summary['images'])} image(s) with model version {predictor.version} into {args.out}.")
        for r in summary["images"]:
            if r["error"]:
                print(f"  failed: {r['name']}: {r['error']}")
    else:
        print(
            f"Predicted {args.images[0]} ({'x'.join(map(str, summary['shape']))}) with model version {predictor.version} into {args.out}."
        )
    return 1 if summary.get("failed") else 0
