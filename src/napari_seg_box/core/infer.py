"""Prediction with a model version: images of any size, stacks slice by slice (2.5D: with their neighbours).

A :class:`Predictor` is a model version loaded once (network, metadata, device). :func:`iter_predict`
normalises an image as the model was trained, pads axes shorter than a tile, and runs the band-by-band
tiled prediction of :mod:`.tiling`; :mod:`.infer_large` does the same for zarr / OME-Zarr / dask
images and volumes larger than memory.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import Config, as_config
from .data import normalize, pad_to_multiple
from .errors import ConfigError, DataError
from .events import Progress, check_cancel, run_to_end
from .layout import read_axes, to_canonical
from .onnx_backend import check_backend
from .planes import with_context
from .postprocess import PostprocessConfig, PostprocessResult, fold_boundary, postprocess
from .tiling import _predict_plane
from .versions import ModelVersion

TTA_MODES = ("none", "flips", "d4")


@dataclass(frozen=True)
class PredictConfig(Config):
    """Settings of tiled prediction.

    Parameters
    ----------
    tile_size : side of the square tiles in pixels (a multiple of 32).
    overlap : fraction of a tile shared with its neighbour, in [0, 0.9]: 0.25 default, 0.5 quality.
    batch_size : tiles sent to the device at once; ``None`` (default): 4 on the CPU, 16 on a GPU.
    blending : ``"gaussian"`` (nnU-Net importance map) or ``"constant"`` (plain average).
    sigma_scale : Gaussian sigma as a fraction of the tile size (0.125 as nnU-Net / MONAI).
    tta : test-time augmentation: ``"none"``, ``"flips"`` (identity, horizontal, vertical, both) or
        ``"d4"`` (all 8 flips and 90-degree rotations), averaged.
    device : ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    orthogonal : a volume is predicted along z, y and x (slices of each orientation) and the three
        averaged (orthogonal-plane fusion, as empanada does for isotropic EM): smoother 3D objects
        for near-isotropic voxels, three times the work. Not for anisotropic stacks or time-lapses
        (:func:`check_orthogonal`).
    backend : what runs the network: ``"torch"`` (default: the predictor as it was loaded), ``"onnx"``
        (ONNX Runtime on the CPU, ``pip install napari-seg-box[onnx]``; same probabilities to ~1e-5)
        or ``"auto"`` (ONNX Runtime on the CPU where installed, torch on a GPU); :mod:`.onnx_backend`.
    """

    tile_size: int = 256
    overlap: float = 0.25
    batch_size: int | None = None
    blending: str = "gaussian"
    sigma_scale: float = 0.125
    tta: str = "none"
    device: str = "auto"
    orthogonal: bool = False
    backend: str = "torch"
    format_version: int = 1

    WHAT = "prediction settings"

    def __post_init__(self):
        self._check_format()
        if isinstance(self.tta, bool):
            self._set("tta", "d4" if self.tta else "none")
        if int(self.tile_size) < 32 or int(self.tile_size) % 32:
            raise ConfigError(f"tile_size must be a positive multiple of 32 (got {self.tile_size}): try 256 or 512.")
        self._set("tile_size", int(self.tile_size))
        self._set("overlap", float(self.overlap))
        if not 0.0 <= float(self.overlap) <= 0.9:
            raise ConfigError(f"overlap must be between 0 and 0.9 (got {self.overlap}): 0.25 is the default, 0.5 the quality option.")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {self.batch_size}), or None for automatic.")
        if self.blending not in ("gaussian", "constant"):
            raise ConfigError(f"blending must be 'gaussian' or 'constant' (got {self.blending!r}).")
        if self.tta not in TTA_MODES:
            raise ConfigError(f"tta must be one of {', '.join(TTA_MODES)} (got {self.tta!r}).")
        if not 0 < float(self.sigma_scale) <= 1:
            raise ConfigError(f"sigma_scale must be in (0, 1] (got {self.sigma_scale}).")
        check_backend(self.backend)

    @classmethod
    def quality(cls, **kwargs) -> PredictConfig:
        """50 % overlap and flip test-time augmentation: slower, smoother."""
        kwargs.setdefault("overlap", 0.5)
        kwargs.setdefault("tta", "flips")
        return cls(**kwargs)


# ---------------------------------------------------------------------- the model side
def load_model(project, version=None, *, device=None):
    """Rebuild the network of a model version from the store: ``(model, ModelVersion)``.

    ``version``: an id, ``"latest"``/None, ``"best"``, or a :class:`~.versions.ModelVersion` already
    read. The model is in eval mode, on ``device`` (default: :func:`pick_device`). Reads the
    version's description (once per project handle) and its weights, checked against their SHA-256.
    """
    from safetensors.torch import load as load_bytes

    from .models import build_model, pick_device

    info = (version if isinstance(version, ModelVersion) else project.model_version(version)).require_task("segmentation")
    model = build_model(info.spec)
    model.load_state_dict(load_bytes(project.model_weights(info)))
    model.eval()
    model.to(device or pick_device())
    return model, info


def check_channels(info, channels: int) -> None:
    """Raise a clear error when data with ``channels`` channels cannot go into the model ``info``."""
    if channels not in (info.image_channels, info.in_channels):  # in_channels: a plane with its 2.5D context as channels
        raise DataError(
            f"Model version {info.version} expects {info.image_channels}-channel images but this image has {channels}: "
            "use a model trained on images like these, or convert the image (e.g. to grayscale)."
        )


@dataclass
class Predictor:
    """A model version loaded once, ready to predict: its network, its description and device.

    Workflows build one per run and pass it along (the store is read once). It knows the facts of
    its model: classes, normalisation, whether a boundary or distance output follows the classes, and the
    post-processing tuned for it (:meth:`postprocess` applies them). ``backend`` (:data:`~.onnx_backend.BACKENDS`)
    says what runs the network: torch, or ONNX Runtime on the CPU (:meth:`with_backend`).
    """

    model: Any
    info: ModelVersion
    device: Any = None
    backend: str = "torch"
    network: Any = field(init=False, repr=False)
    _variants: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        from .onnx_backend import build_network, resolve_backend

        self.backend = resolve_backend(self.backend, self.device)  # "auto" -> "torch" or "onnx"
        # what runs: batch norms folded, faster memory layout (torch), or the ONNX graph; ``model`` itself is left as it is
        self.network = build_network(self.model, self.device, self.backend, self.in_channels)
        self._variants = {self.backend: self}

    @classmethod
    def from_project(cls, project, version: str | ModelVersion | None = None, *, device: str = "auto", backend: str = "torch") -> Predictor:
        """Load ``version`` (default: newest; ``"best"`` for the best validation IoU) from ``project``,
        to run through ``backend`` (``"torch"``, ``"onnx"``, ``"auto"``)."""
        from .models import pick_device

        dev = pick_device(device)
        model, info = load_model(project, version, device=dev)
        return cls(model, info, dev, backend)

    def with_backend(self, backend: str) -> Predictor:
        """This predictor running through ``backend``: ``"torch"``, ``"onnx"`` (ONNX Runtime, CPU only;
        exported once, then cached on disk by the weights' SHA-256) or ``"auto"``. ``self`` when it
        already does; else a copy sharing the model, kept, so switching back and forth costs nothing."""
        from .onnx_backend import build_network, resolve_backend

        backend = resolve_backend(backend, self.device)
        if backend not in self._variants:
            other = copy.copy(self)  # shares ``_variants``
            other.backend, other.network = backend, build_network(self.model, self.device, backend, self.in_channels)
            self._variants[backend] = other
        return self._variants[backend]

    @property
    def in_channels(self) -> int:
        """The network's input channels (the image's times ``2 * context + 1``)."""
        return self.info.in_channels

    @property
    def image_channels(self) -> int:
        """The channels of the images it segments."""
        return self.info.image_channels

    @property
    def context(self) -> int:
        """2.5D input: the neighbouring planes on each side the network sees as channels (0: 2D)."""
        return self.info.context

    @property
    def outputs(self) -> int:
        """Channels of the probabilities: the classes, plus a last *boundary* or *distance* channel for such models."""
        return self.info.spec.classes

    @property
    def boundary(self) -> bool:
        """Whether the model also predicts object boundaries (the last probability channel)."""
        return self.info.boundary

    @property
    def distance(self) -> bool:
        """Whether the model also predicts the normalised distance to the object border (the last channel)."""
        return self.info.distance

    @property
    def classes(self) -> int:
        """The project's classes this model segments."""
        return self.info.n_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def percentiles(self) -> tuple[float, float]:
        return self.info.normalization.percentiles

    @property
    def version(self) -> str | None:
        return self.info.version

    @property
    def default_postprocess(self) -> PostprocessConfig:
        """The post-processing tuned for this model, else the defaults."""
        return self.info.postprocess

    def postprocess(self, probabilities: np.ndarray, config: PostprocessConfig | dict | None = None, **overrides) -> PostprocessResult:
        """:func:`~.postprocess.postprocess` with this model's facts (its boundary or distance output)
        and, by default, its tuned settings; ``config`` / keyword arguments replace settings, never facts."""
        config = self.default_postprocess if config is None else config
        return postprocess(probabilities, config, **self.info.output_facts, **overrides)

    def postprocess_volume(self, probabilities: np.ndarray, config: PostprocessConfig | dict | None = None, **kwargs) -> PostprocessResult:
        """:func:`~.volume.postprocess_volume` of (Z, outputs, Y, X) probabilities with this model's
        facts and, by default, its tuned settings: objects are 3D (``voxel_size=``, ``join=``)."""
        from .volume import postprocess_volume

        config = self.default_postprocess if config is None else config
        return postprocess_volume(probabilities, config, **self.info.output_facts, **kwargs)

    def objects(self, probabilities: np.ndarray, config: PostprocessConfig | dict | None = None, *, record=None) -> PostprocessResult:
        """Post-process a plane's (outputs, Y, X) or a stack's (Z, outputs, Y, X) probabilities the
        way the image is: a volume of the store (``record``, an :class:`~.manifest.ImageRecord`) gets
        3D objects with its voxel size (:meth:`postprocess_volume`); a time-lapse, or a stack whose
        kind is not known, plane by plane (object ids per plane, ``instance_classes`` keyed by
        ``(plane, id)``)."""
        if probabilities.ndim == 3:
            return self.postprocess(probabilities, config)
        if record is not None and record.is_stack and not record.is_timelapse:
            return self.postprocess_volume(probabilities, config, voxel_size=record.voxel_size)
        planes = [self.postprocess(p, config) for p in probabilities]
        result = PostprocessResult(np.stack([r.semantic for r in planes]), np.stack([r.instances for r in planes]))
        result.instance_classes = {(z, i): c for z, r in enumerate(planes) for i, c in r.instance_classes.items()}
        return result

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """Argmax project labels (1..K, uint8) of (outputs, Y, X) probabilities; a boundary counts as
        its object, a distance output is not a class."""
        probs = fold_boundary(probabilities) if self.boundary else probabilities[:-1] if self.distance else probabilities
        return (np.argmax(probs, axis=0) + 1).astype(np.uint8)


