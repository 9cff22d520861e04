"""Read a bioimage.io model package whose network is a segmentation-models-pytorch U-Net into a
:class:`~.versions.ModelVersion` and its weights (for :func:`~.model_io.import_model`).

A package exported by napari-seg-box carries its version's ``model.json`` as an attachment and comes
back exactly (classes, normalisation, training history, tuned post-processing). Another package is
accepted when its ``pytorch_state_dict`` architecture is ``segmentation_models_pytorch.Unet`` (or
this project's :class:`~.bioimageio_arch.UnetWithDistance`) with an encoder this project builds:
its classes come from the output channel names, its normalisation from the ``scale_range``
pre-processing. Anything else is refused with an error that names the architecture.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from .bioimageio_export import require_bioimageio
from .errors import DataError
from .models import ENCODERS, ModelSpec
from .versions import ModelVersion, Normalization, Training


def read_package(path: str | os.PathLike) -> tuple[ModelVersion, bytes]:
    """The :class:`ModelVersion` and safetensors weights of the bioimage.io package at ``path`` (a
    ``.zip`` or an ``rdf.yaml``/``bioimageio.yaml``), checked offline."""
    require_bioimageio()
    from bioimageio.spec import InvalidDescr, load_model_description

    try:
        descr = load_model_description(str(path), perform_io_checks=True)
    except Exception as err:  # noqa: BLE001 - a damaged file, a wrong format: one message
        raise DataError(f"{path} is not a readable bioimage.io model package ({type(err).__name__}: {err}).") from err
    if isinstance(descr, InvalidDescr):
        raise DataError(
            f"{path} is not a valid bioimage.io model package:\n{descr.validation_summary.display() or descr.validation_summary}"
        )
    if str(descr.format_version).split(".")[:2] != ["0", "5"]:
        raise DataError(f"{path} uses bioimage.io model spec {descr.format_version}: napari-seg-box imports spec 0.5 packages.")
    sd = descr.weights.pytorch_state_dict
    if sd is None:
        have = [f for f in ("torchscript", "onnx", "tensorflow_saved_model_bundle", "keras_hdf5") if getattr(descr.weights, f, None)]
        raise DataError(
            f"{path} has no pytorch_state_dict weights (it has {', '.join(have) or 'none'}): napari-seg-box needs them to rebuild the network."
        )
    arch = sd.architecture
    callable_ = str(arch.callable)
    where = getattr(arch, "import_from", None) or Path(str(getattr(arch, "source", "?"))).name
    known = (where == "segmentation_models_pytorch" and callable_ == "Unet") or (callable_ == "UnetWithDistance")
    if not known:
        raise DataError(
            f"{path} is built by {callable_} from {where}: napari-seg-box can only import segmentation-models-pytorch U-Nets "
            "(segmentation_models_pytorch.Unet)."
        )
    kwargs = dict(arch.kwargs)
    encoder = kwargs.get("encoder_name", "resnet34")
    if encoder not in ENCODERS:
        raise DataError(f"{path} uses the encoder {encoder!r}, which napari-seg-box does not build (it builds {', '.join(ENCODERS)}).")
    spec = ModelSpec(
        encoder=encoder,
        in_channels=int(kwargs.get("in_channels", 3)),
        classes=int(kwargs.get("classes", 1)),
        encoder_depth=int(kwargs.get("encoder_depth", 5)),
        decoder_channels=tuple(kwargs.get("decoder_channels", (256, 128, 64, 32, 16))),
    )
    mv = _our_description(descr) or _described(descr, spec, distance=callable_ == "UnetWithDistance")
    if mv.spec != spec:
        raise DataError(f"{path}: its model.json attachment describes another network than its weights ({mv.spec} vs {spec}).")
    return mv, _weights_bytes(descr, spec)


def _our_description(descr) -> ModelVersion | None:
    """The ``model.json`` attachment of a package napari-seg-box exported, else None."""
    from bioimageio.spec.utils import download

    for att in descr.attachments or ():
        if Path(str(att.source)).name == "model.json":
            return ModelVersion.from_json(json.loads(download(att.source).read()))
    return None


def _described(descr, spec: ModelSpec, *, distance: bool) -> ModelVersion:
    """A ModelVersion from the package's own fields (a package of another tool)."""
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise DataError(
            f"{descr.name} has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs: napari-seg-box imports one of each."
        )
    out_names = [str(n) for ax in descr.outputs[0].axes if getattr(ax, "type", None) == "channel" for n in ax.channel_names]
    n_classes = spec.classes - distance
    names = out_names[:n_classes] if len(out_names) >= n_classes else [f"class {i + 1}" for i in range(n_classes)]
    boundary = names[-1].lower() == "boundary" and n_classes > 2
    if boundary:
        names = names[:-1]
    percentiles = (1.0, 99.8)
    for step in descr.inputs[0].preprocessing:
        if getattr(step, "id", None) == "scale_range":
            percentiles = (float(step.kwargs.min_percentile), float(step.kwargs.max_percentile))
    return ModelVersion(
        spec,
        tuple(names),
        boundary_width=2 if boundary else None,
        distance=distance,
        normalization=Normalization("percentile", percentiles),
        training=Training(config={"source": "bioimage.io", "name": descr.name}),
    )


def _weights_bytes(descr, spec: ModelSpec) -> bytes:
    """The state dict of the package, loaded safely (``weights_only``) into the network, as safetensors bytes."""
    import torch
    from bioimageio.spec.utils import download

    from .models import build_model, weights_to_bytes

    data = download(descr.weights.pytorch_state_dict.source).read()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a pickle with code in it, a damaged file
        raise DataError(f"The pytorch_state_dict weights of {descr.name} cannot be read safely ({type(err).__name__}: {err}).") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model = build_model(spec)
    try:
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"The weights of {descr.name} do not fit the U-Net its description names ({type(err).__name__}: {err}).") from err
    return weights_to_bytes(model)
