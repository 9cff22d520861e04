"""The ``napari-seg-box`` command line: the same pipeline as the widgets, for servers and clusters.

Each subcommand lives in a module of this package that defines ``register(subparsers)``; the module
adds its parser and sets ``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..core.errors import SegBoxError

# modules with a register(subparsers) function, in the order --help lists them
COMMAND_MODULES = [
    "project",
    "demo",
    "train",
    "suggest",
    "predict",
    "evaluate",
    "classify",
    "quantify",
    "models",
    "notebook",
    "labelstudio",
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="napari-seg-box",
        description="Annotate, train, evaluate and quantify microscopy segmentation: the napari-seg-box pipeline on the command line.",
    )
    parser.add_argument("--version", action="version", version=f"napari-seg-box {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
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
        print(f"error: {err.for_face('cli')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
