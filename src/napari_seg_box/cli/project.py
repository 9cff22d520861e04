"""CLI subcommands for the project store: init, import, info, split, export."""

from __future__ import annotations

import argparse

from ._common import add_store_options, open_project, print_json, storage_options


def register(sub) -> None:
    p = sub.add_parser("init", help="create a new project store", description="Create a new, empty project store.")
    add_store_options(p)
    p.add_argument(
        "--task", choices=["segmentation", "classification"], default="segmentation",
        help="segmentation (labels per pixel) or classification (a class per image) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--classes",
        help="class names in label order, comma-separated (default: background,foreground; none for classification: "
        "import --class-folders adds them)",
    )
    p.add_argument("--pixel-size", type=float, nargs="+", metavar="SIZE", help="pixel size (one value, or y x)")
    p.add_argument("--unit", default="µm", help="unit of the pixel size (default: %(default)s)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "import",
        help="import images (and masks) into a store",
        description="Import image files, folders, globs, TIFF stacks (ImageJ, OME-TIFF) or OME-Zarr, with optional masks "
        "matched by name (images/a.png + masks/a.png, or the PyJAMAS layout <sample>/image + <sample>/mask). A volume or a "
        "time-lapse is one image, with the voxel size and frame interval its file records (--voxel-size to give them).",
    )
    add_store_options(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", help="image files, folders or glob patterns")
    source.add_argument("--class-folders", metavar="DIR", help="classification: a folder with one subfolder of images per class")
    source.add_argument("--class-table", metavar="CSV", help="classification: a CSV with columns file,class (files relative to it)")
    p.add_argument("--masks", nargs="+", help="mask files, folders or glob patterns (matched to images by name)")
    p.add_argument(
        "--split", choices=["train", "validation", "test"],
        help="split of the imported images (default: train; an image replaced with --overwrite keeps its split)",
    )  # fmt: skip
    p.add_argument(
        "--mask-kind",
        default="auto",
        choices=["auto", "binary", "classes", "instances", "labels"],
        help="how mask values are read (default: %(default)s; see the README)",
    )
    p.add_argument("--channel-axis", type=int, help="axis holding channels in multichannel images")
    p.add_argument(
        "--stack", action=argparse.BooleanOptionalAction, default=None,
        help="read 3D arrays as stacks of planes (--stack) or as channels (--no-stack); default: decided from the shape",
    )  # fmt: skip
    p.add_argument(
        "--axes", type=str.upper,
        help="how the arrays read, e.g. TYX (a time-lapse), ZYX (a volume), ZCYX, CZYX, TYXC, YXC; TZYX imports one volume per "
        "time point (<name>_t000...); default: from the file's ImageJ/OME metadata, else from the shape",
    )  # fmt: skip
    p.add_argument(
        "--volume", action="store_true",
        help="the 2D images of each --images folder (or glob) are the slices of one volume, in natural name order; --masks likewise",
    )  # fmt: skip
    p.add_argument(
        "--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
        help="voxel size in the project's unit (wins over the files' metadata), e.g. --voxel-size 0.05 0.004 0.004",
    )  # fmt: skip
    p.add_argument("--pixel-size", type=float, nargs="+", metavar="SIZE", help="pixel size (one value, or y x) in the project's unit")
    p.add_argument(
        "--frame-interval", type=float, metavar="SECONDS", help="time between the frames of time-lapses (default: from the files)"
    )
    p.add_argument("--prefix", default="", help="prefix for the image names in the store")
    p.add_argument("--overwrite", action="store_true", help="replace images of the same name")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "info", help="describe a store", description="Images, splits, classes, annotated pixels per class and model versions."
    )
    add_store_options(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("split", help="set the split of images", description="Mark images as train, validation or test (held out).")
    add_store_options(p)
    p.add_argument("split", nargs="?", choices=["train", "validation", "test"])
    p.add_argument("names", nargs="*", help="image names in the store")
    p.add_argument(
        "--stratified", metavar="TRAIN/VAL/TEST",
        help="classification: split the classified training images class by class, e.g. 70/15/15 (images already held out stay so)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed of --stratified (default: %(default)s)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser(
        "background",
        help="say that unpainted pixels of images are background",
        description="When only the objects were painted, say that the rest of these images is background (class 1): "
        "training, tuning and evaluation then read unpainted pixels of them as background. --off takes it back.",
    )
    add_store_options(p)
    p.add_argument("names", nargs="+", help="image names in the store")
    p.add_argument("--off", action="store_true", help="unpainted pixels are unlabelled again (the default)")
    p.set_defaults(func=cmd_background)

    p = sub.add_parser("export", help="export annotations as TIFF", description="Write each image's annotation as <out>/<name>.tif.")
    add_store_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--instances", action="store_true", help="also write instance ground truth")
    p.add_argument(
        "--crops", action="store_true",
        help="instead: a crop around every annotated object, as <out>/<class>/<image>_<id>.tif (training data for a phenotype classifier)",
    )  # fmt: skip
    p.add_argument("--crop-size", type=int, help="square crops of this side (default: the object's bounding box, padded)")
    p.add_argument("--crop-pad", type=float, default=0.25, help="bounding-box padding, a share of the object's size (default: %(default)s)")
    p.add_argument("--crop-mask", action="store_true", help="add the object's mask as a last channel")
    p.set_defaults(func=cmd_export)


def cmd_init(args: argparse.Namespace) -> int:
    from ..core.store import Project

    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    pixel_size = None
    if args.pixel_size:
        pixel_size = args.pixel_size[0] if len(args.pixel_size) == 1 else args.pixel_size
    project = Project.create(
        args.store, classes=classes, pixel_size=pixel_size, unit=args.unit, task=args.task, storage_options=storage_options(args)
    )
    names = ", ".join(f"{c.value}={c.name}" for c in project.classes) or "none yet (import --class-folders adds them)"
    print(f"Created {project.task} project store {project.url} with classes: {names}")
    return 0


def _import_classified(args: argparse.Namespace, project) -> int:
    from ..core.classify.importing import class_folder_files, class_table_files, iter_import_classified
    from ._common import drive

    pairs = class_folder_files(args.class_folders) if args.class_folders else class_table_files(args.class_table)
    report = drive(
        iter_import_classified(project, pairs, split=args.split, prefix=args.prefix, overwrite=args.overwrite), quiet=False, desc="import"
    )
    print(report.text())
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..core.io import import_images

    project = open_project(args)
    if args.class_folders or args.class_table:
        return _import_classified(args, project)
    names = import_images(
        project,
        args.images if len(args.images) > 1 else args.images[0],
        None if not args.masks else (args.masks if len(args.masks) > 1 else args.masks[0]),
        split=args.split,
        mask_kind=args.mask_kind,
        channel_axis=args.channel_axis,
        stack=args.stack,
        axes=args.axes,
        as_volume=args.volume,
        voxel_size=args.voxel_size,
        pixel_size=None if not args.pixel_size else (args.pixel_size[0] if len(args.pixel_size) == 1 else args.pixel_size),
        frame_interval=args.frame_interval,
        prefix=args.prefix,
        overwrite=args.overwrite,
    )
    records = [project.image_record(n) for n in names]
    print(f"Imported {len(names)} image(s) into {project.url} ({sum(r.has_labels for r in records)} with annotations).")
    stacks = [r for r in records if r.is_stack]
    for rec in stacks[:5]:  # say how each stack was read: a wrong guess is visible at once
        print(f"  {rec.name}: {_stack_words(rec)}")
    if len(stacks) > 5:
        print(f"  and {len(stacks) - 5} more stacks")
    by_kind: dict[str, list[str]] = {}
    for name, kind in names.mask_kinds.items():
        by_kind.setdefault(kind, []).append(name)
    if by_kind:  # always say how masks were read: a wrong guess is visible at once
        words = {
            "binary": "binary (background / object)",
            "classes": "class indices",
            "instances": "instance ids (objects)",
            "labels": "project labels",
        }
        for kind, which in by_kind.items():
            shown = ", ".join(which[:5]) + (f" and {len(which) - 5} more" if len(which) > 5 else "")
            print(
                f"  masks read as {words[kind]}: {shown}" + ("" if args.mask_kind != "auto" else "  (--mask-kind to read them otherwise)")
            )
    return 0


def _stack_words(rec) -> str:
    """'volume of 30 planes, voxel size 0.05 x 0.004 x 0.004 µm' / 'time-lapse of 20 frames, every 2.5 s'."""
    n = rec.spatial_shape[0]
    if rec.is_timelapse:
        every = f"every {rec.frame_interval:g} {rec.time_unit or 's'}" if rec.frame_interval else "frame interval unknown"
        size = f", pixel size {rec.pixel_size[0]:g} x {rec.pixel_size[1]:g} {rec.unit}" if rec.pixel_size else ""
        return f"time-lapse of {n} frames ({every}{size})"
    if rec.voxel_size is not None:
        return f"volume of {n} planes, voxel size {' x '.join(f'{v:g}' for v in rec.voxel_size)} {rec.unit} (z, y, x)"
    return f"volume of {n} planes, voxel size unknown (--voxel-size Z Y X gives it)"


def cmd_info(args: argparse.Namespace) -> int:
    summary = open_project(args).summary()
    if args.json:
        print_json(summary)
        return 0
    print(f"Project store: {summary['url']} (format {summary['format_version']})")
    ps = summary["pixel_size"]
    size = f"{ps[0]:g} x {ps[1]:g} {summary['unit']}" if ps else "not set (measurements in pixels)"
    print(f"Pixel size: {size}")
    s = summary["splits"]
    if summary["task"] == "classification":
        print(
            f"Task: classification. Images: {len(summary['images'])} (train {s['train']}, validation {s['validation']}, test {s['test']})"
        )
        print(f"  {'class':<20} {'train':>7} {'valid.':>7} {'test':>7}")
        for name, n in summary["images_per_class"].items():
            print(f"  {name:<20} {n['train']:>7} {n['validation']:>7} {n['test']:>7}")
    else:
        print("Classes (label value = name; 0 = unlabelled):")
        for c in summary["classes"]:
            n = summary["annotated_pixels_per_class"][c["name"]]
            print(f"  {c['value']} = {c['name']:<20} {n:>12,d} annotated pixels")
        print(f"Images: {len(summary['images'])} (train {s['train']}, validation {s['validation']}, test {s['test']})")
    for im in summary["images"] if summary["task"] == "segmentation" or len(summary["images"]) <= 40 else []:
        shape = "x".join(str(v) for v in im["shape"]) + f" {im['axes']}"
        gt = ", instances" if im["has_instances"] else ""
        what = (
            f"class {im['image_class'] or '(none)'}"
            if summary["task"] == "classification"
            else f"{im['annotated_pixels']:>10,d} annotated px{gt}"
        )
        print(f"  {im['name']:<30} {im['split']:<10} {shape:<12} {im['dtype']:<8} {what}")
    print(f"Model versions: {len(summary['model_versions'])}")
    for m in summary["model_versions"]:
        best = m.get("best") or {}
        score = f"val macro-F1 {best['val_f1']:.3f}" if "val_f1" in best else f"val IoU {best['val_iou']:.3f}" if "val_iou" in best else ""
        print(f"  {m['version']}  {m.get('encoder') or ''}  {m.get('created') or ''}  {score}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from ..core.errors import DataError

    project = open_project(args)
    if args.stratified:
        from ..core.classify import split_stratified

        try:
            parts = [float(v) for v in args.stratified.replace(",", "/").split("/")]
        except ValueError:
            parts = []
        if len(parts) != 3:
            raise DataError(f"--stratified takes three shares train/validation/test such as 70/15/15, got {args.stratified!r}.")
        counts = split_stratified(project, tuple(p / sum(parts) for p in parts), seed=args.seed)
        print(f"Split class by class: train {counts['train']}, validation {counts['validation']}, test {counts['test']} image(s).")
        return 0
    if not args.split or not args.names:
        raise DataError("Give a split and image names (split test NAME...), or --stratified 70/15/15 for a classification project.")
    project.set_split(args.names, args.split)  # all or none
    print(f"Marked {len(args.names)} image(s) as {args.split}.")
    return 0


def cmd_background(args: argparse.Namespace) -> int:
    project = open_project(args)
    project.set_unpainted_background(args.names, not args.off)
    print(f"Unpainted pixels of {len(args.names)} image(s) are {'unlabelled' if args.off else project.class_names[0]} now.")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..core.io import export_annotations

    if args.crops:
        from ..core.classify.phenotype import CropSettings, export_object_crops

        counts = export_object_crops(open_project(args), args.out, CropSettings(args.crop_size, args.crop_pad, args.crop_mask))
        print(f"Wrote {sum(counts.values())} object crop(s) to {args.out}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        return 0

    written = export_annotations(open_project(args), args.out, instances=args.instances)
    print(f"Wrote {len(written)} file(s) to {args.out}.")
    return 0
