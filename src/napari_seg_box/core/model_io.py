"""Model versions in and out of a project: a version archive (``.segbox-model.zip``) and the
entry point that brings any model file into the store as a new version (:func:`import_model`).

A version archive is a zip of exactly what the store keeps of a version: ``model.json`` (a
:class:`~.versions.ModelVersion`) and ``weights.safetensors``, plus a small ``segbox-archive.json``
that names the format. It is how a model trained elsewhere (a training notebook on a GPU in the
cloud, another lab's project) comes back into a store; bioimage.io packages (:mod:`.bioimageio_import`)
come in through the same :func:`import_model`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path

from .errors import DataError
from .versions import ModelVersion

ARCHIVE_FORMAT = "napari-seg-box model version"
ARCHIVE_MARKER = "segbox-archive.json"


def export_version_archive(project, version: str | None, out: str | os.PathLike) -> Path:
    """Write model ``version`` of ``project`` (an id, ``latest``/None, ``best``) as a version archive
    at ``out`` (a ``.zip`` path, or a folder that receives ``<project>-<version>.segbox-model.zip``).
    The weights are checked against their checksum first: a damaged version is never exported."""
    mv = project.model_version(version)
    weights = project.model_weights(mv)  # raises on a checksum mismatch
    out = Path(out)
    if out.suffix.lower() != ".zip":
        out.mkdir(parents=True, exist_ok=True)
        out = out / f"{Path(str(project.url).rstrip('/')).stem}-{mv.version}.segbox-model.zip"
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
    from .. import __version__

    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(ARCHIVE_MARKER, json.dumps({"format": ARCHIVE_FORMAT, "napari_seg_box": __version__, "version": mv.version}))
        z.writestr("model.json", json.dumps(mv.to_json(), indent=2))
        z.writestr("weights.safetensors", weights)
    os.replace(tmp, out)
    return out


def read_version_archive(path: str | os.PathLike) -> tuple[ModelVersion, bytes]:
    """The :class:`ModelVersion` and weights of a version archive, checked (checksum, loadable weights)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if not {"model.json", "weights.safetensors"} <= names:
                raise DataError(f"{path} is not a napari-seg-box model archive (it lacks model.json or weights.safetensors).")
            mv = ModelVersion.from_json(json.loads(z.read("model.json")))
            weights = z.read("weights.safetensors")
    except zipfile.BadZipFile as err:
        raise DataError(f"{path} is not a zip file ({err}): give a .segbox-model.zip or a bioimage.io package.") from err
    if mv.weights_sha256 and hashlib.sha256(weights).hexdigest() != mv.weights_sha256:
        raise DataError(f"The weights in {path} are damaged (checksum mismatch): export the model again.")
    _check_loads(mv, weights, path)
    return mv, weights


def is_version_archive(path: str | os.PathLike) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return {"model.json", "weights.safetensors"} <= set(z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _has_rdf(path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(n.endswith(("rdf.yaml", "bioimageio.yaml", "model.yaml")) for n in z.namelist())


def import_model(project, path: str | os.PathLike) -> ModelVersion:
    """Bring a model into ``project`` as a new version (status ``imported``): a version archive
    (:func:`export_version_archive`, e.g. from a training notebook) or a bioimage.io model package
    (zip or ``rdf.yaml``) whose network is a segmentation-models-pytorch U-Net. Its classes must
    match the project's. Returns the saved version."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"No model file at {path}: give a .segbox-model.zip, a bioimage.io package (.zip) or its rdf.yaml.")
    if path.is_file() and is_version_archive(path):
        mv, weights = read_version_archive(path)
    elif path.is_dir() or (zipfile.is_zipfile(path) and not _has_rdf(path)):
        raise DataError(
            f"{path} is neither a napari-seg-box model archive (model.json + weights.safetensors) nor a bioimage.io package "
            "(rdf.yaml): give a .segbox-model.zip, a bioimage.io .zip or its rdf.yaml."
        )
    else:
        from .bioimageio_import import read_package

        mv, weights = read_package(path)
    _check_fits(project, mv, path)
    origin = f"{path}" + (f" ({mv.version} there)" if mv.version else "")
    imported = dataclasses.replace(
        mv,
        training=dataclasses.replace(mv.training, status="imported"),
        provenance=dataclasses.replace(mv.provenance, imported_from=origin),
        version=None,
    )
    return project.save_model_version(weights, imported)


def _check_fits(project, mv: ModelVersion, path) -> None:
    if mv.task != project.task:
        raise DataError(
            f"{path} holds a {mv.task} model but {project.url} is a {project.task} project: import it into a {mv.task} project."
        )
    ours = tuple(project.class_names)
    if mv.task == "segmentation" and tuple(mv.class_names) != ours[: len(mv.class_names)]:
        raise DataError(
            f"The model in {path} segments the classes {', '.join(mv.class_names)} but the project's are {', '.join(ours)}: "
            "import it into a project with the same classes (napari-seg-box init --classes ...)."
        )


def _check_loads(mv: ModelVersion, weights: bytes, path) -> None:
    """The weights must fit the network the description builds (a clear error now, not at prediction)."""
    from safetensors.torch import load as load_bytes

    from .models import build_model

    try:
        build_model(mv.spec).load_state_dict(load_bytes(weights))
    except Exception as err:  # noqa: BLE001 - any mismatch is the same message to the user
        raise DataError(f"The weights in {path} do not fit the network its description names ({type(err).__name__}: {err}).") from err
