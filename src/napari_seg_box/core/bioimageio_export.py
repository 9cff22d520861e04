"""Export a model version as a bioimage.io model package (spec 0.5), readable by deepImageJ,
ilastik, QuPath, BiaPy and the bioimage.io tools.

The package holds the weights in three formats (``pytorch_state_dict`` with the
segmentation-models-pytorch U-Net and its keyword arguments as the architecture, ``torchscript``,
``onnx``), the model's normalisation as pre-processing (``scale_range`` with its percentiles, per
image and channel), softmax (sigmoid for one output) as post-processing, a test input cut from a real
image of the project with the output this project's predictor gives for it, a cover, a README with the
training data, settings and held-out figures, and as attachments the version's whole description
(``model.json``, from which :func:`~.bioimageio_import.read_package` restores it exactly) and its
tuned post-processing. A model with a distance output ships the small network file
:mod:`.bioimageio_arch` instead, whose output already holds the probabilities.

Needs the optional extra ``napari-seg-box[bioimageio]`` (bioimageio.core, onnx).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from .errors import ConfigError, DataError
from .versions import ModelVersion

WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
CITATIONS = (
    (
        "Ronneberger, Fischer and Brox (2015). U-Net: convolutional networks for biomedical image segmentation.",
        "10.1007/978-3-319-24574-4_28",
    ),
    ("Iakubovskii, P. Segmentation Models PyTorch.", "https://github.com/qubvel-org/segmentation_models.pytorch"),
)


def require_bioimageio():
    """The bioimageio.spec model module, or a clear error saying how to install it."""
    try:
        import bioimageio.core  # noqa: F401
        from bioimageio.spec.model import v0_5
    except ImportError as err:
        raise ConfigError(
            f"bioimage.io support needs the optional packages ({err.name} is missing): pip install 'napari-seg-box[bioimageio]'."
        ) from err
    return v0_5


def export_package(
    project,
    out: str | os.PathLike,
    *,
    version: str | None = None,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str | dict] = (),
    license: str = "CC-BY-4.0",
    cite: Sequence[tuple[str, str]] = (),
    weight_formats: Sequence[str] = WEIGHT_FORMATS,
    image: str | None = None,
) -> Path:
    """Write model ``version`` of ``project`` as a bioimage.io package ``out`` (a ``.zip``).

    ``authors``: names, or dicts with ``name``, ``affiliation``, ``orcid``, ``github_user``;
    ``cite``: (text, DOI or URL) pairs added to the U-Net and segmentation-models-pytorch entries;
    ``image``: the project image the test tensors are cut from (default: the first test image, else
    validation, else training image). The weights are checked against their checksum first.
    """
    v = require_bioimageio()
    mv = project.model_version(version).require_task("segmentation")
    if mv.context:
        raise ConfigError(
            f"Model version {mv.version} reads neighbouring slices as channels (2.5D): bioimage.io export of such models "
            "is not supported yet. Export a 2D model (trained with --context 0)."
        )
    if mv.normalization.kind != "percentile":
        raise ConfigError(
            f"Model version {mv.version} uses a {mv.normalization.kind} normalisation that bioimage.io export cannot express."
        )
    unknown = set(weight_formats) - set(WEIGHT_FORMATS)
    if unknown or not weight_formats:
        raise ConfigError(f"Unknown weight format(s) {sorted(unknown) or '(none given)'}: choose from {', '.join(WEIGHT_FORMATS)}.")
    weights = project.model_weights(mv)  # raises on a checksum mismatch: a damaged model is never exported
    net = _network(mv, weights)
    out = Path(out)
    if out.suffix.lower() != ".zip":
        out = out.with_suffix(".zip") if out.suffix else out / f"{_slug(name or _default_name(project, mv))}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x = _test_input(project, mv, image)
        y = _reference_output(net, mv, x)
        np.save(tmp / "test_input.npy", x)
        np.save(tmp / "test_output.npy", y)
        tifffile.imwrite(tmp / "sample_input.tif", x[0])
        tifffile.imwrite(tmp / "sample_output.tif", y[0])
        _write_cover(tmp / "cover.png", x, y, mv)
        (tmp / "README.md").write_text(_readme(project, mv, name or _default_name(project, mv)), encoding="utf-8")
        (tmp / "model.json").write_text(json.dumps(mv.to_json(), indent=2))
        attachments = [v.FileDescr(source=tmp / "model.json")]
        if mv.tuning is not None:
            (tmp / "postprocessing.json").write_text(json.dumps(mv.tuning.to_dict(), indent=2))
            attachments.append(v.FileDescr(source=tmp / "postprocessing.json"))
        descr = v.ModelDescr(
            name=name or _default_name(project, mv),
            description=description or _default_description(mv),
            authors=[_author(v, a) for a in (authors or ["napari-seg-box user"])],
            cite=[_cite_entry(v, text, ref) for text, ref in (*CITATIONS, *cite)],
            license=license,
            documentation=v.FileDescr(source=tmp / "README.md"),
            covers=[v.FileDescr(source=tmp / "cover.png")],
            tags=["segmentation", "2d", "unet", "napari-seg-box", mv.encoder, *[_slug(c) for c in mv.class_names]],
            inputs=[_input_descr(v, mv, tmp)],
            outputs=[_output_descr(v, mv, tmp)],
            weights=_weights(v, net, mv, x, tmp, weight_formats),
            attachments=attachments,
            config={"napari_seg_box": {"model_version": mv.version, "project": str(project.url), "classes": list(mv.class_names)}},
        )
        from bioimageio.core import save_bioimageio_package

        part = out.with_name(out.name + ".part.zip")
        save_bioimageio_package(descr, output_path=part)
        os.replace(part, out)
    return out


def _network(mv: ModelVersion, weights: bytes):
    """The version's network in eval mode on the CPU: the plain smp U-Net, or (distance models) the
    :class:`~.bioimageio_arch.UnetWithDistance` that applies its activations itself."""
    from safetensors.torch import load as load_bytes

    from .bioimageio_arch import UnetWithDistance
    from .models import build_model

    state = load_bytes(weights)
    net = UnetWithDistance(mv.n_classes, **_smp_kwargs(mv)) if mv.distance else build_model(mv.spec)
    net.load_state_dict(state)
    return net.eval()


def _smp_kwargs(mv: ModelVersion) -> dict:
    s = mv.spec
    return {
        "encoder_name": s.encoder,
        "encoder_weights": None,
        "encoder_depth": s.encoder_depth,
        "decoder_channels": list(s.decoder_channels),
        "in_channels": s.in_channels,
        "classes": s.classes,
    }


def _test_input(project, mv: ModelVersion, name: str | None) -> np.ndarray:
    """(1, C, Y, X) float32 raw intensities: the centre of a real project image, at most 512 px a side,
    sides a multiple of the network's stride."""
    if name is None:
        records = [r for split in ("test", "validation", "train") for r in project.images(split) if not r.is_stack]
        if not records:
            raise DataError("The project has no 2D image to cut the package's test input from: import one (napari-seg-box import).")
        name = records[0].name
    image = np.asarray(project.get_image(name))
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise DataError(f"The test input image {name!r} is not a 2D image (shape {image.shape}): choose a 2D image.")
    step = 2**mv.spec.encoder_depth
    size = [min(512, n) // step * step for n in image.shape[:2]]
    if min(size) < step:
        raise DataError(
            f"The image {name!r} ({image.shape[0]}x{image.shape[1]} px) is smaller than the network's {step} px: choose another."
        )
    y0, x0 = ((n - s) // 2 for n, s in zip(image.shape[:2], size))
    crop = image[y0 : y0 + size[0], x0 : x0 + size[1]]
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None].astype(np.float32))


