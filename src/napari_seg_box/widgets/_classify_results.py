"""What the Predict and evaluate dock does with a classification model: classify the image layer,
and show an evaluation (per-class table, confusion matrix, the most confident mistakes as a layer).

The work runs in the dock's thread workers through the generators below (one core call each:
``Classifier.classify``, ``evaluate_classifier``)."""

from __future__ import annotations

import numpy as np

from ..core.events import Progress
from ._messages import report_info


def classify_layer(image, project, version, *, name: str, cancel=None):
    """Worker: the class table (one row) of one image layer's data."""
    from ..core.classify import Classifier

    yield Progress(0, 1, stage="classify")
    clf = Classifier.from_project(project, version)
    return clf.classify([image], names=[name])


def evaluate_classification(project, version, *, split: str, cancel=None):
    """Worker: :func:`~..core.classify.evaluate_classifier`, its summary saved in the store like the CLI's."""
    from ..core.classify import evaluate_classifier

    yield Progress(0, 1, stage="evaluate")
    ev = evaluate_classifier(project, version, split=split)
    project.write_json(f"results/evaluations/{ev.version}-{split}.json", ev.summary())
    return ev


def class_line(table) -> str:
    """'G1 (93 %); then S 5 %, G2 2 %' for the one row of ``table``."""
    row = table.iloc[0]
    probs = sorted(((c[2:], float(row[c])) for c in table.columns if c.startswith("p_")), key=lambda t: -t[1])
    rest = ", ".join(f"{c} {p:.0%}" for c, p in probs[1:4])
    return f"{row['name']}: {row['class']} ({row['confidence']:.0%})" + (f"; then {rest}" if rest else "")


def per_class_table(ev):
    """The per-class table after a first row of the pooled figures."""
    import pandas as pd

    m = ev.metrics
    first = {"class": "ALL (macro)", "precision": ev.per_class["precision"].mean(), "recall": m["balanced_accuracy"], "f1": m["macro_f1"]}
    return pd.concat([pd.DataFrame([{**first, "support": int(ev.per_class["support"].sum())}]), ev.per_class], ignore_index=True)


def confusion_table(ev):
    import pandas as pd

    frame = pd.DataFrame(ev.confusion, index=ev.class_names, columns=[f"→ {c}" for c in ev.class_names])
    return frame.rename_axis("true class").reset_index()


def show_mistakes(viewer, ev):
    """An image layer of the most confident mistakes side by side, each captioned 'true → predicted
    (confidence)' by a points layer's text; returns the image layer (None without mistakes)."""
    wrong = [r for r in ev.mistakes.to_dict("records") if r["name"] in ev.thumbnails]
    for title in ("mistakes", "mistakes: captions"):
        if title in viewer.layers:
            viewer.layers.remove(viewer.layers[title])
    if not wrong:
        return None
    thumbs = [ev.thumbnails[r["name"]] for r in wrong]
    side = thumbs[0].shape[0] + 14  # room for the caption
    cols = min(8, len(thumbs))
    rgb = thumbs[0].ndim == 3
    montage = np.zeros((side * int(np.ceil(len(thumbs) / cols)), side * cols) + ((3,) if rgb else ()), np.float32)
    points, captions = [], []
    for k, (t, r) in enumerate(zip(thumbs, wrong)):
        y, x = divmod(k, cols)
        montage[y * side + 14 : y * side + 14 + t.shape[0], x * side : x * side + t.shape[1]] = t
        points.append((y * side + 6, x * side + side / 2))
        captions.append(f"{r['true']} → {r['class']} ({r['confidence']:.2f})")
    layer = viewer.add_image(
        montage, name="mistakes", rgb=rgb, contrast_limits=(0, 1), metadata={"segbox_mistakes": [r["name"] for r in wrong]}
    )
    viewer.add_points(
        np.array(points), name="mistakes: captions", size=0.1, features={"caption": captions},
        text={"string": "{caption}", "size": 7, "color": "yellow"},
    )  # fmt: skip
    return layer


def show_classifier_evaluation(panel, ev) -> None:
    """Show a classifier's evaluation in the Predict panel: scores, per-class table, confusion matrix, mistakes layer."""
    panel.summary_label.setText("\n".join(ev.text().splitlines()[: 2 if ev.timing else 1]))  # scores, then speed
    panel.metrics_table.set_frame(per_class_table(ev))
    panel.confusion_table.set_frame(confusion_table(ev))
    panel.confusion_table.setVisible(True)
    panel.export_btn.setEnabled(True)
    show_mistakes(panel.viewer, ev)
    report_info(f"Evaluation of {ev.version} saved in the project (results/evaluations/); 'mistakes' shows the worst.", panel.status)
