"""CLI: `napari-seg-box demo`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole loop on the bundled real sample data",
        description="Build a project from the bundled DSB2018 nuclei image, train, tune, evaluate on the held-out "
        "quadrant, quantify, and write a report.",
    )
    p.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=int, help="training epochs (default: 20 on the CPU, 60 on a GPU)")
    p.add_argument("--gui", action="store_true", help="then open the project in napari with the four widgets docked")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    import os

    from ..workflows.demo import run_demo

    run_demo(args.out, epochs=args.epochs)
    if args.gui:
        from .._gui import open_project_in_napari  # napari is imported only here, never by the core

        open_project_in_napari(os.path.join(args.out, "project.zarr"))
    return 0
