"""CLI subcommand ``export-notebook``: a training notebook (and the data it needs) for a GPU elsewhere."""

from __future__ import annotations

import argparse

from ._common import add_store_options, open_project


def register(sub) -> None:
    p = sub.add_parser(
        "export-notebook",
        help="write a notebook that trains a model of the store on a GPU elsewhere (Colab...)",
        description="Write train_<project>.ipynb and <project>-data.zip (the annotated train and validation images; no test "
        "images, no models) into --out. Upload both to Colab (or any Jupyter with a GPU), run all cells, download the "
        ".segbox-model.zip it writes and bring it back with `napari-seg-box import-model STORE ARCHIVE`. The settings are "
        "those of the store's latest training (or the defaults), editable in the notebook. An s3:// store is opened by its "
        "URL from the notebook (no data zip; credentials from the environment, never written into it).",
    )
    add_store_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the notebook and the data zip")
    p.add_argument("--epochs", type=int, help="epochs in the notebook's settings (default: the latest training's, else 50)")
    p.add_argument(
        "--package",
        default="napari-seg-box",
        metavar="SPEC",
        help="what the notebook installs with pip: a name, name==version, a wheel URL or git+https://... (default: %(default)s)",
    )
    p.add_argument("--no-data", action="store_true", help="write only the notebook (the data zip you have already)")
    p.add_argument("--overwrite", action="store_true", help="replace a notebook or data zip of the same name in --out")
    p.set_defaults(func=cmd_export_notebook)


def cmd_export_notebook(args: argparse.Namespace) -> int:
    from ..core.notebook import default_config, export_notebook

    project = open_project(args)
    config = default_config(project)
    if args.epochs is not None:
        config = config.replace(epochs=args.epochs)
    paths = export_notebook(
        project, args.out, config=config, package_spec=args.package, include_data=not args.no_data, overwrite=args.overwrite
    )
    print(f"Wrote {paths['notebook']} ({config.epochs} epochs, {config.encoder} encoder)")
    if "data" in paths:
        print(f"Wrote {paths['data']} ({paths['data'].stat().st_size / 2**20:.1f} MiB)")
        print("On Colab: upload both, Runtime > Change runtime type > GPU, then Runtime > Run all.")
    else:
        print("On Colab: upload the notebook, Runtime > Change runtime type > GPU, then Runtime > Run all.")
    if str(project.url).startswith(("s3://", "s3a://")):
        print(f"The notebook trains on {project.url} itself: the new model version lands in the store.")
    else:
        print(f"Then bring the model back: napari-seg-box import-model {args.store} <the .segbox-model.zip it writes>")
    return 0
