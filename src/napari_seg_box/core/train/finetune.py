"""Fine-tuning in minutes: update a model version with the annotations made (or corrected) since.

:func:`finetune_config` turns a saved version into the :class:`~.config.TrainConfig` of a short
warm-started run: the version's architecture, loss, outputs and patch size, a lower learning rate
(a tenth: no range test), a short cosine schedule and annotations revised after the version was saved
sampled :data:`RECENT_WEIGHT` times more often per pixel (they are what the model has not seen);
the validation part of the version is kept (:func:`~.prepare._prepare_data`).
:func:`recent_images` says which those are; the loop (:mod:`.loop`) validates the starting version
on the run's validation images first, so the new version's figures stand beside the old one's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError
from ..events import Message
from .config import TrainConfig
from .validate import _validate

FINETUNE_EPOCHS = 10
RECENT_WEIGHT = 3.0  # per-pixel sampling weight of annotations revised after the starting version
LR_FACTOR = 0.1  # of the starting version's learning rate
FALLBACK_LR = 3e-4  # when the starting version does not say its learning rate
# what a fine-tuning run keeps from the version it starts from
KEPT = ("loss", "edge_w0", "edge_sigma", "boundary", "boundary_width", "augmentation", "elastic")


def finetune_config(project, version: str | None = "latest", **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` that fine-tunes ``version`` (an id, ``latest`` or ``best``) on the
    project's current annotations; ``overrides`` (``epochs=``, ``minutes=``, ...) win, except that
    the architecture cannot change (a clear error: train from scratch for another one)."""
    base = project.model_version(version).require_task("segmentation")
    old = dict(base.training.config)
    arch = {
        "encoder": base.spec.encoder,
        "encoder_depth": base.spec.encoder_depth,
        "decoder_channels": tuple(base.spec.decoder_channels),
        "context": base.context,
    }
    for key, kept in arch.items():
        given = overrides.get(key)
        if given is not None and (tuple(given) if key == "decoder_channels" else given) != kept:
            raise ConfigError(
                f"Model version {base.version} is a {base.spec.encoder} U-Net of depth {base.spec.encoder_depth} with {base.context} "
                f"neighbouring plane(s) of context: fine-tuning keeps "
                f"its architecture, so {key.replace('_', ' ')} {given!r} cannot be used. Leave it out, or train from scratch."
            )
    kept = {k: old[k] for k in KEPT if k in old} | arch
    chosen = base.training.chosen
    settings = {
        **kept,
        "distance": bool(base.distance),
        "boundary": base.boundary,
        "boundary_width": base.boundary_width or 2,
        "epochs": FINETUNE_EPOCHS,
        "schedule": "cosine",
        "patience": 0,
        "learning_rate": float(chosen.get("learning_rate") or FALLBACK_LR / LR_FACTOR) * LR_FACTOR,
        "patch_size": chosen.get("patch_size") or base.patch_size,
        "steps_per_epoch": chosen.get("steps_per_epoch"),
        "recent_weight": RECENT_WEIGHT,
        "seed": old.get("seed", 0),
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings["finetune_from"] = base.version
    return TrainConfig.from_dict({k: v for k, v in settings.items() if v is not None})


def recent_images(project, version) -> set[str]:
    """Images whose current annotation ``version`` (a :class:`~..versions.ModelVersion`) did not
    train on: corrected or painted since, or not in its training data. Exact from the annotation
    revisions the version records; for a version without them, the corrections of it and what was
    saved after it (timestamps of one second: the same second is left out)."""
    seen = version.provenance.annotation_revisions
    current = {r.name: r.annotation for r in project.images() if r.annotation and r.annotation.get("revision")}
    if seen:
        return {name for name, a in current.items() if seen.get(name) != a["revision"]}
    since = version.created or ""
    return {name for name, a in current.items() if a.get("model_version") == version.version or str(a.get("time") or "") > since > ""}


def item_is_of(item_name: str, images: set[str]) -> bool:
    """Whether a training region (an image, or a plane ``image[z=3]`` of a stack) comes from one of ``images``."""
    return any(item_name == im or item_name.startswith(f"{im}[z=") for im in images)


# ---------------------------------------------------------------------- steps of a fine-tuning run (:mod:`.loop`)
def emphasise_recent(run) -> Iterator[Message]:
    """Sample the annotations saved after the starting version ``recent_weight`` times more often."""
    if run.cfg.recent_weight == 1:
        return
    recent = recent_images(run.project, run.project.model_version(run.finetuned_from))
    images = {im for im in recent if any(item_is_of(it.name, {im}) for it in run.data.train)}
    for it in run.data.train:
        if item_is_of(it.name, images):
            it.emphasis = run.cfg.recent_weight
    if images:
        yield Message(
            f"{len(images)} image(s) annotated or corrected since {run.finetuned_from}: sampled {run.cfg.recent_weight:g}x more often.",
            topic="settings",
        )


def validate_start(run, loss_fn, cancel) -> Iterator[Message]:
    """The starting version's figures on this run's validation images, to stand beside the new ones."""
    if run.project.model_version(run.finetuned_from).spec.classes != run.spec.classes:
        return  # a new head: the starting weights do not segment these classes
    val = _validate(
        run.model, run.data.val, loss_fn, run.rt, len(run.data.classes), cancel, fold=run.cfg.boundary, distance=run.data.distance
    )
    m = val["metrics"]
    run.start = {"version": run.finetuned_from, **{k: m[k] for k in ("val_iou", "val_loss", "val_acc", "val_distance_error") if k in m}}
    yield Message(
        f"Starting from {run.finetuned_from}: validation IoU {m['val_iou']:.3f} on this run's validation images.", topic="validation"
    )
