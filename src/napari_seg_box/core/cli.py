"""The ``napari-seg-box`` command line: the same pipeline as the widgets, for servers and clusters.

Each subcommand lives in a module that defines ``register(subparsers)``; the module adds its
parser and sets ``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Sequence

from .errors import SegBoxError

# modules with a register(subparsers) function, in the order --help lists them
COMMAND_MODULES = [
    "napari_seg_box.core.cli_project",
    "napari_seg_box.core.cli_demo",
    "napari_seg_box.core.cli_train",
    "napari_seg_box.core.cli_predict",
]


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """The STORE argument and connection options every store command takes."""
    parser.add_argument("store", metavar="STORE", help="project store: a folder path, or a URL such as s3://bucket/project")
    parser.add_argument(
        "--endpoint-url",
        help="S3-compatible server (MinIO...) for s3:// stores; default: $AWS_ENDPOINT_URL. "
        "Credentials come from the usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables.",
    )


def storage_options(args: argparse.Namespace) -> dict:
    return {"endpoint_url": args.endpoint_url} if getattr(args, "endpoint_url", None) else {}


def open_project(args: argparse.Namespace):
    from .store import Project

    return Project.open(args.store, storage_options=storage_options(args))


def print_json(obj: Any) -> None:
    from .store import _json_default

    print(json.dumps(obj, indent=2, default=_json_default))


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="napari-seg-box",
        description="Annotate, train, evaluate and quantify microscopy segmentation: the napari-seg-box pipeline on the command line.",
    )
    parser.add_argument("--version", action="version", version=f"napari-seg-box {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SegBoxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