def _reference_output(net, mv: ModelVersion, x: np.ndarray) -> np.ndarray:
    """What this project's predictor computes for ``x`` (one tile, no blending): percentile
    normalisation as trained, the network, then softmax/sigmoid (inside ``net`` for distance models)."""
    import torch

    from .data import normalize

    normed = normalize(x[0].transpose(1, 2, 0), percentiles=mv.normalization.percentiles).transpose(2, 0, 1)[None]
    with torch.inference_mode():
        out = net(torch.from_numpy(np.ascontiguousarray(normed)))
        if not mv.distance:
            out = torch.sigmoid(out) if out.shape[1] == 1 else torch.softmax(out, dim=1)
    return out.numpy().astype(np.float32)


def _input_descr(v, mv: ModelVersion, tmp: Path):
    step = 2**mv.spec.encoder_depth
    lo, hi = mv.normalization.percentiles
    channels = [v.Identifier(f"channel{i}") for i in range(mv.in_channels)]
    return v.InputTensorDescr(
        id=v.TensorId(INPUT_ID),
        description="the image, raw intensities (any number type; converted to float32 and percentile-normalised per channel)",
        axes=[
            v.BatchAxis(),
            v.ChannelAxis(channel_names=channels),
            v.SpaceInputAxis(id=v.AxisId("y"), size=v.ParameterizedSize(min=step, step=step)),
            v.SpaceInputAxis(id=v.AxisId("x"), size=v.ParameterizedSize(min=step, step=step)),
        ],
        test_tensor=v.FileDescr(source=tmp / "test_input.npy"),
        sample_tensor=v.FileDescr(source=tmp / "sample_input.tif"),
        data=v.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            v.EnsureDtypeDescr(kwargs=v.EnsureDtypeKwargs(dtype="float32")),
            v.ScaleRangeDescr(kwargs=v.ScaleRangeKwargs(axes=[v.AxisId("y"), v.AxisId("x")], min_percentile=lo, max_percentile=hi)),
        ],
    )


