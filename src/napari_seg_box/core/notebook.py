"""A training notebook for a GPU elsewhere (Colab, a lab's JupyterHub): :func:`export_notebook`.

The notebook (``train_<project>.ipynb``, nbformat 4, Python 3 kernel) installs napari-seg-box, unpacks
``<project>-data.zip`` (a copy of the store with only what training reads: the annotated train and
validation images, their labels and instances, classes and pixel size; no model versions, no test
images), shows the device, holds the :class:`~.train.TrainConfig` as an editable dict, trains with
the library's generator (printing one line per epoch), plots the curves and writes the new model
version as a ``.segbox-model.zip`` (:func:`~.model_io.export_version_archive`) that
``napari-seg-box import-model STORE ARCHIVE`` brings back into the store here.

A store on S3 is not copied: the notebook opens it by its URL (credentials from environment
variables or Colab's secrets, never written into the notebook) and the version lands in it directly.

For automated runs the notebook reads two environment variables: ``NAPARI_SEG_BOX_NOTEBOOK_SKIP_INSTALL``
(skip the ``%pip install``) and ``NAPARI_SEG_BOX_NOTEBOOK_EPOCHS`` (override the epochs).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

from .errors import ConfigError, DataError
from .manifest import ORIGINS, slug
from .notebook_cells import EPOCHS_ENV, SKIP_INSTALL_ENV, notebook_cells, notebook_json

__all__ = ["EPOCHS_ENV", "SKIP_INSTALL_ENV", "default_config", "export_notebook", "project_name"]

SPLITS = ("train", "validation")  # what training reads; test images stay home


def project_name(project) -> str:
    """The name files of ``project`` are called by: the store's folder name without ``.zarr``."""
    return slug(Path(str(project.url).rstrip("/")).stem) or "project"


def default_config(project):
    """The settings of the project's newest training run that was not a fine-tuning (which needs its
    starting version, and is short by design), made portable (device ``auto``); else the defaults."""
    from .train import TrainConfig

    for entry in reversed(project.model_versions()):
        saved = dict(project.model_version(entry.version).training.config or {})
        if not saved or saved.get("finetune_from"):
            continue
        try:
            config = TrainConfig.from_dict(saved)
        except ConfigError:
            continue
        return config.replace(device="auto")
    return TrainConfig()


def export_notebook(
    project,
    out_dir: str | os.PathLike,
    *,
    config=None,
    package_spec: str = "napari-seg-box",
    include_data: bool = True,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write a notebook that trains a U-Net on ``project``'s annotations on another machine.

    Parameters
    ----------
    project : :class:`~.store.Project` (segmentation) with at least one annotated ``train`` image.
    out_dir : folder that receives ``train_<project>.ipynb`` and ``<project>-data.zip``.
    config : :class:`~.train.TrainConfig` (or a dict of its fields) written into the notebook's
        parameters cell; default: :func:`default_config`.
    package_spec : what the notebook installs (``%pip install``): a name, ``name==version``, a wheel
        URL or ``git+https://...``.
    include_data : write the data zip (local stores; an S3 store is opened by its URL instead).
    overwrite : replace a notebook or data zip of the same name in ``out_dir``.

    Returns
    -------
    dict with ``notebook`` and, when written, ``data`` (paths).
    """
    from .config import as_config
    from .train import TrainConfig

    if project.task != "segmentation":
        raise DataError(
            f"This is a {project.task} project: the training notebook trains U-Nets (segmentation). "
            "Train its classifier with napari-seg-box train (the notebook does not cover classification)."
        )
    trainable = [r for r in project.images("train") if r.has_labels and any(r.label_counts)]
    if not trainable:
        raise DataError(
            f"The project {project.url} has no annotated training images: annotate some (napari's Annotate panel) or import "
            "masks (napari-seg-box import STORE --images ... --masks ...) first, then export the notebook.",
        )
    config = default_config(project) if config is None else as_config(TrainConfig, config)
    remote = str(project.url).startswith(("s3://", "s3a://"))
    if config.finetune_from and not remote:
        raise ConfigError(
            f"The notebook trains on a copy of the annotations without the model versions, so it cannot fine-tune "
            f"{config.finetune_from}: leave finetune_from out (the notebook trains from scratch), or fine-tune here "
            "(napari-seg-box train STORE --finetune-from latest)."
        )
    weights = Path(config.encoder_weights_file) if config.encoder_weights_file else None
    if weights is not None and (remote or not weights.is_file()):
        raise ConfigError(
            f"The settings start the encoder from {weights}, a file "
            + ("on this machine, which the notebook cannot read from the S3 store: " if remote else "that does not exist: ")
            + "leave encoder_weights_file out, or use pretrained=True (ImageNet weights, downloaded where the notebook runs)."
        )
    name = project_name(project)
    out_dir = Path(out_dir)
    paths = {"notebook": out_dir / f"train_{name}.ipynb"}
    if include_data and not remote:
        paths["data"] = out_dir / f"{name}-data.zip"
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} is a file: give a folder for the notebook.")
    taken = [p for p in paths.values() if p.exists()]
    if taken and not overwrite:
        raise DataError(
            f"{taken[0]} exists already.",
            hints={
                "python": "Pass overwrite=True to replace it, or choose another folder.",
                "cli": "Add --overwrite to replace it, or choose another --out folder.",
            },
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = config.to_dict()
    if weights is not None:
        settings["encoder_weights_file"] = f"{name}-weights/{weights.name}"
    if "data" in paths:
        _write_data_zip(project, name, paths["data"], [r.name for r in project.images() if r.split in SPLITS], weights)
    store_here = str(project.url) if remote else os.path.abspath(str(project.url))
    cells = notebook_cells(name, settings, package_spec, store_here, remote, _endpoint(project) if remote else None)
    _atomic_write(paths["notebook"], json.dumps(notebook_json(cells), indent=1, ensure_ascii=False) + "\n")
    return paths


# ---------------------------------------------------------------------- the data copy
def _write_data_zip(project, name: str, out: Path, images: list[str], weights: Path | None) -> None:
    """Copy the training part of ``project`` into a new store (public API only) and zip it."""
    from .store import Project

    with tempfile.TemporaryDirectory(prefix="segbox-notebook-") as tmp:
        folder = Path(tmp) / f"{name}.zarr"
        copy = Project.create(
            folder,
            classes=project.class_names,
            colors=[c.color for c in project.classes],
            pixel_size=project.pixel_size,
            unit=project.unit,
            task=project.task,
        )
        dense = []
        for image in images:
            rec = project.image_record(image)
            labels = project.get_labels(image)
            if labels is None or not any(rec.label_counts):
                continue  # nothing to learn from: it stays home
            origin = (rec.annotation or {}).get("origin")
            copy.add_image(
                image,
                project.get_image(image),
                labels=labels,
                instances=project.get_instances(image),
                split=rec.split,
                axes=rec.axes.upper(),
                pixel_size=rec.spacing,
                unit=rec.unit if rec.spacing else None,
                frame_interval=rec.frame_interval,
                time_unit=rec.time_unit,
                source=rec.source,
                image_class=rec.image_class,
                origin=origin if origin in ORIGINS else "imported",
            )
            if rec.unpainted_background:
                dense.append(image)
        if dense:
            copy.set_unpainted_background(dense)
        tmp_zip = out.with_name(out.name + ".part")
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    z.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
            if weights is not None:
                z.write(weights, f"{name}-weights/{weights.name}")
        os.replace(tmp_zip, out)


def _endpoint(project) -> str | None:
    """The S3 endpoint of a remote store (not a secret); keys are never read from here."""
    options = project.storage_options
    return options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
