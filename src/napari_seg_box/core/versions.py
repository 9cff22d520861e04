"""The typed description of a saved model: :class:`ModelVersion`, read and written in this one place.

A model version is ``models/<id>/weights.safetensors`` plus ``models/<id>/model.json``, the JSON form
of a :class:`ModelVersion`: what the network is (task, architecture spec, classes, whether it has a
boundary or distance output, normalisation), how it was trained (the whole training configuration, the settings
chosen automatically, the per-epoch history and the best epoch), where it comes from (data
fingerprint, images, the version it was fine-tuned from, package versions, duration) and the
post-processing tuned for it. Schema 1 (the untyped ``model.json`` of napari-seg-box 0.1) is
migrated on reading; writing always uses the current schema.

The store keeps an index of its versions in the manifest (:meth:`ModelVersion.index_entry`), so that
``latest`` and ``best`` resolve without reading every ``model.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import StoreError
from .models import ModelSpec
from .postprocess import PostprocessConfig

SCHEMA_VERSION = 2
TASKS = ("segmentation", "classification")
STATUSES = ("completed", "stopped", "early_stopped", "imported")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Normalization:
    """How images are scaled before the network, per channel: ``percentile``, each image's own
    percentiles map to 0 and 1 (segmentation); ``dataset``, the percentiles of all training images,
    saved as ``low`` and ``high`` per channel, map to 0 and 1 for every image (classification: the
    brightness of a cell, e.g. its DNA content, is a feature that per-image scaling would erase)."""

    kind: str = "percentile"
    percentiles: tuple[float, float] = (1.0, 99.8)
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.kind not in ("percentile", "dataset"):
            raise StoreError(f"Unknown normalisation {self.kind!r}: this napari-seg-box knows 'percentile' and 'dataset' (update it).")
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        for name in ("low", "high"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.kind == "dataset" and (self.low is None or self.high is None or len(self.low) != len(self.high)):
            raise StoreError("A 'dataset' normalisation needs low and high values for every channel: its model.json is inconsistent.")

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "percentiles": list(self.percentiles)}
        if self.kind == "dataset":
            d.update(low=list(self.low), high=list(self.high))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Normalization:
        d = d or {}
        return cls(d.get("kind", "percentile"), tuple(d.get("percentiles", (1.0, 99.8))), d.get("low"), d.get("high"))


@dataclass(frozen=True)
class Training:
    """What the training run did: its whole configuration, the automatic choices, history, outcome."""

    config: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig.to_dict(), whole
    chosen: Mapping[str, Any] = field(default_factory=dict)  # patch_size, batch_size, learning_rate, steps_per_epoch
    history: tuple[Mapping[str, Any], ...] = ()
    best: Mapping[str, Any] = field(default_factory=dict)  # epoch, val_iou, val_loss, val_acc
    status: str = "completed"
    epochs_run: int = 0
    run: str | None = None
    device: str | None = None
    duration_s: float = 0.0
    start: Mapping[str, Any] = field(default_factory=dict)  # fine-tuning: the starting version's figures on the same validation images

    def __post_init__(self):
        object.__setattr__(self, "history", tuple(self.history))
        if self.status not in STATUSES:
            raise StoreError(f"Unknown training status {self.status!r} (known: {', '.join(STATUSES)}).")


@dataclass(frozen=True)
class Provenance:
    """Where the model comes from."""

    data_fingerprint: str | None = None
    train_images: tuple[str, ...] = ()
    validation_images: tuple[str, ...] = ()
    validation: str | None = None  # how the validation images were chosen
    finetuned_from: str | None = None
    imported_from: str | None = None  # the file an imported version came from (a version archive, a bioimage.io package)
    packages: Mapping[str, str] = field(default_factory=dict)
    validation_rows: Mapping[str, int] = field(default_factory=dict)  # plane -> first validation row (0: whole)
    annotation_revisions: Mapping[str, str] = field(default_factory=dict)  # image -> the annotation revision trained on

    def __post_init__(self):
        object.__setattr__(self, "train_images", tuple(self.train_images))
        object.__setattr__(self, "validation_images", tuple(self.validation_images))
        object.__setattr__(self, "validation_rows", {str(k): int(v) for k, v in dict(self.validation_rows).items()})


@dataclass(frozen=True)
class Tuning:
    """Post-processing tuned for the model on validation images, and how well it scored."""

    config: PostprocessConfig
    score: float | None = None
    metric: str | None = None
    images: tuple[str, ...] = ()
    grid: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "score": self.score,
            "metric": self.metric,
            "images": list(self.images),
            "grid": dict(self.grid),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tuning:
        return cls(
            PostprocessConfig.from_dict(d["config"]),
            d.get("score"),
            d.get("metric"),
            tuple(d.get("images") or ()),
            dict(d.get("grid") or {}),
        )


@dataclass(frozen=True)
class ModelVersion:
    """A saved model, described whole (see the module docstring). Immutable: ``dataclasses.replace``."""

    spec: ModelSpec
    class_names: tuple[str, ...]
    task: str = "segmentation"
    boundary_width: int | None = None  # the model also predicts object boundaries (a last output)
    distance: bool = False  # the model also predicts the normalised distance to the object border (a last output)
    context: int = 0  # 2.5D input: each plane of a volume comes with its ``context`` neighbours on each side, as channels
    normalization: Normalization = Normalization()
    patch_size: int | None = None
    training: Training = Training()
    provenance: Provenance = Provenance()
    tuning: Tuning | None = None
    version: str | None = None  # assigned by the store when saved
    created: str | None = None
    weights_sha256: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.task not in TASKS:
            raise StoreError(f"Unknown model task {self.task!r}: this napari-seg-box knows {', '.join(TASKS)} (update it).")
        expected = len(self.class_names) + self.boundary + self.distance
        if self.task == "segmentation" and self.spec.classes != expected:
            extra = " and a boundary output" if self.boundary else " and a distance output" if self.distance else ""
            raise StoreError(
                f"Model version {self.version or '(new)'} has {self.spec.classes} outputs but {len(self.class_names)} classes"
                f"{extra} ({expected} expected): its model.json is inconsistent."
            )
        if self.boundary and self.distance:
            raise StoreError(
                f"Model version {self.version or '(new)'} claims both a boundary and a distance output: its model.json is inconsistent."
            )

    # ------------------------------------------------------------------ facts of the model
    @property
    def boundary(self) -> bool:
        """Whether the model also predicts object boundaries (its last output channel)."""
        return self.boundary_width is not None

    @property
    def output_facts(self) -> dict[str, bool]:
        """What follows the class probabilities, as :func:`~.postprocess.postprocess` takes it."""
        return {"boundary": self.boundary, "distance": self.distance}

    @property
    def n_classes(self) -> int:
        """The project classes the model segments (the boundary output is not one)."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """The network's input channels: the image's, times ``2 * context + 1`` planes."""
        return self.spec.in_channels

    @property
    def image_channels(self) -> int:
        """The channels of the images the model segments (one plane's)."""
        return self.spec.in_channels // (2 * self.context + 1)

    @property
    def encoder(self) -> str:
        return self.spec.encoder

    @property
    def postprocess(self) -> PostprocessConfig:
        """The post-processing to use by default: the tuned settings, else the defaults."""
        return self.tuning.config if self.tuning is not None else PostprocessConfig()

    @property
    def best(self) -> Mapping[str, Any]:
        return self.training.best

    def describe(self) -> str:
        """One line for people: 'v003 (resnet34, val IoU 0.873, completed)' ('val F1' for a classifier)."""
        return f"{self.version} ({self.encoder}{_score(self.best)}, {self.training.status})"

    def require_task(self, task: str) -> ModelVersion:
        """This version, when it does ``task``; else a clear error that says what to use instead."""
        if self.task != task:
            use = {
                "classification": "classify images with it (napari-seg-box classify, Classifier)",
                "segmentation": "segment with it (napari-seg-box predict, Predictor)",
            }[self.task]
            raise StoreError(
                f"Model version {self.version or '(new)'} is a {self.task} model, not a {task} model: {use}, or choose a {task} model."
            )
        return self

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "version": self.version,
            "task": self.task,
            "created": self.created,
            "model": self.spec.to_dict(),
            "class_names": list(self.class_names),
            "boundary_width": self.boundary_width,
            "distance": self.distance,
            "context": self.context,
            "normalization": self.normalization.to_dict(),
            "patch_size": self.patch_size,
            "training": {**dataclasses.asdict(self.training), "history": [dict(h) for h in self.training.history]},
            "provenance": {
                **dataclasses.asdict(self.provenance),
                "train_images": list(self.provenance.train_images),
                "validation_images": list(self.provenance.validation_images),
            },
            "tuning": self.tuning.to_dict() if self.tuning is not None else None,
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelVersion:
        """Read a ``model.json`` of any schema up to the current one (older ones are migrated)."""
        if not isinstance(d, Mapping):
            raise StoreError(f"A model.json must hold a JSON object, not {type(d).__name__}.")
        schema = d.get("schema_version", 1)
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise StoreError(
                f"Model version {d.get('version')} was saved by a newer napari-seg-box (model schema {schema!r}): "
                "update napari-seg-box to load it."
            )
        if schema == 1:
            d = _migrate_v1(d)
        try:
            tuning = d.get("tuning")
            return cls(
                spec=ModelSpec.from_dict(d["model"]),
                class_names=tuple(d["class_names"]),
                task=d.get("task", "segmentation"),
                boundary_width=d.get("boundary_width"),
                distance=bool(d.get("distance", False)),
                context=int(d.get("context") or 0),
                normalization=Normalization.from_dict(d.get("normalization")),
                patch_size=d.get("patch_size"),
                training=Training(**(d.get("training") or {})),
                provenance=Provenance(**(d.get("provenance") or {})),
                tuning=Tuning.from_dict(tuning) if tuning else None,
                version=d.get("version"),
                created=d.get("created"),
                weights_sha256=d.get("weights_sha256"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(
                f"The model.json of version {d.get('version')} is incomplete or damaged ({type(err).__name__}: {err})."
            ) from err

    def index_entry(self) -> dict:
        """The summary the store's manifest keeps of this version (resolving without reading it)."""
        best = {k: v for k, v in self.best.items() if isinstance(v, (int, float, str)) or v is None}
        return {
            "state": "ready",
            "created": self.created,
            "task": self.task,
            "encoder": self.encoder,
            "status": self.training.status,
            "epochs_run": self.training.epochs_run,
            "best": best,
            "device": self.training.device,
            "duration_s": self.training.duration_s,
            "tuned": self.tuning is not None,
        }


def _score(best: Mapping[str, Any]) -> str:
    """', val IoU 0.873' (segmentation) or ', val F1 0.912' (classification: macro-F1), or ''."""
    for key, word in (("val_f1", "F1"), ("val_iou", "IoU")):
        if isinstance(best.get(key), (int, float)):
            return f", val {word} {best[key]:.3f}"
    return ""


def _migrate_v1(d: Mapping[str, Any]) -> dict:
    """Schema 1 (a flat 22-key dict) -> schema 2."""
    boundary = d.get("boundary")
    spec = dict(d.get("model") or {})
    names = d.get("class_names") or [f"class {i + 1}" for i in range(int(spec.get("classes", 2)) - bool(boundary))]
    saved = d.get("postprocess") or {}
    tuning = None
    if saved:
        config = {k: v for k, v in dict(saved.get("config", saved)).items() if k != "boundary"}  # boundary is a model fact now
        tuning = {**{k: saved.get(k) for k in ("score", "metric", "images", "grid")}, "config": config}
    data = d.get("training_data") or {}
    return {
        "version": d.get("version"),
        "task": "segmentation",
        "created": d.get("created"),
        "model": spec,
        "class_names": names,
        "boundary_width": (boundary or {}).get("width", 2) if boundary else None,
        "normalization": d.get("normalization"),
        "patch_size": d.get("patch_size"),
        "training": {
            "config": d.get("config") or {},
            "chosen": d.get("chosen") or {},
            "history": d.get("history") or [],
            "best": d.get("best_metrics") or {},
            "status": d.get("status") or "completed",
            "epochs_run": d.get("epochs_run") or len(d.get("history") or []),
            "run": d.get("run"),
            "device": d.get("device"),
            "duration_s": float(d.get("duration_s") or 0.0),
        },
        "provenance": {
            "data_fingerprint": data.get("fingerprint"),
            "train_images": data.get("train_images") or [],
            "validation_images": data.get("validation_images") or [],
            "validation": data.get("validation"),
            "finetuned_from": d.get("finetuned_from"),
            "packages": d.get("packages") or {},
        },
        "tuning": tuning,
        "weights_sha256": d.get("weights_sha256"),
    }