def _output_descr(v, mv: ModelVersion, tmp: Path):
    names = list(mv.class_names) + (["boundary"] if mv.boundary else []) + (["distance"] if mv.distance else [])
    ref = {"tensor_id": v.TensorId(INPUT_ID)}
    post = []
    if not mv.distance:  # a distance model's network applies its activations itself
        post = [v.SigmoidDescr()] if mv.spec.classes == 1 else [v.SoftmaxDescr(kwargs=v.SoftmaxKwargs(axis=v.AxisId("channel")))]
    return v.OutputTensorDescr(
        id=v.TensorId(OUTPUT_ID),
        description="per-class probabilities"
        + (", then the boundary class" if mv.boundary else "")
        + (", then the normalised distance to the object border (0..1)" if mv.distance else ""),
        axes=[
            v.BatchAxis(),
            v.ChannelAxis(channel_names=[v.Identifier(_slug(n)) for n in names]),
            v.SpaceOutputAxis(id=v.AxisId("y"), size=v.SizeReference(axis_id=v.AxisId("y"), **ref)),
            v.SpaceOutputAxis(id=v.AxisId("x"), size=v.SizeReference(axis_id=v.AxisId("x"), **ref)),
        ],
        test_tensor=v.FileDescr(source=tmp / "test_output.npy"),
        sample_tensor=v.FileDescr(source=tmp / "sample_output.tif"),
        data=v.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=post,
    )


def _weights(v, net, mv: ModelVersion, x: np.ndarray, tmp: Path, formats: Sequence[str]):
    import torch

    version = v.Version(torch.__version__.split("+")[0])
    if mv.distance:
        arch = v.ArchitectureFromFileDescr(
            source=Path(__file__).with_name("bioimageio_arch.py"),
            callable=v.Identifier("UnetWithDistance"),
            kwargs={"n_classes": mv.n_classes, **_smp_kwargs(mv)},
        )
    else:
        arch = v.ArchitectureFromLibraryDescr(
            import_from="segmentation_models_pytorch", callable=v.Identifier("Unet"), kwargs=_smp_kwargs(mv)
        )
    torch.save(net.state_dict(), tmp / "weights.pt")
    found = {"pytorch_state_dict": v.PytorchStateDictWeightsDescr(source=tmp / "weights.pt", architecture=arch, pytorch_version=version)}
    example = torch.from_numpy(x[:, :, : 2**mv.spec.encoder_depth * 2, : 2**mv.spec.encoder_depth * 2].copy())
    if "torchscript" in formats:
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(net, example, check_trace=False)
        traced.save(str(tmp / "weights.torchscript.pt"))
        found["torchscript"] = v.TorchscriptWeightsDescr(
            source=tmp / "weights.torchscript.pt", pytorch_version=version, parent="pytorch_state_dict"
        )
    if "onnx" in formats:
        from .onnx_backend import export_onnx

        path = export_onnx(net, mv.in_channels, tmp / "weights.onnx")
        import onnx

        opset = max(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))
        found["onnx"] = v.OnnxWeightsDescr(source=path, opset_version=opset, parent="pytorch_state_dict")
    if "pytorch_state_dict" not in formats:
        raise ConfigError("A bioimage.io package of napari-seg-box always carries pytorch_state_dict weights: add it to the formats.")
    return v.WeightsDescr(**found)


