"""The classical baseline segments real nuclei; the HTML report is self-contained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_seg_box.core.baseline import classical_segmentation
from napari_seg_box.workflows.report import Report, error_overlay, overlay

from ..conftest import nuclei


def test_classical_baseline_counts_real_nuclei(shared_data):
    image, truth = nuclei()
    labels = classical_segmentation(image)
    n_true = len(np.unique(truth)) - 1
    assert 0.6 * n_true < labels.max() <= 1.2 * n_true
    fg_iou = ((labels > 0) & (truth > 0)).sum() / ((labels > 0) | (truth > 0)).sum()
    assert fg_iou > 0.6
    # the watershed splits touching nuclei: more objects than plain connected components
    assert labels.max() > classical_segmentation(image, watershed=False).max()


def test_report_is_self_contained_html(tmp_path, shared_data):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, truth = nuclei()
    report = Report("Test <report>")
    report.headline("F1 = 0.9")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report.figure(fig, "a curve")
    report.figure(overlay(image, truth), "overlay")
    report.figure(error_overlay(image, truth == 1, truth == 2, truth == 3), "errors")
    report.table(pd.DataFrame({"metric": ["f1"], "value": [0.91234]}), "metrics")
    report.key_values({"threshold": 0.5, "encoders": ["resnet18", "resnet34"]}, "settings")
    path = report.save(tmp_path / "r.html")
    text = Path(path).read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 3
    assert "Test &lt;report&gt;" in text and "0.912" in text and "resnet18, resnet34" in text
    assert "http://" not in text and "https://" not in text, "no external resources"
    rgb = overlay(image, truth)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    assert (rgb == (255, 255, 0)).all(axis=-1).sum() > 1000, "outlines drawn"
