"""Render a real napari window with each napari-seg-box widget at work, and save PNG screenshots.

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshots.py [--out docs/images]

Uses the plugin's sample data (DSB2018 nuclei, split into four 256x256 quadrants: two for training,
one for validation, one held-out test image), paints sparse annotations from the ground truth,
trains a small U-Net for a few epochs on the CPU (a few minutes), predicts and evaluates the test
quadrant and quantifies the project. The four panels open as the Plugins menu opens them (tabbed).
Writes annotate.png, train.png, predict.png, quantify.png, and one_class.png (the question asked
when only objects are painted) and train_reopened.png (the Train panel closed and reopened during
a run).
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


def dock_named(viewer, title: str):
    """The QDockWidget of a plugin panel (napari titles it "<panel> (Seg Box)")."""
    from qtpy.QtWidgets import QDockWidget

    return next(d for d in viewer.window._qt_window.findChildren(QDockWidget) if d.windowTitle().startswith(title))


def show_tab(viewer, title: str) -> None:
    dock = dock_named(viewer, title)
    dock.show()
    dock.raise_()
    settle(0.3)


def paint_like_a_person(inst: np.ndarray, rng) -> np.ndarray:
    """Sparse annotation, as a person paints: some whole nuclei, and background strokes between them."""
    painted = np.zeros(inst.shape, np.uint8)
    ids = [i for i in np.unique(inst) if i]
    for i in rng.choice(ids, size=max(1, int(0.6 * len(ids))), replace=False):
        painted[inst == i] = 2
    yy, xx = np.mgrid[: inst.shape[0], : inst.shape[1]]
    for _ in range(14):
        cy, cx, r = rng.integers(10, inst.shape[0] - 10), rng.integers(10, inst.shape[1] - 10), rng.integers(6, 14)
        painted[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (inst == 0)] = 1
    return painted


def one_class_question(viewer, out: Path, image, truth, tmp: str) -> None:
    """The question the Train panel asks when only objects are painted (issue 20, point 1)."""
    from napari_seg_box.core import Project, TrainConfig, train_model
    from napari_seg_box.core.errors import OneClassError
    from napari_seg_box.widgets._messages import question_box
    from napari_seg_box.widgets.train import ONE_CLASS_CHOICE

    p = Project.create(os.path.join(tmp, "objects_only.zarr"), classes=["background", "nucleus"])
    p.add_image("cells", image[:256, :256], labels=np.where(truth[:256, :256] > 0, 2, 0).astype(np.uint8))
    try:
        train_model(p, TrainConfig(epochs=1))
        raise AssertionError("objects alone were not refused")
    except OneClassError as err:
        box, _ = question_box(
            viewer.window._qt_window, "Only one class is painted", err.message, [ONE_CLASS_CHOICE, "I will paint some background"]
        )
    box.show()
    settle(0.5)
    box.grab().save(str(out / "one_class.png"))
    print("wrote", out / "one_class.png")
    box.close()


def script_parser(doc: str) -> argparse.ArgumentParser:
    """The options every screenshot script has: the output folder and the training epochs."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    parser.add_argument("--epochs", type=int, default=8)
    return parser