def _write_cover(path: Path, x: np.ndarray, y: np.ndarray, mv: ModelVersion) -> None:
    """A 2:1 cover: the test input (first channel, normalised) beside the predicted classes in colour."""
    from skimage.color import label2rgb
    from skimage.io import imsave

    from .data import normalize

    gray = np.clip(normalize(x[0, 0]), 0, 1)[..., 0]
    probs = y[0, : mv.n_classes + mv.boundary]
    labels = np.argmax(probs, axis=0)
    labels = np.where(labels == mv.n_classes, 0, labels)  # a boundary is drawn as background
    overlay = label2rgb(labels, image=gray, bg_label=0, alpha=0.45)
    both = np.concatenate([np.repeat(gray[..., None], 3, axis=2), overlay], axis=1)
    imsave(path, (np.clip(both, 0, 1) * 255).astype(np.uint8), check_contrast=False)


def _readme(project, mv: ModelVersion, name: str) -> str:
    from .evaluate import list_evaluations

    cfg = dict(mv.training.config)
    best = _settings_words(mv.best)
    lines = [
        f"# {name}",
        "",
        _default_description(mv),
        "",
        "## How to use it",
        "",
        "Input: one 2D image (batch, channel, y, x) of any size whose sides are multiples of "
        f"{2**mv.spec.encoder_depth} px (tile larger images), raw intensities; the package normalises each channel "
        f"between its {mv.normalization.percentiles[0]} and {mv.normalization.percentiles[1]} percentiles. Output: "
        f"per-pixel probabilities of {', '.join(mv.class_names)}"
        + (" and of the boundary between touching objects" if mv.boundary else "")
        + (" and the normalised distance to the object border" if mv.distance else "")
        + ". The label of a pixel is the class of highest probability. In napari-seg-box "
        "(`napari-seg-box import-model STORE this.zip`), the tuned object post-processing (attached as "
        "postprocessing.json) splits touching objects.",
        "",
        "## Training data",
        "",
        f"- project: {project.url}",
        f"- classes: {', '.join(mv.class_names)}",
        f"- training images ({len(mv.provenance.train_images)}): {', '.join(mv.provenance.train_images[:20])}"
        + (" ..." if len(mv.provenance.train_images) > 20 else ""),
        f"- validation images ({len(mv.provenance.validation_images)}): {', '.join(mv.provenance.validation_images[:20])}",
        f"- pixel size: {project.pixel_size} {project.unit}" if project.pixel_size else "- pixel size: not recorded",
        "",
        "## Training settings",
        "",
        f"- network: U-Net (segmentation-models-pytorch), encoder {mv.encoder}, depth {mv.spec.encoder_depth}, "
        f"decoder channels {list(mv.spec.decoder_channels)}, {mv.in_channels} input channel(s), {mv.spec.classes} outputs",
        f"- epochs run: {mv.training.epochs_run} ({mv.training.status}); best epoch: {best}",
        *[f"- {k}: {cfg[k]}" for k in sorted(cfg) if not isinstance(cfg[k], (dict, list)) and cfg[k] is not None and k != "format_version"],
        f"- chosen automatically: {_settings_words(mv.training.chosen)}",
        f"- trained on {mv.training.device or 'unknown device'} in {mv.training.duration_s / 60:.1f} min",
        "",
        "## Validation",
        "",
    ]
    evaluations = [e for e in list_evaluations(project) if e.get("model_version") == mv.version]
    if not evaluations:
        lines.append("Not evaluated on held-out images yet (napari-seg-box evaluate STORE --version ...).")
    for ev in evaluations[-1:]:
        px = ev.get("pixel") or {}
        lines.append(f"On {ev.get('n_images')} {ev.get('split')} image(s) ({', '.join(ev.get('images') or [])}), {ev.get('created')}:")
        lines.append(f"- pixel accuracy {_r(px.get('accuracy'))}, mean IoU {_r(px.get('mean_iou'))}, mean Dice {_r(px.get('mean_dice'))}")
        for cls, m in (px.get("per_class") or {}).items():
            lines.append(
                f"- {cls}: IoU {_r(m.get('iou'))}, Dice {_r(m.get('dice'))}, precision {_r(m.get('precision'))}, recall {_r(m.get('recall'))}"
            )
        for cls, o in (ev.get("objects") or {}).items():
            lines.append(
                f"- {cls} objects: {o.get('n_pred')} found for {o.get('n_true')} true; F1@0.5 {_r(o.get('f1@0.5'))}, "
                f"precision@0.5 {_r(o.get('precision@0.5'))}, recall@0.5 {_r(o.get('recall@0.5'))}, F1@0.75 {_r(o.get('f1@0.75'))}"
            )
    if mv.tuning is not None:
        lines += [
            "",
            "## Tuned post-processing",
            "",
            f"{_settings_words(mv.tuning.to_dict()['config'])} (score {_r(mv.tuning.score)} {mv.tuning.metric or ''})",
        ]
    lines += ["", "Exported by napari-seg-box."]
    return "\n".join(str(s) for s in lines) + "\n"


