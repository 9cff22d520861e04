"""Prediction with a model version: images of any size, stacks slice by slice, arrays larger than memory.

A :class:`Predictor` is a model version loaded once (network, metadata, device). :func:`iter_predict`
normalises an image as the model was trained, pads axes shorter than a tile, and runs the band-by-band
tiled prediction of :mod:`.tiling`; :func:`iter_predict_large` does the same for a zarr / OME-Zarr /
dask image, reading and writing band by band, so any height fits in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import Config, as_config
from .data import normalize, pad_to_multiple, percentile_bounds, scale
from .errors import ConfigError, DataError
from .events import Message, Progress, check_cancel, run_to_end
from .io import open_array
from .layout import read_axes, to_canonical
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
    """

    tile_size: int = 256
    overlap: float = 0.25
    batch_size: int | None = None
    blending: str = "gaussian"
    sigma_scale: float = 0.125
    tta: str = "none"
    device: str = "auto"
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
    if channels != info.in_channels:
        raise DataError(
            f"Model version {info.version} expects {info.in_channels}-channel images but this image has {channels}: "
            "use a model trained on images like these, or convert the image (e.g. to grayscale)."
        )


@dataclass
class Predictor:
    """A model version loaded once, ready to predict: its network, its description and device.

    Workflows build one per run and pass it along (the store is read once). It knows the facts of
    its model: classes, normalisation, whether a boundary or distance output follows the classes, and the
    post-processing tuned for it (:meth:`postprocess` applies them).
    """

    model: Any
    info: ModelVersion
    device: Any = None
    network: Any = field(init=False, repr=False)

    def __post_init__(self):
        from .models import inference_network

        # what runs: batch norms folded, faster memory layout; ``model`` itself is left as it is
        self.network = inference_network(self.model, self.device)

    @classmethod
    def from_project(cls, project, version: str | ModelVersion | None = None, *, device: str = "auto") -> Predictor:
        """Load ``version`` (default: newest; ``"best"`` for the best validation IoU) from ``project``."""
        from .models import pick_device

        dev = pick_device(device)
        model, info = load_model(project, version, device=dev)
        return cls(model, info, dev)

    @property
    def in_channels(self) -> int:
        return self.info.in_channels

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
    layout = read_axes(np.shape(image), stack=stack, channel_axis=channel_axis, channels=predictor.in_channels)
    image = to_canonical(image, layout)
    if not layout.is_stack:
        return (yield from _predict_2d(image, predictor, config, cancel=cancel))
    out = None
    for z in range(image.shape[0]):
        check_cancel(cancel)
        yield Progress(z, image.shape[0], stage="slices")
        probs = yield from _predict_2d(np.asarray(image[z]), predictor, config, cancel=cancel, stage=f"slice {z + 1}/{image.shape[0]}")
        if out is None:
            out = np.empty((image.shape[0], *probs.shape), np.float32)
        out[z] = probs
    yield Progress(image.shape[0], image.shape[0], stage="slices")
    return out


def _predict_2d(image: np.ndarray, predictor: Predictor, config: PredictConfig, *, cancel=None, stage: str = "predict"):
    _check_image(image.shape, predictor)
    if image.size == 0:
        raise DataError("The image is empty: nothing to predict.")
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


