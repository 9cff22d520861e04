"""CLI subcommand ``predict``: image files, a large zarr image, or the store's images into label files."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile

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
    from ..core.onnx_backend import BACKENDS

    p.add_argument(
        "--backend", choices=BACKENDS,
        help=f"what runs the network: torch, onnx (ONNX Runtime on the CPU, often faster; pip install napari-seg-box[onnx]) "
        f"or auto (onnx on the CPU where installed) (default: {d.backend})",
    )  # fmt: skip
    p.add_argument(
        "--orthogonal", action="store_true", default=None,
        help="volumes with near-isotropic voxels: predict along z, y and x and average (3x the time)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON summary for scripts (no progress bars)")


def _predict_config(args):
    from ..core.infer import PredictConfig

    given = {k: getattr(args, k, None) for k in ("tile_size", "overlap", "batch_size", "tta", "device", "orthogonal", "backend")}
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
    p.add_argument("--out", help="output folder (or, with --large, output .zarr; optional with --large --ome-zarr-labels)")
    p.add_argument(
        "--large", action="store_true", help="the single --images entry is a zarr/OME-Zarr larger than memory: predict block by block"
    )
    p.add_argument("--probabilities", action="store_true", help="also write per-class probabilities")
    p.add_argument(
        "--ome-zarr-labels", action="store_true",
        help="also write the labels into each OME-Zarr input image as NGFF labels: <image>.zarr/labels/classes "
        "(and labels/objects, the instances, without --large), with a pyramid like the image's",
    )  # fmt: skip
    p.add_argument("--labels-prefix", default="", help="with --ome-zarr-labels: prefix of the labels names (e.g. v003_ -> v003_classes)")
    p.add_argument("--overwrite", action="store_true", help="with --ome-zarr-labels: replace labels of the same names in the image")
    p.add_argument(
        "--geojson", action="store_true",
        help="also write <name>_objects.geojson (2D images): the objects' outlines, classes and measurements for QuPath (File > Import objects)",
    )  # fmt: skip
    _add_predict_options(p)
    p.add_argument(
        "--scheduler", default="sync",
        help="where the images (with --large: bands of rows of the one image) are predicted: sync (here, one after the other), "
        "threads, processes (--workers of them "
        "on this machine), or a dask scheduler address such as tcp://host:8786 (its workers, which must see the images, "
        "the store and --out, e.g. on a shared file system). Each worker loads the model once and uses its own GPU when "
        "it has one (--device auto); an image whose task fails twice is reported, the others go on (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=int, default=1,
        help="images at once with --scheduler threads or processes (a dask cluster has its own workers) (default: %(default)s)",
    )  # fmt: skip
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..core.errors import DataError
    from ..core.infer import Predictor
    from ..core.infer_large import iter_predict_large
    from ..workflows.predict import iter_predict_files, iter_predict_store_to_files

    project = open_project(args)
    cfg = _predict_config(args)
    if not args.out and not (args.large and args.ome_zarr_labels):
        raise DataError("Give --out: the output folder (with --large, the output .zarr; optional with --large --ome-zarr-labels).")
    _check_exports(args)
    predictor = Predictor.from_project(project, args.version, device=cfg.device, backend=cfg.backend)
    if args.large:
        if not args.images or len(args.images) != 1:
            raise DataError("--large takes exactly one zarr/OME-Zarr image in --images.")
        with _large_output(args) as out:
            group = drive(
                iter_predict_large(
                    args.images[0],
                    out,
                    predictor,
                    project=project,
                    config=cfg,
                    write_probabilities=args.probabilities,
                    scheduler=args.scheduler,
                    workers=args.workers,
                ),  # fmt: skip
                quiet=args.json,
                desc="tiles",
            )
            summary = {"model_version": predictor.version, "output": args.out, "shape": list(group["labels"].shape)}
            if args.ome_zarr_labels:
                summary["ome_zarr_labels"] = [_write_classes(args, args.images[0], group["labels"], project, predictor)]
    else:
        export = _export(args, project, predictor)
        where = {"scheduler": args.scheduler, "workers": args.workers}
        if args.images:
            gen = iter_predict_files(
                args.images, args.out, predictor, config=cfg, save_probabilities=args.probabilities, export=export, project=project, **where
            )
        else:
            gen = iter_predict_store_to_files(
                project, args.out, split=args.split, config=cfg, predictor=predictor, save_probabilities=args.probabilities,
                export=export, **where,
            )  # fmt: skip
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


# ---------------------------------------------------------------------- OME-Zarr labels, GeoJSON
def _names(args, large: bool) -> list[str]:
    return [f"{args.labels_prefix}classes"] + ([] if large else [f"{args.labels_prefix}objects"])


def _check_exports(args) -> None:
    """Refuse, before predicting, what the output options cannot do."""
    from ..core.errors import DataError
    from ..core.io import _is_zarr, image_inputs
    from ..core.ome_zarr_out import check_labels_target

    if args.large and args.geojson:
        raise DataError("--geojson writes objects, which --large does not make (semantic labels only): predict without --large.")
    if args.large and args.probabilities and not args.out:
        raise DataError("--probabilities with --large needs --out (the output .zarr they go into).")
    if args.ome_zarr_labels:
        if not args.images:
            raise DataError("--ome-zarr-labels writes into the input OME-Zarr images: give them with --images.")
        zarrs = [args.images[0]] if args.large else [p for p in image_inputs(args.images) if _is_zarr(p)]
        for path in zarrs:
            check_labels_target(path, _names(args, args.large), overwrite=args.overwrite)


@contextlib.contextmanager
def _large_output(args):
    """The output group of --large: --out, or a temporary one beside the image (its labels are copied in)."""
    if args.out:
        yield args.out
        return
    image = args.images[0].rstrip("/")
    where = None if "://" in image else os.path.dirname(os.path.abspath(image))
    with tempfile.TemporaryDirectory(prefix=".segbox-predict-", dir=where) as tmp:
        yield os.path.join(tmp, "prediction.zarr")


def _class_info(project, predictor) -> tuple[list[str], list]:
    """The model's class names and their colours (the project's class of that name, else of that place)."""
    names = list(predictor.class_names)
    by_name = {c.name: c.color for c in project.classes}
    by_place = [c.color for c in project.classes]
    return names, [by_name.get(n) or (by_place[i] if i < len(by_place) else None) for i, n in enumerate(names)]


def _write_classes(args, image, labels, project, predictor) -> str:
    from ..core.ome_zarr_out import class_metadata, write_labels_group

    names, colors = _class_info(project, predictor)
    props, cols = class_metadata(names, colors)
    return write_labels_group(image, _names(args, True)[0], labels, properties=props, colors=cols, overwrite=args.overwrite)


def _export(args, project, predictor):
    """The per-image export of ``predict`` files: GeoJSON beside the TIFFs, labels into OME-Zarr inputs."""
    if not (args.geojson or args.ome_zarr_labels):
        return None
    from ..core.geojson import write_objects_geojson
    from ..core.io import _is_zarr, output_path
    from ..core.ome_zarr_out import write_labels_group

    names, colors = _class_info(project, predictor)
    palette = {n: c for n, c in zip(names, colors) if c}

    def export(row, image, result):
        classes = {int(i): names[v - 1] if 0 < v <= len(names) else f"class {v}" for i, v in result.instance_classes.items()}
        if args.geojson:
            row["geojson"] = None
            if result.instances.ndim == 2:
                rec = project.image_record(row["name"]) if row["path"] is None else None
                row["geojson"] = write_objects_geojson(
                    output_path(args.out, row["name"], "_objects.geojson"), result.instances, image=image, classes=classes,
                    colors=palette, pixel_size=rec.pixel_size if rec else None, unit=(rec.unit if rec else None) or "µm",
                )  # fmt: skip
        if args.ome_zarr_labels and row["path"] and _is_zarr(row["path"]):
            row["ome_zarr_labels"] = [
                _write_classes(args, row["path"], result.semantic, project, predictor),
                write_labels_group(
                    row["path"], _names(args, False)[1], result.instances.astype("uint32"),
                    properties={i: {"class": n} for i, n in classes.items()}, overwrite=args.overwrite,
                ),
            ]  # fmt: skip

    return export