def _r(value):
    """A figure for people: floats to 3 significant digits, anything else as it is."""
    return float(f"{value:.3g}") if isinstance(value, float) else value


def _settings_words(settings) -> str:
    """'threshold 0.6, min_size 10, ...' (no format_version)."""
    return ", ".join(f"{k} {_r(v)}" for k, v in dict(settings).items() if k != "format_version")


def _default_name(project, mv: ModelVersion) -> str:
    stem = Path(str(project.url).rstrip("/")).stem or "project"
    return f"{stem} {mv.version} U-Net ({', '.join(mv.class_names[1:] or mv.class_names)})"


def _default_description(mv: ModelVersion) -> str:
    return (
        f"A 2D U-Net ({mv.encoder} encoder) trained with napari-seg-box to segment {', '.join(mv.class_names)}"
        + (" (with a boundary class for touching objects)" if mv.boundary else "")
        + (" (with a distance-to-border output for splitting touching objects)" if mv.distance else "")
        + "."
    )


def _author(v, author: str | dict):
    fields = {"name": author} if isinstance(author, str) else dict(author)
    try:
        return v.Author(**fields)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - bioimageio.spec looks a GitHub user name up online
        raise ConfigError(
            f"Could not check the GitHub user name {fields.get('github_user')!r} of {fields.get('name')} ({type(err).__name__}): "
            "this machine seems offline; leave the GitHub user name out, or export when online."
        ) from err


def _cite_entry(v, text: str, ref: str):
    ref = str(ref)
    return v.CiteEntry(text=text, url=ref) if ref.startswith("http") else v.CiteEntry(text=text, doi=v.Doi(ref))


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(text).strip().lower()).strip("-")
    return out or "x"


def check_package(path: str | os.PathLike, *, weight_format: str | None = None) -> dict:
    """Run bioimage.io's own ``test_model`` on a package (offline): ``{"status", "tests": [(status, name)],
    "errors": [...]}``; status ``passed`` when the package validates and every weight format
    reproduces its test output."""
    require_bioimageio()
    from bioimageio.core import test_model

    summary = test_model(str(path), weight_format=weight_format)
    return {
        "status": summary.status,
        "tests": [(d.status, d.name) for d in summary.details],
        "errors": [f"{d.name}: {e.msg}" for d in summary.details for e in (d.errors or ())],
    }
