"""Render the classification panels at work in a real napari window and save PNG screenshots.

Writes classify_annotate.png (a classification project: the image's class buttons, the counts, a
gallery layer) and classify_evaluate.png (the evaluation: per-class table, confusion matrix and the
mistakes layer), from the 300 mlcp-cellcycle cells of tests/data and a ResNet18 trained for a few
epochs on the CPU (~2 min on 2 cores).

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshots_classify.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import napari_seg_box.widgets  # noqa: F401  (the triton guard, before anything imports torch)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshots import output_folder, script_parser, settle, shot, show_tab, wait_worker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CELLS = REPO / "tests" / "data" / "mlcp-cellcycle"


def main(argv=None) -> int:
    args = script_parser(__doc__).parse_args(argv)
    out = output_folder(args)

    import napari

    from napari_seg_box.core import Project
    from napari_seg_box.core.classify import split_stratified
    from napari_seg_box.widgets._libraries import wait_for_libraries

    tmp = tempfile.TemporaryDirectory()
    folders = Path(tmp.name) / "cells"
    shutil.copytree(CELLS, folders)
    viewer = napari.Viewer(title="napari-seg-box")
    viewer.window._qt_window.resize(1600, 1000)
    panels = {}
    for title in ("Annotate", "Train", "Predict and evaluate"):
        _, panels[title] = viewer.window.add_plugin_dock_widget("napari-seg-box", title)
    annotate, train, predict = panels.values()
    settle(1.0)

    show_tab(viewer, "Annotate")
    annotate.task_combo.setCurrentIndex(annotate.task_combo.findData("classification"))
    project = annotate.create_project(os.path.join(tmp.name, "cells.zarr"))
    annotate.image_classes.import_folders(str(folders))
    while annotate.image_classes.runner.running:
        settle(0.2)
    split_stratified(Project.open(project.url), (0.7, 0.15, 0.15), seed=0)
    annotate.refresh()
    annotate.image_classes.show_gallery("G2")
    viewer.layers["gallery: G2"].visible = False
    annotate.open_image("G2_0003")
    viewer.reset_view()
    shot(viewer, out / "classify_annotate.png")

    show_tab(viewer, "Train")
    train.project_box.set_url(project.url)
    train.epochs.setValue(args.epochs)
    wait_for_libraries()
    run = train.start()
    wait_worker(run.runner.worker)
    print(f"trained {run.version}: {train.status.text()}")

    show_tab(viewer, "Predict and evaluate")
    predict.refresh_versions()
    wait_worker(predict.evaluate("test"))
    for layer in viewer.layers:
        layer.visible = layer.name.startswith("mistakes")
    viewer.reset_view()
    shot(viewer, out / "classify_evaluate.png")
    viewer.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
