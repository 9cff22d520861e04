"""Render a real napari window with each napari-seg-box widget at work, and save PNG screenshots.

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshots.py [--out docs/images]

Uses the plugin's sample data (DSB2018 nuclei, split into four 256x256 quadrants: two for training,
one for validation, one held-out test image), paints sparse annotations from the ground truth,
trains a small U-Net for a few epochs on the CPU (a few minutes), predicts and evaluates the test
quadrant and quantifies the project. Writes annotate.png, train.png, predict.png, quantify.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import napari_seg_box.widgets  # noqa: F401  (the triton guard, before anything imports torch)

REPO = Path(__file__).resolve().parents[1]
QUADRANTS = {
    "nuclei q0": (0, 0, "train"),
    "nuclei q1": (0, 256, "train"),
    "nuclei q2": (256, 0, "validation"),
    "nuclei q3": (256, 256, "test"),
}


def wait_worker(worker, timeout=1800):
    from qtpy.QtWidgets import QApplication

    done = []
    worker.finished.connect(lambda: done.append(True))
    end = time.time() + timeout
    while not done and time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    if not done:
        raise TimeoutError("the worker did not finish in time")
    settle(0.3)


def settle(seconds=0.5):
    from qtpy.QtWidgets import QApplication

    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def shot(viewer, path: Path, plots=()):
    for plot in plots:
        plot.wait()
    settle(0.5)
    try:  # close notification toasts so that they do not cover the canvas
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()
    except Exception:
        pass
    settle(0.5)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print("wrote", path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--project", default=None, help="project folder to create (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari

    from napari_seg_box.widgets.annotate import AnnotateWidget
    from napari_seg_box.widgets.predict import PredictWidget
    from napari_seg_box.widgets.quantify import QuantifyWidget
    from napari_seg_box.widgets.train import TrainWidget

    tmp = tempfile.TemporaryDirectory()
    store = args.project or os.path.join(tmp.name, "nuclei.zarr")
    viewer = napari.Viewer(title="napari-seg-box")
    viewer.window._qt_window.resize(1500, 980)
    viewer.open_sample("napari-seg-box", "nuclei")
    image = np.asarray(viewer.layers["nuclei"].data)
    truth = np.asarray(viewer.layers["nuclei ground truth"].data)
    viewer.layers.remove("nuclei ground truth")
    viewer.layers.remove("nuclei")

    # ---------------------------------------------------------------- annotate
    annotate = AnnotateWidget(viewer)
    annotate.setMinimumWidth(470)
    dock = viewer.window.add_dock_widget(annotate, name="Annotate", area="right")
    annotate.create_project(store, classes=["background", "nucleus"])
    rng = np.random.default_rng(0)
    for name, (y, x, split) in QUADRANTS.items():
        viewer.add_image(image[y : y + 256, x : x + 256], name=name, contrast_limits=(0, float(np.percentile(image, 99.8))))
        annotate.add_layer(name, split=split)
        inst = truth[y : y + 256, x : x + 256]
        painted = np.zeros(inst.shape, np.uint8)
        if split == "train":
            # sparse, as a person paints: some whole nuclei, and background strokes between them
            ids = [i for i in np.unique(inst) if i]
            for i in rng.choice(ids, size=max(1, int(0.6 * len(ids))), replace=False):
                painted[inst == i] = 2
            yy, xx = np.mgrid[:256, :256]
            for _ in range(14):
                cy, cx, r = rng.integers(10, 246), rng.integers(10, 246), rng.integers(6, 14)
                disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                painted[disk & (inst == 0)] = 1
        else:
            painted = (1 + (inst > 0)).astype(np.uint8)
        annotate.labels_layer_for(name).data = painted
    annotate.save()
    annotate.open_image("nuclei q0")
    viewer.layers.selection.active = annotate.labels_layer_for("nuclei q0")
    annotate.class_combo.setCurrentIndex(annotate.class_combo.findData(2))
    viewer.layers.selection.active.mode = "paint"
    viewer.reset_view()
    shot(viewer, out / "annotate.png")
    viewer.window.remove_dock_widget(dock)

    # ---------------------------------------------------------------- train
    train = TrainWidget(viewer)
    train.setMinimumWidth(560)
    dock = viewer.window.add_dock_widget(train, name="Train", area="right")
    train.set_config(
        encoder="resnet18",
        encoder_depth=4,
        epochs=args.epochs,
        patch_size=128,
        batch_size=8,
        learning_rate=3e-3,
        steps_per_epoch=10,
        augmentation="standard",
    )
    settle(1.0)
    while not train.device_label.text().startswith(("CPU", "CUDA", "Apple")):
        settle(0.2)
    t0 = time.time()
    worker = train.start()
    # a screenshot of training in progress is not needed: the finished curves show every epoch
    wait_worker(worker)
    print(f"trained {train.last_version} in {time.time() - t0:.0f} s: {train.status.text()}")
    shot(viewer, out / "train.png", plots=[train.plot])
    viewer.window.remove_dock_widget(dock)

    # ---------------------------------------------------------------- predict & evaluate
    predict = PredictWidget(viewer)
    predict.setMinimumWidth(560)
    dock = viewer.window.add_dock_widget(predict, name="Predict & evaluate", area="right")
    for layer in list(viewer.layers):
        layer.visible = layer.name == "nuclei q3"
    wait_worker(predict.predict("nuclei q3"))
    wait_worker(predict.evaluate("test"))
    for layer in viewer.layers:
        layer.visible = layer.name in ("nuclei q3", "nuclei q3 prediction", "nuclei q3 outlines")
    viewer.layers.selection.active = viewer.layers["nuclei q3 prediction"]
    viewer.reset_view()
    shot(viewer, out / "predict.png")
    viewer.window.remove_dock_widget(dock)

    # ---------------------------------------------------------------- quantify
    quantify = QuantifyWidget(viewer)
    quantify.setMinimumWidth(560)
    dock = viewer.window.add_dock_widget(quantify, name="Quantify", area="right")
    quantify.set_source("project")
    wait_worker(quantify.run())
    for layer in viewer.layers:
        layer.visible = False
    quantify.tabs.setCurrentIndex(1)
    layer = quantify.open_row("objects", 5)
    img_name = layer.name[: -len(" measured")] if layer is not None else None
    if img_name and img_name in viewer.layers:
        viewer.layers[img_name].visible = True
    quantify.objects_table.selectRow(5)
    viewer.reset_view()
    shot(viewer, out / "quantify.png", plots=[quantify.plot])
    viewer.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