def as_predictor(model, *, version: str | None = None, info: ModelVersion | dict | None = None, device: str = "auto") -> Predictor:
    """Accept a :class:`Predictor`, a project store (loads ``version``), or a torch module with its
    :class:`~.versions.ModelVersion` (``info``; a ``model.json`` dict is read as one)."""
    if isinstance(model, Predictor):
        return model
    if hasattr(model, "model_version") and hasattr(model, "model_weights"):
        return Predictor.from_project(model, version, device=device)
    if info is None:
        raise ConfigError("Pass the model's description (info=ModelVersion) with a bare network, or pass the project store and a version.")
    import torch

    try:
        dev = next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        dev = torch.device("cpu")
    model.eval()
    return Predictor(model, info if isinstance(info, ModelVersion) else ModelVersion.from_json(info), dev)


# ---------------------------------------------------------------------- sources and sinks
def _channels_of(shape: Sequence[int]) -> int:
    return 1 if len(shape) == 2 else int(shape[2])


def _check_image(image_shape: Sequence[int], predictor: Predictor) -> None:
    if len(image_shape) < 2 or min(image_shape[:2]) < 1:
        raise DataError(f"The image is empty (shape {tuple(image_shape)}): nothing to predict.")
    check_channels(predictor.info, _channels_of(image_shape))


