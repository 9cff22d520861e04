"""The demo: the whole loop on the bundled real sample data, from a fresh machine, with no options."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..core.baseline import classical_segmentation
from ..core.events import EpochEnd, Message, run_to_end
from ..core.infer import Predictor
from ..core.models import pick_device
from ..core.samples import load_nuclei
from ..core.store import Project
from ..core.train import TrainConfig
from .demo_report import write_report
from .evaluate import evaluate_baseline, evaluate_project
from .segment import segment_and_quantify
from .train import iter_train_model

NUCLEI_SPLITS = {"q0": "train", "q1": "train", "q2": "validation", "q3": "test"}


def build_demo_project(url: str | os.PathLike) -> Project:
    """A project from the bundled DSB2018 nuclei image cut into quadrants: two for training, one
    for validation, one held out as test (with instance ground truth for object metrics)."""
    project = Project.create(url, classes=["background", "nucleus"], colors=["#555555", "#ffcc00"], exist_ok=True)
    if project.image_names():
        return project
    image, mask = load_nuclei()
    for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        name = f"q{i}"
        inst = mask[y : y + 256, x : x + 256]
        project.add_image(
            name,
            image[y : y + 256, x : x + 256],
            labels=(1 + (inst > 0)).astype(np.uint8),
            instances=inst,
            split=NUCLEI_SPLITS[name],
            source=f"sample_data/nuclei_image.tif[{y}:{y + 256}, {x}:{x + 256}]",
        )
    return project


def demo_config(epochs: int | None = None):
    """The demo's training settings: a light ResNet18 U-Net that learns in a few CPU minutes, with
    the U-Net edge-weighted loss, which split touching nuclei best in ``benchmarks/accuracy.py edge``.

    ``epochs`` None: 20 on the CPU (about two minutes on two cores), 60 on a GPU (one to two minutes
    on an H100, where 20 epochs scored below the classical baseline's F1 in three runs of three, 60
    above it in three of three: ``benchmarks/results/demo_epochs_h100.txt``).
    """
    if epochs is None:
        epochs = 20 if pick_device("auto").type == "cpu" else 60
    return TrainConfig(epochs=epochs, encoder="resnet18", patch_size=128, batch_size=8, steps_per_epoch=8, loss="edge_weighted", patience=0)


def run_demo(out: str | os.PathLike = "demo_output", *, epochs: int | None = None, log=print) -> dict:
    """The whole loop into ``out``: train, tune, evaluate beside a classical baseline, quantify, report.

    ``epochs`` None: the device's default (:func:`demo_config`). Returns the headline figures (also
    in ``out/summary.json``).
    """
    import pandas as pd
    import tifffile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log(f"[demo] building the project store {out / 'project.zarr'} from the bundled DSB2018 nuclei image")
    project = build_demo_project(out / "project.zarr")
    summary = project.summary()
    log(
        f"[demo] {len(summary['images'])} images (train {summary['splits']['train']}, validation "
        f"{summary['splits']['validation']}, test {summary['splits']['test']}); annotated pixels per class: "
        + ", ".join(f"{k} {v:,d}" for k, v in summary["annotated_pixels_per_class"].items())
    )

    def on_event(ev):
        if isinstance(ev, EpochEnd):
            log("[train] " + ev.line())
        elif isinstance(ev, Message):
            log("[train] " + ev.text)

    t_train = time.time()
    log(
        "[demo] training, then tuning post-processing (threshold, minimum size, watershed or not, seed distance or centre level) on the validation image"
    )
    version = run_to_end(iter_train_model(project, demo_config(epochs)), on_event)
    t_train = time.time() - t_train
    predictor = Predictor.from_project(project, version)  # loaded once for evaluation and measurement
    best_pp = predictor.default_postprocess
    info = predictor.info
    log(f"[demo] evaluating model {version} and the classical baseline on the held-out test image")
    ev = evaluate_project(project, version, predictor=predictor, keep_error_maps=True)
    base = evaluate_baseline(project)
    comparison = pd.DataFrame(
        [_headline_row(f"U-Net {info.encoder} ({version})", ev), _headline_row("classical: smoothed Otsu + watershed", base)]
    )
    ev.to_csv(out / "evaluation")
    comparison.to_csv(out / "comparison.csv", index=False)

    log("[demo] predicting every image and measuring the nuclei")
    quant, instances = segment_and_quantify(project, version, predictor=predictor)
    quant.save(out / "quantification", formats=("csv",))
    (out / "predictions").mkdir(exist_ok=True)
    for name, labels in instances.items():
        tifffile.imwrite(out / "predictions" / f"{name}_instances.tif", labels.astype(np.uint16), compression="zlib")

    test = project.image_names("test")[0]
    report_path = write_report(
        out, project, info, comparison, quant, instances[test], classical_segmentation(project.get_image(test)), test
    )
    m, b = comparison.iloc[0], comparison.iloc[1]
    headline = {
        "model_version": version,
        "device": info.training.device,
        "train_seconds": round(t_train, 1),
        "best_validation_iou": info.best["val_iou"],
        "test": {k: float(v) for k, v in m.items() if k != "method"},
        "baseline_test": {k: float(v) for k, v in b.items() if k != "method"},
        "postprocess": best_pp.to_dict(),
        "objects_counted": int(len(quant.objects)),
        "report": str(report_path),
        "seconds": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(headline, indent=2))
    log(
        f"[demo] held-out test image {test}: nucleus IoU {m['nucleus_iou']:.3f} (baseline {b['nucleus_iou']:.3f}), "
        f"object F1@0.5 {m['object_f1@0.5']:.3f} (baseline {b['object_f1@0.5']:.3f}), "
        f"count {int(m['predicted_count'])} of {int(m['true_count'])} true nuclei"
    )
    log(f"[demo] {len(quant.objects)} nuclei measured in {len(instances)} images: {out / 'quantification'}")
    log(f"[demo] report: {report_path}")
    log(f"[demo] done in {time.time() - t0:.0f} s (training {t_train:.0f} s on {info.training.device}); everything is in {out}/")
    return headline


def _headline_row(method: str, ev) -> dict:
    pixel = ev.summary["pixel"]["per_class"]["nucleus"]
    obj = ev.summary["objects"]["nucleus"]
    return {
        "method": method,
        "nucleus_iou": pixel["iou"],
        "nucleus_dice": pixel["dice"],
        "pixel_accuracy": ev.summary["pixel"]["accuracy"],
        "object_precision@0.5": obj["precision@0.5"],
        "object_recall@0.5": obj["recall@0.5"],
        "object_f1@0.5": obj["f1@0.5"],
        "object_f1@0.5:0.95": obj["f1@avg"],
        "true_count": obj["n_true"],
        "predicted_count": obj["n_pred"],
    }
