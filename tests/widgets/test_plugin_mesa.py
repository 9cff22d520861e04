"""Opening every widget through napari's plugin menu on a viewer that already shows an image.

Runs in a fresh interpreter so that the import order is the user's: napari draws first (Mesa's
llvmpipe under Xvfb loads its LLVM), then the widgets import torch, torchvision and smp. Without the
triton guard in ``napari_seg_box.widgets`` this order segfaults (see shared/DESIGN.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import napari
    from qtpy.QtWidgets import QApplication
    from napari_seg_box._sample_data import load_nuclei

    viewer = napari.Viewer()
    image, _ = load_nuclei()
    viewer.add_image(image, name="nuclei")
    QApplication.processEvents()
    shot = viewer.screenshot(canvas_only=True)  # the GL context exists and has drawn
    assert shot.max() > 0, "the canvas drew nothing"
    assert "torch" not in sys.modules and "triton" not in sys.modules
    widgets = {}
    for name in ("Annotate", "Train", "Predict and evaluate", "Quantify"):
        dock, widget = viewer.window.add_plugin_dock_widget("napari-seg-box", name)
        widgets[name] = widget
        QApplication.processEvents()
    train = widgets["Train"]
    end = time.time() + 240
    while not train.device_label.text().startswith(("CPU", "CUDA", "Apple")) and time.time() < end:
        QApplication.processEvents()
        time.sleep(0.05)
    print("device:", train.device_label.text())
    assert "torchvision" in sys.modules and "segmentation_models_pytorch" in sys.modules
    import torch
    from napari_seg_box.core.models import ModelSpec, build_model
    model = build_model(ModelSpec(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8)))
    out = model(torch.zeros(1, 1, 64, 64))
    assert tuple(out.shape) == (1, 2, 64, 64)
    viewer.add_labels(np.zeros((64, 64), np.uint8))  # napari keeps drawing afterwards
    QApplication.processEvents()
    viewer.screenshot(canvas_only=True)
    print("OK", sorted(type(w).__name__ for w in widgets.values()))
    viewer.close()
    """
)


def test_widgets_open_after_viewer_under_mesa():
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("SEGBOX_ALLOW_TRITON", None)
    assert env.get("DISPLAY"), "run the widget tests under Xvfb (xvfb-run -a pytest ...)"
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=400)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    assert "OK ['AnnotateWidget', 'PredictWidget', 'QuantifyWidget', 'TrainWidget']" in result.stdout