# ---------------------------------------------------------------------- larger-than-memory prediction
def iter_predict_large(
    source,
    out,
    model,
    *,
    version: str | None = None,
    info: ModelVersion | dict | None = None,
    config: PredictConfig | dict | None = None,
    write_probabilities: bool = True,
    probability_dtype: str = "float16",
    chunk: int = 1024,
    cancel=None,
    **config_kwargs,
) -> Iterator[Any]:
    """Predict a 2D image stored as zarr / OME-Zarr / dask, band by band, into a zarr group.

    Memory stays bounded: the input is read one tile-row band at a time and finished rows are
    written out at once; the accumulators hold about two tile heights of the image width.

    Parameters
    ----------
    source : zarr array, dask array, path/URL of a zarr array or OME-Zarr (full resolution is used),
        shape (Y, X) or (Y, X, C).
    out : path/URL of the output zarr group (created; must not exist), or an open zarr group.
    write_probabilities : also write ``probabilities`` (K, Y, X) in ``probability_dtype``.

    Returns
    -------
    The output zarr group, with ``labels`` (Y, X) uint8 (argmax + 1, project label values) and,
    if asked, ``probabilities``.
    """
    import zarr

    config = as_config(PredictConfig, config, config_kwargs)
    predictor = as_predictor(model, version=version, info=info, device=config.device)
    array = open_array(source)
    shape = tuple(array.shape)
    if len(shape) not in (2, 3):
        raise DataError(f"Block-wise prediction takes one 2D image (Y, X[, C]); got shape {shape}. Predict stacks slice by slice.")
    _check_image(shape, predictor)
    H, W = shape[:2]
    K = predictor.outputs
    if isinstance(out, (str,)) or hasattr(out, "__fspath__"):
        try:
            group = zarr.open_group(str(out), mode="w-")
        except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as err:
            raise DataError(f"The output {out} exists already: choose a new path (nothing was overwritten).") from err
    else:
        group = out
    ch = (min(chunk, H), min(chunk, W))
    labels_arr = group.create_array("labels", shape=(H, W), dtype="uint8", chunks=ch)
    probs_arr = (
        group.create_array("probabilities", shape=(K, H, W), dtype=probability_dtype, chunks=(1, *ch)) if write_probabilities else None
    )
    group.attrs.update(
        {
            "napari_seg_box": {
                "kind": "prediction",
                "model_version": predictor.version,
                "class_names": predictor.class_names,
                "config": config.to_dict(),
            }
        }
    )
    if config.tile_size > H or config.tile_size > W:  # small: in memory
        yield Message("The image is smaller than one tile: predicted in memory.")
        probs = yield from _predict_2d(np.asarray(array[...]), predictor, config, cancel=cancel)
        labels_arr[...] = predictor.labels(probs)
        if probs_arr is not None:
            probs_arr[...] = probs.astype(probability_dtype)
        return group
    lo, hi = percentile_bounds(array, predictor.percentiles)

    def read_rows(y0, y1):
        block = np.asarray(array[y0:y1])
        return scale(block[..., None] if block.ndim == 2 else block, lo, hi)

    # writes arrive in row order with arbitrary heights: buffer them up to whole chunk rows
    pending: list[np.ndarray] = []
    state = {"start": 0, "rows": 0}

    def flush(final=False):
        if not pending:
            return
        buf = np.concatenate(pending, axis=1)
        n = buf.shape[1] if final else (buf.shape[1] // ch[0]) * ch[0]
        if n == 0:
            return
        y0 = state["start"]
        for x0 in range(0, W, ch[1]):  # chunk column by chunk column: small temporaries
            part = buf[:, :n, x0 : x0 + ch[1]]
            labels_arr[y0 : y0 + n, x0 : x0 + ch[1]] = predictor.labels(part)
            if probs_arr is not None:
                probs_arr[:, y0 : y0 + n, x0 : x0 + ch[1]] = part.astype(probability_dtype)
        rest = buf[:, n:]
        pending.clear()
        if rest.shape[1]:
            pending.append(np.ascontiguousarray(rest))
        state["start"] = y0 + n

    def write_rows(y0, probs):
        pending.append(probs)  # a fresh array (acc / wsum): no copy needed
        if sum(p.shape[1] for p in pending) >= ch[0]:
            flush()

    yield from _predict_plane(
        predictor, read_rows, (H, W), _channels_of(shape), write_rows, config, cancel=cancel, stage="predict (blocks)"
    )
    flush(final=True)
    return group


def predict_large(source, out, model, **kwargs):
    """Blocking :func:`iter_predict_large`; returns the output zarr group."""
    return run_to_end(iter_predict_large(source, out, model, **kwargs))
