"""Classifier networks (timm) and :class:`Classifier`: a saved classification model, loaded once, that
classifies images in batches.

A classifier's :class:`~..models.ModelSpec` has ``architecture="classifier"`` and names a timm
network in ``encoder``; its weights are safetensors, rebuilt without any download.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from ..models import ModelSpec, pick_device, read_state_dict
from ..versions import ModelVersion
from .config import NETWORKS
from .data import as_yxc, fit_image

ARCHITECTURE = "classifier"


def classifier_spec(network: str, in_channels: int, classes: int) -> ModelSpec:
    return ModelSpec(encoder=network, in_channels=in_channels, classes=classes, decoder_channels=(), architecture=ARCHITECTURE)


def build_classifier(spec: ModelSpec, *, weights_file: str | os.PathLike | None = None, pretrained: bool = False):
    """A timm network for ``spec``; optionally started from a local weights file or (``pretrained``)
    timm's ImageNet weights. Layers whose shape differs (the head, a first layer of other channels)
    keep their fresh initialisation."""
    import timm

    if spec.architecture != ARCHITECTURE:
        raise ConfigError(f"Model spec {spec.architecture!r} is not a classifier.")
    if spec.encoder not in NETWORKS:
        raise ConfigError(f"Unknown network {spec.encoder!r}: choose one of {', '.join(NETWORKS)}.")
    if pretrained and not weights_file:
        try:
            return timm.create_model(spec.encoder, pretrained=True, in_chans=spec.in_channels, num_classes=spec.classes)
        except Exception as err:  # noqa: BLE001 - offline, proxy, no cache: one sentence for all
            raise ConfigError(
                f"The ImageNet weights of {spec.encoder} could not be downloaded ({type(err).__name__}) and are not in the cache: "
                "connect this machine to the internet once, or give a local weights file, or train from scratch."
            ) from err
    model = timm.create_model(spec.encoder, pretrained=False, in_chans=spec.in_channels, num_classes=spec.classes)
    if weights_file:
        own = model.state_dict()
        given = {k.removeprefix("model."): v for k, v in read_state_dict(weights_file).items()}
        fitting = {k: v for k, v in given.items() if k in own and own[k].shape == v.shape}
        if not fitting:
            raise ConfigError(f"{weights_file} holds no weights of a {spec.encoder} network: give the weights of that network.")
        model.load_state_dict(fitting, strict=False)
    return model


@dataclass
class Classifier:
    """A classification model version, ready to classify (see :meth:`from_project`)."""

    model: object
    info: ModelVersion
    device: object

    @classmethod
    def from_project(cls, project, version: str | ModelVersion | None = None, *, device: str = "auto") -> Classifier:
        """Load ``version`` (an id, ``latest``/None, ``best``) of ``project``; refuses segmentation models."""
        from safetensors.torch import load as load_bytes

        info = (version if isinstance(version, ModelVersion) else project.model_version(version)).require_task("classification")
        model = build_classifier(info.spec)
        model.load_state_dict(load_bytes(project.model_weights(info)))
        dev = pick_device(device)
        model.eval().to(dev)
        return cls(model, info, dev)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    def prepare(self, image: np.ndarray, *, name: str = "image") -> np.ndarray:
        """One image as the network takes it: (C, S, S) float32 (see :mod:`.data`)."""
        image = as_yxc(image, name=name)
        if image.shape[-1] != self.info.in_channels:
            raise DataError(
                f"{name} has {image.shape[-1]} channel(s) but model version {self.info.version} was trained on "
                f"{self.info.in_channels}-channel images: use a model trained on images like these."
            )
        norm = self.info.normalization
        scale = float(self.info.training.chosen.get("scale", 1.0))
        return fit_image(image, np.array(norm.low, np.float32), np.array(norm.high, np.float32), int(self.info.patch_size), scale)

    def predict_proba(
        self, images: Sequence[np.ndarray] | np.ndarray, *, batch_size: int = 64, names: Sequence[str] | None = None, tta: bool = False
    ) -> np.ndarray:
        """Class probabilities (N, K) of ``images`` (a list of (Y, X[, C]) arrays, or prepared (N, C, S, S)).
        ``tta``: the mean over the 8 flips and 90-degree rotations of each image (8x the time; on
        mlcp cells it helped small models by 0.01 macro-F1 and not the full-data ResNet18: BENCHMARKS.md)."""
        import torch

        if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[2] == images.shape[3] == self.info.patch_size:
            x_all = images.astype(np.float32)
        else:
            names = names or [f"image {i + 1}" for i in range(len(images))]
            x_all = np.stack([self.prepare(im, name=n) for im, n in zip(images, names)]) if len(images) else None
        if x_all is None:
            return np.zeros((0, len(self.class_names)), np.float32)
        out = []
        views = [(k, f) for k in range(4) for f in (False, True)] if tta else [(0, False)]
        with torch.inference_mode():
            for i in range(0, len(x_all), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(x_all[i : i + batch_size])).to(self.device)
                p = sum(torch.softmax(self.model(_view(x, k, f)).float(), 1) for k, f in views) / len(views)
                out.append(p.cpu().numpy())
        return np.concatenate(out)

    def classify(self, images, *, names: Sequence[str] | None = None, batch_size: int = 64, tta: bool = False):
        """A table (pandas) with one row per image: ``name``, ``class``, ``confidence`` and ``p_<class>`` for every class."""
        import pandas as pd

        names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
        p = self.predict_proba(images, batch_size=batch_size, names=names, tta=tta)
        table = pd.DataFrame({"name": names, "class": [self.class_names[i] for i in p.argmax(1)], "confidence": p.max(1) if len(p) else []})
        for k, c in enumerate(self.class_names):
            table[f"p_{c}"] = p[:, k]
        return table

    def time_per_sample(self, x: np.ndarray, *, batch_size: int = 64, repeats: int = 3, tta: bool = False) -> dict:
        """Milliseconds per sample of prepared images ``x`` (N, C, S, S): one at a time, and in batches
        (median of ``repeats`` after a warm-up; CUDA synchronised; ``tta``: with its 8 views)."""
        import torch

        def timed(fn) -> float:
            fn()  # warm-up
            times = []
            for _ in range(repeats):
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            return float(np.median(times))

        single = x[: min(len(x), 32)]
        t1 = timed(lambda: self.predict_proba(single, batch_size=1, tta=tta)) / len(single)
        tb = timed(lambda: self.predict_proba(x, batch_size=batch_size, tta=tta)) / len(x)
        return {"ms_per_sample_batch1": 1000 * t1, "ms_per_sample_batched": 1000 * tb, "batch_size": batch_size, "samples": len(x)}


def _view(x, k: int, flip: bool):
    """One of the 8 flips and rotations of a (B, C, S, S) tensor."""
    x = x.rot90(k, (2, 3)) if k else x
    return x.flip(3) if flip else x


def cached_classifier(store: str, version: str | None = None, store_options: tuple = (), device: str = "auto") -> Classifier:
    """``Classifier.from_project`` loaded once per process and version (batch workers call it for
    every task): ``latest`` is resolved first, so a newer model is picked up."""
    from ..store import Project

    version = Project.open(store, storage_options=dict(store_options)).resolve_version(version)
    return _cached(store, version, tuple(store_options), device)


@functools.lru_cache(maxsize=4)
def _cached(store: str, version: str, store_options: tuple, device: str) -> Classifier:
    from ..store import Project

    return Classifier.from_project(Project.open(store, storage_options=dict(store_options)), version, device=device)


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))
