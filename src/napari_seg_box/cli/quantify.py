"""CLI subcommand ``quantify``: measure objects in label images or a store's annotations (dask in parallel)."""

from __future__ import annotations

import argparse

from ._common import drive, print_json


def register(sub) -> None:
    p = sub.add_parser(
        "quantify",
        help="measure objects in label images",
        description="Per image and class: object count, coverage, mean size; per object: area, perimeter, diameter, "
        "shape and intensity, in physical units when the pixel size is known (volumes: volume, surface area, extent in z; "
        "time-lapses: a table per frame and a plot over time). Writes CSV + Parquet tables and PNG plots. "
        "Parallel with dask; --scheduler tcp://host:8786 uses an existing dask.distributed cluster.",
    )
    p.add_argument("labels", nargs="*", help="label images: files, folders, globs or a .zarr (or use --store)")
    p.add_argument("--store", help="quantify the annotated images of this project store instead")
    p.add_argument("--endpoint-url", help="S3-compatible server for s3:// stores")
    p.add_argument("--images", nargs="+", help="intensity images matched to the label images by name")
    p.add_argument("--kind", choices=["instances", "semantic"], help="label images hold object ids (default for files) or class labels")
    p.add_argument("--pixel-size", type=float, nargs="+", metavar="SIZE", help="pixel size (one value, or y x)")
    p.add_argument("--unit", default=None, help="unit of the pixel size (default: µm)")
    p.add_argument(
        "--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
        help="stacks of label files are volumes: measure their objects in 3D (volume, surface, extent in z) with this voxel size "
        "(a store's volumes are measured in 3D with their own)",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="output folder for tables and plots")
    p.add_argument(
        "--scheduler",
        default="threads",
        help="sync, threads, processes, or a dask scheduler address (default: %(default)s). Measuring holds "
        "Python's lock, so several --workers need processes or a cluster to use several cores",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel images for local schedulers (default: %(default)s)")
    g = p.add_argument_group("phenotypes", "classify every object with a classification model (needs --images)")
    g.add_argument("--phenotype", metavar="STORE[@VERSION]", help="classification project whose model names each object's phenotype")
    g.add_argument("--crop-size", type=int, help="square crops of this side around each object (default: its bounding box, padded)")
    g.add_argument("--crop-pad", type=float, default=0.25, help="bounding-box padding, a share of the object's size (default: %(default)s)")
    g.add_argument("--crop-mask", action="store_true", help="add the object's mask as a last channel (if the model was trained so)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--json", action="store_true", help="print a JSON summary for scripts (no progress bars)")
    p.set_defaults(func=cmd_quantify)


def cmd_quantify(args: argparse.Namespace) -> int:
    from ..core.errors import DataError
    from ..core.quantify_batch import iter_quantify

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
    phenotype = None
    if args.phenotype:
        from ..core.classify.phenotype import CropSettings, PhenotypeModel

        store, _, version = args.phenotype.partition("@")
        options = tuple(sorted({"endpoint_url": args.endpoint_url}.items())) if args.endpoint_url else ()
        phenotype = PhenotypeModel(store, version or None, options, CropSettings(args.crop_size, args.crop_pad, args.crop_mask))
        phenotype.load()  # a wrong store or model fails here, once
    q = drive(
        iter_quantify(
            source,
            images=args.images,
            project=project,
            kind=args.kind,
            pixel_size=pixel_size,
            unit=args.unit,
            voxel_size=args.voxel_size,
            phenotype=phenotype,
            scheduler=args.scheduler,
            workers=args.workers,
        ),
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
