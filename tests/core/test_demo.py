"""The README's main job: ``napari-seg-box demo`` runs the whole loop on the bundled data."""

from __future__ import annotations

import json

import pandas as pd

from napari_seg_box.cli import main


def test_demo_runs_the_whole_loop(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "3"]) == 0
    printed = capsys.readouterr().out
    assert "held-out test image q3: nucleus IoU" in printed and "report:" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_version"] == "v001"
    assert summary["test"]["nucleus_iou"] > 0.5, summary  # it learned, on an image it never saw
    assert 0 < summary["baseline_test"]["nucleus_iou"] < 1
    objects = pd.read_csv(out / "quantification" / "objects.csv")
    assert len(objects) == summary["objects_counted"] > 40 and set(objects["image"]) == {"q0", "q1", "q2", "q3"}
    comparison = pd.read_csv(out / "comparison.csv")
    assert len(comparison) == 2 and comparison["true_count"].tolist() == [29, 29]
    html = (out / "report.html").read_text()
    assert "Held-out accuracy" in html and html.count("data:image/png;base64") >= 3
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [f"q{i}_instances.tif" for i in range(4)]
