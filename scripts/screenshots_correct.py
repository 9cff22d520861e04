"""Render correct-and-retrain in a real napari window and save PNG screenshots.

Writes uncertainty.png (where the model is unsure, and the suggestions of where to annotate next)
and correct.png (a suggestion opened: its prediction turned into the annotation, an object deleted
with a click, the Correct box), from the DSB2018 nuclei quadrants and a small U-Net trained for a
few epochs on the CPU (~2 min on 2 cores).

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshots_correct.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import napari_seg_box.widgets  # noqa: F401  (the triton guard, before anything imports torch)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshots import QUADRANTS, output_folder, script_parser, settle, shot, show_tab, wait_worker  # noqa: E402


def scroll_to(panel, widget) -> None:
    from qtpy.QtWidgets import QScrollArea

    area = panel.findChild(QScrollArea)
    area.verticalScrollBar().setValue(widget.mapTo(area.widget(), widget.rect().topLeft()).y() - 8)
    settle(0.3)


def main(argv=None) -> int:
    args = script_parser(__doc__).parse_args(argv)
    out = output_folder(args)

    import napari

    from napari_seg_box.core import Project
    from napari_seg_box.core.samples import load_nuclei
    from napari_seg_box.core.train import TrainConfig
    from napari_seg_box.workflows.train import train_model

    tmp = tempfile.TemporaryDirectory()
    image, truth = load_nuclei()
    project = Project.create(os.path.join(tmp.name, "nuclei.zarr"), classes=["background", "nucleus"])
    for name, (y, x, split) in QUADRANTS.items():
        inst = truth[y : y + 256, x : x + 256]
        labels = (1 + (inst > 0)).astype(np.uint8) if name in ("nuclei q0", "nuclei q3") else None
        project.add_image(name, image[y : y + 256, x : x + 256], labels=labels, instances=inst if labels is not None else None, split=split)
    cfg = TrainConfig(
        encoder="resnet18", encoder_depth=4, epochs=args.epochs, patch_size=128, batch_size=8, learning_rate=3e-3, steps_per_epoch=10
    )
    version = train_model(project, cfg)
    print("trained", version)

    viewer = napari.Viewer(title="napari-seg-box")
    viewer.window._qt_window.resize(1600, 1000)
    _, predict = viewer.window.add_plugin_dock_widget("napari-seg-box", "Predict and evaluate")
    _, train = viewer.window.add_plugin_dock_widget("napari-seg-box", "Train")
    settle(1.0)
    show_tab(viewer, "Predict and evaluate")
    predict.project_box.set_url(project.url)
    predict.unsure_check.setChecked(True)
    wait_worker(predict.suggest_box.suggest())
    predict.suggest_box.list.setCurrentRow(0)
    predict.suggest_box.open(0)  # opens, predicts and starts the correction
    wait_worker(predict.predict_runner.worker)
    while predict.correct_box.labels_layer is None:
        settle(0.2)
    name = predict.suggest_box.suggestions[0].image
    for layer in viewer.layers:
        layer.visible = layer.name in (name, f"{name} uncertainty")
    viewer.layers.selection.active = viewer.layers[f"{name} uncertainty"]
    scroll_to(predict, predict.suggest_box)
    shot(viewer, out / "uncertainty.png")

    box = predict.correct_box
    for layer in viewer.layers:
        layer.visible = layer.name in (name, f"{name} annotations")
    viewer.layers.selection.active = box.labels_layer
    box.tool.setCurrentIndex(box.tool.findData("delete"))
    ids, sizes = np.unique(box.instances[box.instances > 0], return_counts=True)
    ys, xs = np.nonzero(box.instances == ids[np.argmin(sizes)])
    box.click((ys[len(ys) // 2], xs[len(xs) // 2]))  # a speck the model took for a nucleus
    scroll_to(predict, box)
    shot(viewer, out / "correct.png")
    train.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
