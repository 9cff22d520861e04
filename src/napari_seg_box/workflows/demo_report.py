"""The demo's HTML report: the headline against the classical baseline, the run's settings, curves,
overlays of the held-out image and the measurements (one self-contained file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.metrics import error_maps
from ..core.plots import column_label
from ..core.versions import ModelVersion
from .report import ERROR_KEY, Report, error_overlay, overlay

# readable column names for the report's tables (the CSVs keep the short machine names)
_DISPLAY = {
    "method": "method", "nucleus_iou": "nucleus IoU", "nucleus_dice": "nucleus Dice", "pixel_accuracy": "pixel accuracy",
    "object_precision@0.5": "object precision (IoU 0.5)", "object_recall@0.5": "object recall (IoU 0.5)",
    "object_f1@0.5": "object F1 (IoU 0.5)", "object_f1@0.5:0.95": "object F1 (IoU 0.5:0.95)",
    "true_count": "true nuclei", "predicted_count": "found nuclei",
}  # fmt: skip


def _settings(info: ModelVersion) -> dict:
    """The settings of the run, chosen and automatic, in plain words."""
    cfg, chosen, pp = info.training.config, info.training.chosen, info.postprocess
    auto = lambda key: " (automatic)" if cfg.get(key) is None else ""
    return {
        "network": f"U-Net with a {info.encoder} encoder",
        "loss": cfg["loss"].replace("_", "-") + (" + boundary class" if info.boundary else " + distance output" if info.distance else ""),
        "augmentation": cfg["augmentation"],
        "epochs run": f"{info.training.epochs_run} (best: {info.best['epoch']})",
        "patch size": f"{chosen['patch_size']} px{auto('patch_size')}",
        "batch size": f"{chosen['batch_size']}{auto('batch_size')}",
        "learning rate": f"{chosen['learning_rate']:.2g}{auto('learning_rate')}",
        "steps per epoch": f"{chosen['steps_per_epoch']}{auto('steps_per_epoch')}",
        "device": info.training.device,
        "training time": f"{info.training.duration_s:.0f} s",
        "post-processing (tuned on validation)": f"threshold {pp.threshold}, minimum size {pp.min_size} px, objects: {pp.objects_in_words(**info.output_facts)}",
    }


def write_report(out: Path, project, info: ModelVersion, comparison, quant, predicted, baseline_instances, test: str) -> Path:
    """``out/report.html``: headline, comparison with the baseline, settings, curves, overlays, measurements."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = project.get_image(test)
    truth = project.get_instances(test)
    rep = Report("napari-seg-box demo: DSB2018 nuclei")
    loss = info.training.config["loss"].replace("_", "-")
    rep.paragraph(
        f"A {info.encoder} U-Net ({loss} loss) trained on two quadrants of the DSB2018 nuclei image (BBBC038, Caicedo et al. "
        f"2019), validated on the third, and evaluated on the fourth ({test}), which was never seen during training or model "
        "selection. One quadrant holds about 30 nuclei, so one nucleus moves object F1 by about 0.03: BENCHMARKS.md of "
        "napari-seg-box has the four-fold cross-validation over all quadrants, beside the same baseline. The figures also "
        "move with the random seed and the machine (thread count, BLAS): BENCHMARKS.md gives their range over three seeds."
    )
    m, b = comparison.iloc[0], comparison.iloc[1]
    rep.headline(
        f"Held-out quadrant {test}: the U-Net found {int(m['predicted_count'])} of {int(m['true_count'])} nuclei "
        f"(object F1 {m['object_f1@0.5']:.2f} at IoU 0.5, nucleus IoU {m['nucleus_iou']:.2f}); the classical baseline "
        f"{int(b['predicted_count'])} (F1 {b['object_f1@0.5']:.2f}, IoU {b['nucleus_iou']:.2f})."
    )
    rep.heading("Held-out accuracy, beside a classical baseline")
    rep.table(comparison.rename(columns=_DISPLAY), "Pixel metrics of the nucleus class and object matching on the test image")
    rep.key_values(_settings(info), "Settings of this run")
    rep.heading("Training curves")
    hist = info.training.history
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
    t = info.training
    rep.figure(fig, f"Model {info.version}: {info.encoder} U-Net, {t.epochs_run} epochs on {t.device} in {t.duration_s:.0f} s")
    plt.close(fig)
    rep.heading(f"Test image {test}")
    maps = error_maps(truth, predicted)
    panels = [
        overlay(image, truth),
        overlay(image, predicted),
        overlay(image, baseline_instances),
        error_overlay(image, maps["tp"], maps["fp"], maps["fn"]),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    titles = [
        "ground truth",
        f"U-Net ({len(np.unique(predicted)) - 1} objects)",
        f"classical baseline ({int(baseline_instances.max())} objects)",
        f"U-Net errors: {ERROR_KEY}",
    ]
    for ax, panel, title in zip(axes, panels, titles):
        ax.imshow(panel)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    rep.figure(fig, "Objects matched at IoU 0.5")
    plt.close(fig)
    rep.heading("Quantification")
    per_image = quant.images[
        ["image", "class_name", "n_objects", "coverage_percent"] + [c for c in quant.images.columns if c.startswith("mean_area")]
    ]
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
    rep.paragraph(
        "Tables: evaluation/*.csv, comparison.csv, quantification/objects.csv and images.csv; predicted objects: predictions/*.tif."
    )
    return Path(rep.save(out / "report.html"))
