"""The demo: the whole loop on the bundled real sample data, from a fresh machine, with no options."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..core.baseline import classical_segmentation
from ..core.events import EpochEnd, Message, run_to_end
from ..core.metrics import error_maps
from ..core.models import pick_device
from ..core.plots import column_label
from ..core.samples import load_nuclei
from ..core.store import Project
from ..core.train import TrainConfig, iter_train
from .evaluate import evaluate_baseline, evaluate_project
from .report import Report, error_overlay, overlay
from .segment import segment_and_quantify
from .tune import tune_postprocess

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
    version = run_to_end(iter_train(project, demo_config(epochs)), on_event)
    meta = project.model_metadata(version)
    t_train = time.time() - t_train

    log("[demo] tuning post-processing (threshold, minimum size, watershed or not, seed distance) on the validation image")
    best_pp, _ = tune_postprocess(project, version)
    log(f"[demo] evaluating model {version} and the classical baseline on the held-out test image")
    ev = evaluate_project(project, version, keep_error_maps=True)
    base = evaluate_baseline(project)
    comparison = pd.DataFrame([_headline_row(f"U-Net {meta['encoder']} ({version})", ev), _headline_row("classical: smoothed Otsu + watershed", base)])
    ev.to_csv(out / "evaluation")
    comparison.to_csv(out / "comparison.csv", index=False)

    log("[demo] predicting every image and measuring the nuclei")
    quant, instances = segment_and_quantify(project, version)
    quant.save(out / "quantification", formats=("csv",))
    (out / "predictions").mkdir(exist_ok=True)
    for name, labels in instances.items():
        tifffile.imwrite(out / "predictions" / f"{name}_instances.tif", labels.astype(np.uint16), compression="zlib")

    test = project.image_names("test")[0]
    report_path = _report(out, project, version, meta, best_pp, comparison, quant, instances[test], classical_segmentation(project.get_image(test)), test)
    m, b = comparison.iloc[0], comparison.iloc[1]
    headline = {
        "model_version": version,
        "device": meta["device"],
        "train_seconds": round(t_train, 1),
        "best_validation_iou": meta["best_metrics"]["val_iou"],
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
    log(f"[demo] done in {time.time() - t0:.0f} s (training {t_train:.0f} s on {meta['device']}); everything is in {out}/")
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


# readable column names for the report's tables (the CSVs keep the short machine names)
_DISPLAY = {
    "method": "method", "nucleus_iou": "nucleus IoU", "nucleus_dice": "nucleus Dice", "pixel_accuracy": "pixel accuracy",
    "object_precision@0.5": "object precision (IoU 0.5)", "object_recall@0.5": "object recall (IoU 0.5)",
    "object_f1@0.5": "object F1 (IoU 0.5)", "object_f1@0.5:0.95": "object F1 (IoU 0.5:0.95)",
    "true_count": "true nuclei", "predicted_count": "found nuclei",
}  # fmt: skip


def _settings(meta: dict, pp) -> dict:
    """The settings of the run, chosen and automatic, in plain words."""
    cfg, chosen = meta["config"], meta["chosen"]
    auto = lambda key: " (automatic)" if cfg.get(key) is None else ""  # noqa: E731
    return {
        "network": f"U-Net with a {meta['encoder']} encoder",
        "loss": cfg["loss"].replace("_", "-") + (" + boundary class" if meta.get("boundary") else ""),
        "augmentation": cfg["augmentation"],
        "epochs run": f"{meta['epochs_run']} (best: {meta['best_metrics']['epoch']})",
        "patch size": f"{chosen['patch_size']} px{auto('patch_size')}",
        "batch size": f"{chosen['batch_size']}{auto('batch_size')}",
        "learning rate": f"{chosen['learning_rate']:.2g}{auto('learning_rate')}",
        "steps per epoch": f"{chosen['steps_per_epoch']}{auto('steps_per_epoch')}",
        "device": meta["device"],
        "training time": f"{meta['duration_s']:.0f} s",
        "post-processing (tuned on validation)": f"threshold {pp.threshold}, minimum size {pp.min_size} px, objects: {pp.objects_in_words()}",
    }


def _report(out: Path, project, version, meta, pp, comparison, quant, predicted, baseline_instances, test) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    image = project.get_image(test)
    truth = project.get_instances(test)
    rep = Report("napari-seg-box demo: DSB2018 nuclei")
    loss = meta["config"]["loss"].replace("_", "-")
    rep.paragraph(
        f"A {meta['encoder']} U-Net ({loss} loss) trained on two quadrants of the DSB2018 nuclei image (BBBC038, Caicedo et al. "
        f"2019), validated on the third, and evaluated on the fourth ({test}), which was never seen during training or model "
        "selection. One quadrant holds about 30 nuclei, so one nucleus moves object F1 by about 0.03: BENCHMARKS.md of "
        "napari-seg-box has the four-fold cross-validation over all quadrants, beside the same baseline."
    )
    m, b = comparison.iloc[0], comparison.iloc[1]
    rep.headline(
        f"Held-out quadrant {test}: the U-Net found {int(m['predicted_count'])} of {int(m['true_count'])} nuclei "
        f"(object F1 {m['object_f1@0.5']:.2f} at IoU 0.5, nucleus IoU {m['nucleus_iou']:.2f}); the classical baseline "
        f"{int(b['predicted_count'])} (F1 {b['object_f1@0.5']:.2f}, IoU {b['nucleus_iou']:.2f})."
    )
    rep.heading("Held-out accuracy, beside a classical baseline")
    rep.table(comparison.rename(columns=_DISPLAY), "Pixel metrics of the nucleus class and object matching on the test image")
    rep.key_values(_settings(meta, pp), "Settings of this run")
    rep.heading("Training curves")
    hist = meta["history"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key in zip(axes, ("loss", "acc", "iou")):
        ax.plot([h["epoch"] for h in hist], [h[f"train_{key}"] for h in hist], label="train")
        ax.plot([h["epoch"] for h in hist], [h[f"val_{key}"] for h in hist], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title({"loss": "loss (log scale)", "acc": "pixel accuracy", "iou": "mean IoU"}[key])
        if key == "loss":
            ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    rep.figure(fig, f"Model {version}: {meta['encoder']} U-Net, {meta['epochs_run']} epochs on {meta['device']} in {meta['duration_s']:.0f} s")
    plt.close(fig)
    rep.heading(f"Test image {test}")
    maps = error_maps(truth, predicted)
    panels = [overlay(image, truth), overlay(image, predicted), overlay(image, baseline_instances), error_overlay(image, maps["tp"], maps["fp"], maps["fn"])]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    titles = ["ground truth", f"U-Net ({len(np.unique(predicted)) - 1} objects)", f"classical baseline ({int(baseline_instances.max())} objects)", "U-Net errors: TP green, FP red, FN blue"]
    for ax, panel, title in zip(axes, panels, titles):
        ax.imshow(panel)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    rep.figure(fig, "Objects matched at IoU 0.5")
    plt.close(fig)
    rep.heading("Quantification")
    per_image = quant.images[["image", "class_name", "n_objects", "coverage_percent"] + [c for c in quant.images.columns if c.startswith("mean_area")]]
    per_image = per_image.rename(columns=column_label)
    rep.table(per_image, "Objects and coverage per image (predicted)")
    area_col = next(c for c in quant.objects.columns if c.startswith("area"))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(quant.objects[area_col], bins=30)
    ax.set_xlabel(column_label(area_col))
    ax.set_ylabel("nuclei")
    fig.tight_layout()
    rep.figure(fig, "Nucleus sizes over all images")
    plt.close(fig)
    rep.paragraph("Tables: evaluation/*.csv, comparison.csv, quantification/objects.csv and images.csv; predicted objects: predictions/*.tif.")
    return Path(rep.save(out / "report.html"))
