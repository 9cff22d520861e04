"""The version writer: the best epoch of a run becomes a :class:`~..versions.ModelVersion` in the store."""

from __future__ import annotations

from ..data import DEFAULT_PERCENTILES
from ..versions import ModelVersion, Normalization, Provenance, Training
from .checkpoint import state_bytes

PACKAGES = ("napari-seg-box", "torch", "segmentation-models-pytorch", "albumentations", "numpy")


def save_version(run) -> ModelVersion:
    """Save the best weights of ``run`` (a :class:`~.loop.Run`) with their whole description."""
    cfg, data = run.cfg, run.data
    info = ModelVersion(
        spec=run.spec,
        class_names=tuple(data.classes),
        task="segmentation",
        boundary_width=cfg.boundary_width if cfg.boundary else None,
        distance=data.distance,
        context=data.context,
        normalization=Normalization("percentile", DEFAULT_PERCENTILES),
        patch_size=int(run.chosen["patch_size"]),
        training=training_record(run),
        provenance=Provenance(
            data_fingerprint=data.fingerprint,
            train_images=tuple(data.train_names),
            validation_images=tuple(data.val_names),
            validation=data.split,
            validation_rows=dict(data.val_rows),
            annotation_revisions=dict(data.revisions),
            finetuned_from=run.finetuned_from,
            packages=package_versions(),
        ),
    )
    return run.project.save_model_version(state_bytes(run.best_state), info)


def training_record(run) -> Training:
    """What a run did (a U-Net's :class:`~.loop.Run` or a classifier's), as its version saves it."""
    return Training(
        config=run.cfg.to_dict(),
        chosen=dict(run.chosen),
        history=tuple(run.history),
        best=dict(run.best),
        status=run.status,
        epochs_run=len(run.history),
        run=run.run_id,
        device=run.rt.describe(),
        duration_s=run.duration_s,
        start=dict(run.start),
    )


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
