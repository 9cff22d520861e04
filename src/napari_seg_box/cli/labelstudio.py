"""CLI subcommands for Label Studio: import-labelstudio (annotations in), export-labelstudio (pre-annotations out)."""

from __future__ import annotations

import argparse

from ._common import add_store_options, drive, open_project, storage_options


def register(sub) -> None:
    p = sub.add_parser(
        "import-labelstudio",
        help="import annotations from a Label Studio JSON export",
        description="Import the annotated images of a Label Studio JSON export (brush and polygon regions) into the store. "
        "Labels map to the store's classes by name (--map for others); the latest submitted annotation of each task counts. "
        "All or nothing: a missing image, an unreadable region or an unknown label stops the import and is listed. "
        "s3:// image URLs are read with the usual AWS_* variables and the store's --endpoint-url (else AWS_ENDPOINT_URL).",
    )
    add_store_options(p)
    p.add_argument("--json", required=True, metavar="EXPORT", help="the Label Studio export (Export > JSON)")
    p.add_argument(
        "--images-root", metavar="DIR",
        help="folder holding the images: files are found by path or name, with or without Label Studio's upload prefix",
    )  # fmt: skip
    p.add_argument("--map", nargs="+", default=[], metavar="LABEL=CLASS", help="Label Studio label names that differ from the classes")
    p.add_argument(
        "--split",
        choices=["train", "validation", "test"],
        help="split of the imported images (default: train; a replaced image keeps its own)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace images of the same name")
    p.add_argument(
        "--unpainted-background", action="store_true", help="pixels no region covers are background (class 1): only objects were painted"
    )
    p.set_defaults(func=cmd_import_labelstudio)

    p = sub.add_parser(
        "export-labelstudio",
        help="write predictions as Label Studio pre-annotations",
        description="Predict the store's images with a model version and write them as Label Studio tasks with brush "
        "pre-annotations (import them in Label Studio: Import), plus <out>.label_config.xml, the labeling configuration.",
    )
    add_store_options(p)
    p.add_argument("--out", required=True, metavar="TASKS.json", help="tasks file to write")
    p.add_argument("--version", help="model version (default: newest; 'best' = best validation IoU)")
    p.add_argument("--images", nargs="+", metavar="NAME", help="image names in the store (default: all plane images)")
    p.add_argument(
        "--image-url", default="{name}.png", metavar="TEMPLATE",
        help="each task's image URL, {name} = image name, e.g. '/data/local-files/?d=images/{name}.png' (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--write-images", action="store_true", help="also write the images as <name>.png next to the tasks file")
    p.add_argument("--background", action="store_true", help="also give the first class (background) a region")
    p.add_argument("--from-name", default="label", help="name of the BrushLabels tag (default: %(default)s)")
    p.add_argument("--to-name", default="image", help="name of the Image tag (default: %(default)s)")
    p.add_argument("--device", help="auto, cpu, cuda or mps (default: auto)")
    p.set_defaults(func=cmd_export_labelstudio)


def parse_map(pairs: list[str]) -> dict[str, str]:
    """``["Nucleus=nucleus", ...]`` as ``{"Nucleus": "nucleus"}``."""
    from ..core.errors import ConfigError

    out = {}
    for pair in pairs:
        label, sep, ours = pair.partition("=")
        if not sep or not label.strip() or not ours.strip():
            raise ConfigError(f"--map takes LABEL=CLASS pairs such as Nucleus=nucleus; got {pair!r}.")
        out[label.strip()] = ours.strip()
    return out


def cmd_import_labelstudio(args: argparse.Namespace) -> int:
    from ..core.labelstudio import import_labelstudio

    project = open_project(args)
    names = import_labelstudio(
        project,
        args.json,
        images_root=args.images_root,
        class_map=parse_map(args.map),
        split=args.split,
        overwrite=args.overwrite,
        unpainted_background=args.unpainted_background,
        storage_options=storage_options(args),
    )
    labelled = sum(project.image_record(n).has_labels for n in names)
    print(f"Imported {len(names)} image(s) from {args.json} into {project.url} ({labelled} with annotations).")
    if names.skipped:
        shown = ", ".join(str(t) for t in names.skipped[:10]) + (" ..." if len(names.skipped) > 10 else "")
        print(f"  {len(names.skipped)} task(s) without a submitted annotation were skipped: {shown}")
    if names.ignored:
        print("  regions of other kinds were not imported: " + ", ".join(f"{n} {kind}" for kind, n in names.ignored.items()))
    return 0


def cmd_export_labelstudio(args: argparse.Namespace) -> int:
    from ..core.labelstudio_export import iter_export_labelstudio_predictions, labeling_config_path

    project = open_project(args)
    gen = iter_export_labelstudio_predictions(
        project,
        args.out,
        version=args.version,
        names=args.images,
        image_url=args.image_url,
        from_name=args.from_name,
        to_name=args.to_name,
        write_images=args.write_images,
        background=args.background,
        config={"device": args.device} if args.device else None,
    )
    out = drive(gen, quiet=False, desc="tiles")
    print(f"Wrote Label Studio tasks with pre-annotations to {out}")
    print(f"  labeling configuration: {labeling_config_path(out)} (paste it into the project's Settings > Labeling Interface)")
    if args.write_images:
        print(f"  images: <name>.png in {out.parent}")
    return 0
