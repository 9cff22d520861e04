"""CLI subcommands for moving models in and out of a store: export-model (bioimage.io package or
version archive) and import-model."""

from __future__ import annotations

import argparse
import sys

from ._common import add_store_options, open_project, print_json


def register(sub) -> None:
    p = sub.add_parser(
        "export-model",
        help="export a model version as a bioimage.io package (or a version archive)",
        description="Write a model version as a bioimage.io model package (spec 0.5: pytorch_state_dict, torchscript and onnx "
        "weights, normalisation, test tensors from a real image, README with the held-out figures; needs "
        "pip install 'napari-seg-box[bioimageio]'), or with --format segbox as a version archive that import-model reads.",
    )
    add_store_options(p)
    p.add_argument("--version", help="model version (default: newest; 'best' = best validation IoU)")
    p.add_argument("--out", required=True, help="output .zip (or a folder)")
    p.add_argument("--format", choices=["bioimageio", "segbox"], default="bioimageio", help="package format (default: %(default)s)")
    p.add_argument("--name", help="model name shown in the model zoo (default: project, version and classes)")
    p.add_argument("--description", help="one-sentence description")
    p.add_argument(
        "--author", action="append", default=[], metavar="NAME[;AFFILIATION[;ORCID[;GITHUB_USER]]]",
        help="an author (repeat for several), e.g. 'Ada Lovelace;EMBL;0000-0002-1825-0097;ada'",
    )  # fmt: skip
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence of the weights (default: %(default)s)")
    p.add_argument("--cite", nargs=2, action="append", default=[], metavar=("TEXT", "DOI_OR_URL"), help="a reference (repeatable)")
    p.add_argument(
        "--weights", nargs="+", choices=["pytorch_state_dict", "torchscript", "onnx"],
        help="weight formats (default: all three)",
    )  # fmt: skip
    p.add_argument("--image", help="project image the test tensors are cut from (default: the first test image)")
    p.add_argument("--test", action="store_true", help="run bioimage.io's test_model on the package after writing it")
    p.set_defaults(func=cmd_export_model)

    p = sub.add_parser(
        "import-model",
        help="add a model (version archive or bioimage.io package) to the store as a new version",
        description="Import a version archive (.segbox-model.zip, e.g. written by a training notebook) or a bioimage.io "
        "model package whose network is a segmentation-models-pytorch U-Net as a new model version.",
    )
    add_store_options(p)
    p.add_argument("model", metavar="FILE", help="a .segbox-model.zip, a bioimage.io .zip or its rdf.yaml")
    p.add_argument("--json", action="store_true", help="print the new version as JSON")
    p.set_defaults(func=cmd_import_model)


def _author(text: str) -> dict:
    fields = [f.strip() for f in text.split(";")]
    keys = ("name", "affiliation", "orcid", "github_user")
    return {k: f for k, f in zip(keys, fields) if f}


def cmd_export_model(args: argparse.Namespace) -> int:
    project = open_project(args)
    if args.format == "segbox":
        from ..core.model_io import export_version_archive

        print(export_version_archive(project, args.version, args.out))
        return 0
    from ..core.bioimageio_export import WEIGHT_FORMATS, check_package, export_package

    out = export_package(
        project,
        args.out,
        version=args.version,
        name=args.name,
        description=args.description,
        authors=[_author(a) for a in args.author],
        license=args.license,
        cite=[tuple(c) for c in args.cite],
        weight_formats=args.weights or WEIGHT_FORMATS,
        image=args.image,
    )
    print(out)
    if args.test:
        result = check_package(out)
        for status, name in result["tests"]:
            print(f"  {status:8s} {name}", file=sys.stderr)
        for err in result["errors"]:
            print(f"  error: {err}", file=sys.stderr)
        print(f"bioimage.io test_model: {result['status']}", file=sys.stderr)
        return 0 if result["status"] == "passed" else 1
    return 0


def cmd_import_model(args: argparse.Namespace) -> int:
    from ..core.model_io import import_model

    mv = import_model(open_project(args), args.model)
    if args.json:
        print_json(mv.index_entry() | {"version": mv.version, "imported_from": mv.provenance.imported_from})
    else:
        print(f"imported {args.model} as {mv.describe()}")
    return 0