# ---------------------------------------------------------------------- in-memory prediction
def iter_predict(
    image: np.ndarray,
    model,
    *,
    version: str | None = None,
    info: ModelVersion | dict | None = None,
    config: PredictConfig | dict | None = None,
    stack: bool | None = None,
    channel_axis: int | None = None,
    cancel=None,
    **config_kwargs,
) -> Iterator[Any]:
    """Predict per-class probabilities of one image, or a stack slice by slice (a generator).

    Parameters
    ----------
    image : (Y, X) or (Y, X, C) array, or a (Z, Y, X[, C]) stack; any numeric dtype, any size.
    model : a :class:`Predictor`, a project store (with ``version``), or a torch module with ``info``.
    config : :class:`PredictConfig`; keyword arguments (``tile_size=...``) override its fields.
    stack, channel_axis : how a 3D array reads (:func:`~.layout.read_axes`: the same rule as the
        store; by default a short first axis is channels for a multichannel model, planes otherwise).
    cancel : ``threading.Event`` checked between tiles.

    Yields
    ------
    :class:`~.events.Progress` events (tiles done / total).

    Returns
    -------
    (K, Y, X) float32 probabilities, or (Z, K, Y, X) for a stack. A boundary model (trained with
    ``boundary=True``) adds a last channel, the probability of an object's boundary (K + 1 in all),
    a distance model the predicted normalised distance to the object border, in [0, 1];
    :meth:`Predictor.postprocess` uses it to split objects.
    """
    config = as_config(PredictConfig, config, config_kwargs)
    predictor = as_predictor(model, version=version, info=info, device=config.device)
    if channel_axis is None and stack is False and np.ndim(image) == 3 and np.shape(image)[-1] == predictor.in_channels:
        channel_axis = 2  # a plane with its 2.5D context as channels (:func:`~.planes.with_context`)
    layout = read_axes(np.shape(image), stack=stack, channel_axis=channel_axis, channels=predictor.image_channels)
    image = to_canonical(image, layout)
    if not layout.is_stack:
        return (yield from _predict_2d(image, predictor, config, cancel=cancel))
    if config.orthogonal:
        return (yield from _predict_orthogonal(image, predictor, config, cancel=cancel))
    return (yield from _predict_planes(image, predictor, config, cancel=cancel))


