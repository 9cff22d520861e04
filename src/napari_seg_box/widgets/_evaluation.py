"""What the Predict and evaluate dock shows of an :class:`~..core.evaluate.Evaluation`: a one-line
summary, the per-image table with a pooled first row, and TP/FP/FN error-map layers."""

from __future__ import annotations

import numpy as np

from ..layers import is_image, link, linked
from ..workflows.report import ERROR_KINDS

ERROR_COLORS = {None: "transparent", 0: "transparent", **{k: color for k, (_, color) in ERROR_KINDS.items()}}
ERROR_LEGEND = "Error layers: " + " ".join(f'<span style="color:{color}">■</span> {word}' for word, color in ERROR_KINDS.values())
OBJECT_COLUMNS = (
    "n_true",
    "n_pred",
    "tp@0.5",
    "fp@0.5",
    "fn@0.5",
    "precision@0.5",
    "recall@0.5",
    "f1@0.5",
    "panoptic_quality@0.5",
    "f1@avg",
)


def evaluation_summary(ev) -> str:
    s = ev.summary
    pix = s["pixel"]
    f1 = s.get("mean_object_f1@0.5")
    return (
        f"Model {s.get('model_version')} on {s['n_images']} {s.get('split')} image(s): pixel accuracy {pix['accuracy']:.3f}, "
        f"mean IoU {pix['mean_iou']:.3f}, mean Dice {pix['mean_dice']:.3f}"
        + (f"; objects: F1@0.5 {f1:.3f}, mean |count error| {s['mean_abs_count_error']:.1f}" if f1 is not None and np.isfinite(f1) else "")
    )


def evaluation_table(ev):
    """Per-image pixel and object metrics, after a first row of the pooled figures."""
    import pandas as pd

    s = ev.summary
    pix = s["pixel"]
    cols = ["image", "pixel_accuracy", "mean_iou", "mean_dice"]
    obj_cols = [c for c in ev.per_image.columns if c.split("[")[0] in OBJECT_COLUMNS]
    # what a reader looks for first, left, where a narrow dock still shows it
    first = ["image", *[c for c in obj_cols if c.startswith("f1@0.5")], "mean_iou"]
    table = ev.per_image[first + [c for c in cols + obj_cols if c not in first]].copy()
    pooled = {"image": "ALL (pooled)", "pixel_accuracy": pix["accuracy"], "mean_iou": pix["mean_iou"], "mean_dice": pix["mean_dice"]}
    for oc, vals in (s.get("objects") or {}).items():
        suffix = "" if len(s["objects"]) == 1 else f"[{oc}]"
        for c in obj_cols:
            key = c[: -len(suffix)] if suffix and c.endswith(suffix) else c
            if c.endswith(suffix) and key in vals:
                pooled[c] = vals[key]
    return pd.concat([pd.DataFrame([pooled]), table], ignore_index=True)[list(table.columns)]


def show_error_maps(viewer, project, ev) -> list:
    """One labels layer of TP / FP / FN objects per evaluated image and class (the image opened if
    needed); hovering an object shows its kind (the layer's ``error`` feature). Returns the layers."""
    import pandas as pd
    from napari.utils.colormaps import DirectLabelColormap

    cmap = DirectLabelColormap(color_dict=ERROR_COLORS)
    features = pd.DataFrame({"index": [0, *ERROR_KINDS], "error": ["", *(word for word, _ in ERROR_KINDS.values())]})
    several = len({key.split("/", 1)[1] for key in ev.error_maps}) > 1
    layers = []
    for key, summary in ev.error_maps.items():
        image_name, class_name = key.split("/", 1)
        shown = any(is_image(la) and linked(la, name=image_name) for la in viewer.layers)
        if not shown and image_name not in viewer.layers and image_name in project.image_names():  # not a plane "stack[z=3]"
            rec = project.image_record(image_name)
            viewer.add_image(project.get_image(image_name), name=image_name, rgb=rec.channels == 3, metadata=link(project.url, image_name))
        name = f"{image_name} {class_name} errors" if several else f"{image_name} errors"
        if name in viewer.layers:
            viewer.layers.remove(viewer.layers[name])
        layers.append(viewer.add_labels(summary, name=name, colormap=cmap, opacity=0.6, features=features))
    return layers