def output_folder(args) -> Path:
    """Plots without a display, and the output folder, made."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--project", default=None, help="project folder to create (default: a temporary one)")
    args = parser.parse_args(argv)
    out = output_folder(args)

    import napari

    import napari_seg_box.widgets.train as train_module
    from napari_seg_box.widgets._libraries import wait_for_libraries

    tmp = tempfile.TemporaryDirectory()
    store = args.project or os.path.join(tmp.name, "nuclei.zarr")
    viewer = napari.Viewer(title="napari-seg-box")
    viewer.window._qt_window.resize(1600, 1000)  # the screen of the person who tried it (issue 20)
    viewer.open_sample("napari-seg-box", "nuclei")
    image = np.asarray(viewer.layers["nuclei"].data)
    truth = np.asarray(viewer.layers["nuclei ground truth"].data)
    viewer.layers.remove("nuclei ground truth")
    viewer.layers.remove("nuclei")
    # the four panels as the Plugins menu opens them: tabbed in one dock area, each scrolling
    panels = {}
    for title in ("Annotate", "Train", "Predict and evaluate", "Quantify"):
        _, panels[title] = viewer.window.add_plugin_dock_widget("napari-seg-box", title)
    annotate, train, predict, quantify = panels.values()
    settle(1.0)

    # ---------------------------------------------------------------- annotate
    show_tab(viewer, "Annotate")
    annotate.create_project(store, classes=["background", "nucleus"])
    rng = np.random.default_rng(0)
    for name, (y, x, split) in QUADRANTS.items():
        viewer.add_image(image[y : y + 256, x : x + 256], name=name, contrast_limits=(0, float(np.percentile(image, 99.8))))
        annotate.add_layer(name, split=split)
        inst = truth[y : y + 256, x : x + 256]
        painted = paint_like_a_person(inst, rng) if split == "train" else (1 + (inst > 0)).astype(np.uint8)
        annotate.labels_layer_for(name).data = painted
    annotate.save()
    annotate.open_image("nuclei q0")
    annotate._ready_to_paint(annotate.labels_layer_for("nuclei q0"), annotate.project_box.project())
    viewer.reset_view()
    shot(viewer, out / "annotate.png")
    one_class_question(viewer, out, image, truth, tmp.name)

    # ---------------------------------------------------------------- train
    show_tab(viewer, "Train")
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
    wait_for_libraries()
    settle(0.5)
    t0 = time.time()
    run = train.start()
    # close the Train panel while it trains ("keep training"), reopen it from the Plugins menu: it
    # shows the run (issue 20, point 5)
    while len(run.history) < 2 and run.running:
        settle(0.2)
    train_module.ask = lambda *a, **k: 0
    dock_named(viewer, "Train").destroyOnClose()
    settle(0.5)
    _, train = viewer.window.add_plugin_dock_widget("napari-seg-box", "Train")
    show_tab(viewer, "Train")
    train.plot.wait()
    shot(viewer, out / "train_reopened.png", plots=[train.plot])
    wait_worker(run.runner.worker)
    print(f"trained {run.version} in {time.time() - t0:.0f} s: {train.status.text()}")
    shot(viewer, out / "train.png", plots=[train.plot])

    # ---------------------------------------------------------------- predict & evaluate
    show_tab(viewer, "Predict and evaluate")
    for layer in list(viewer.layers):
        layer.visible = layer.name == "nuclei q3"
    wait_worker(predict.predict("nuclei q3"))
    while predict.objects is None or predict.pp_runner.running:
        settle(0.2)
    wait_worker(predict.evaluate("test"))
    for layer in viewer.layers:
        layer.visible = layer.name in ("nuclei q3", "nuclei q3 prediction", "nuclei q3 outlines")
    viewer.layers.selection.active = viewer.layers["nuclei q3 prediction"]
    viewer.reset_view()
    shot(viewer, out / "predict.png")

    # ---------------------------------------------------------------- quantify
    show_tab(viewer, "Quantify")
    quantify.set_source("project")
    wait_worker(quantify.run())
    for layer in viewer.layers:
        layer.visible = False
    quantify.tabs.setCurrentIndex(1)
    objects = quantify.result.objects
    first = objects[objects["image"] == objects["image"].iloc[0]]
    row = int((first["area_px2"] - first["area_px2"].median()).abs().idxmin())  # a typical nucleus
    layer = quantify.open_row("objects", row)
    img_name = layer.name[: -len(" measured")] if layer is not None else None
    if img_name and img_name in viewer.layers:
        viewer.layers[img_name].visible = True
    quantify.objects_table.selectRow(row)
    viewer.reset_view()
    shot(viewer, out / "quantify.png", plots=[quantify.plot])
    viewer.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