ORTHOGONAL_MAX_ANISOTROPY = 2.0  # orthogonal-plane fusion needs near-isotropic voxels (z spacing / pixel size)


def check_orthogonal(record, config) -> None:
    """Refuse orthogonal-plane fusion (``config.orthogonal``) for a store image it does not fit: a
    plane, a time-lapse (y-t slices are not images), or an anisotropic volume (its x-z slices look
    like nothing the model was trained on)."""
    if not config.orthogonal:
        return
    if not record.is_stack or record.is_timelapse:
        raise DataError(f"{record.name} is not a volume: orthogonal-plane fusion predicts volumes along z, y and x. Predict it without it.")
    sp = record.spacing
    if sp and len(sp) == 3 and sp[0] > ORTHOGONAL_MAX_ANISOTROPY * float(np.sqrt(sp[1] * sp[2])):
        raise DataError(
            f"{record.name} has sections {sp[0] / float(np.sqrt(sp[1] * sp[2])):.1f} times thicker than its pixels: its x-z and y-z "
            "slices look like nothing the model was trained on. Use orthogonal-plane fusion for near-isotropic volumes only."
        )


def _predict_orthogonal(volume: np.ndarray, predictor: Predictor, config: PredictConfig, *, cancel=None):
    """The mean of the predictions of a (Z, Y, X[, C]) volume sliced along z, y and x: (Z, K, Y, X)."""
    out = yield from _predict_planes(volume, predictor, config, cancel=cancel)
    for axis, back in ((1, (2, 1, 0, 3)), (2, (2, 1, 3, 0))):  # (Y, K, Z, X) and (X, K, Z, Y) back to (Z, K, Y, X)
        probs = yield from _predict_planes(np.moveaxis(volume, axis, 0), predictor, config, cancel=cancel)
        out += probs.transpose(back)
    out /= 3
    return out


def _predict_planes(image: np.ndarray, predictor: Predictor, config: PredictConfig, *, cancel=None):
    """(Z, K, Y, X) probabilities of a (Z, Y, X[, C]) stack, plane by plane (2.5D: with its neighbours)."""
    out = None
    for z in range(image.shape[0]):
        check_cancel(cancel)
        yield Progress(z, image.shape[0], stage="slices")
        plane = with_context(image, z, predictor.context)
        probs = yield from _predict_2d(plane, predictor, config, cancel=cancel, stage=f"slice {z + 1}/{image.shape[0]}")
        if out is None:
            out = np.empty((image.shape[0], *probs.shape), np.float32)
        out[z] = probs
    yield Progress(image.shape[0], image.shape[0], stage="slices")
    return out


def _predict_2d(image: np.ndarray, predictor: Predictor, config: PredictConfig, *, cancel=None, stage: str = "predict"):
    _check_image(image.shape, predictor)
    if config.backend != "torch":  # "torch" (the default) runs the predictor as loaded; its ONNX variant is built once
        predictor = predictor.with_backend(config.backend)
    if image.size == 0:
        raise DataError("The image is empty: nothing to predict.")
    if predictor.context and _channels_of(image.shape) != predictor.in_channels:  # a lone plane: its own context
        image = with_context(image, None, predictor.context)
    norm = normalize(image, percentiles=predictor.percentiles)
    h, w = norm.shape[:2]
    # an axis shorter than a tile: reflect-pad to a multiple of 32 (one tile along it), crop back after
    if h < config.tile_size or w < config.tile_size:
        norm, _ = pad_to_multiple(norm, 32)
    H, W = norm.shape[:2]
    out = np.empty((predictor.outputs, H, W), np.float32)

    def read_rows(y0, y1):
        return norm[y0:y1]

    def write_rows(y0, probs):
        out[:, y0 : y0 + probs.shape[1]] = probs

    yield from _predict_plane(predictor, read_rows, (H, W), norm.shape[2], write_rows, config, cancel=cancel, stage=stage)
    return out[:, :h, :w]


def predict(image: np.ndarray, model, **kwargs) -> np.ndarray:
    """Blocking :func:`iter_predict`: (K, Y, X) float32 probabilities (or (Z, K, Y, X) for a stack)."""
    return run_to_end(iter_predict(image, model, **kwargs))
