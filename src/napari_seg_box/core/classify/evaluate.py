"""Evaluating classifiers on held-out images: metrics, per-class table, confusion matrix, the most
confident mistakes, inference time per sample; and several versions side by side (AIMIC's table)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .metrics import classification_metrics, confusion
from .model import Classifier, count_parameters


@dataclass
class ClassifierEvaluation:
    """What :func:`evaluate_classifier` measured (tables are pandas DataFrames)."""

    version: str
    split: str
    class_names: list[str]
    metrics: dict  # accuracy, balanced_accuracy, macro_f1
    per_class: object  # class, precision, recall, f1, support
    confusion: np.ndarray  # (K, K): rows true, columns predicted
    predictions: object  # name, true, class, confidence, correct, p_<class>...
    timing: dict = field(default_factory=dict)  # ms_per_sample_batch1, ms_per_sample_batched, device
    parameters: int = 0
    thumbnails: dict = field(default_factory=dict)  # name -> (Y, X[, 3]) float image, for the mistakes

    @property
    def mistakes(self):
        """The wrong predictions, most confident first."""
        p = self.predictions
        return p[~p["correct"]].sort_values("confidence", ascending=False).reset_index(drop=True)

    def summary(self) -> dict:
        return {
            "version": self.version,
            "split": self.split,
            "images": len(self.predictions),
            **self.metrics,
            **self.timing,
            "parameters": self.parameters,
        }

    def text(self) -> str:
        """A few lines for people."""
        m = self.metrics
        lines = [
            f"Model {self.version} on {len(self.predictions)} {self.split} image(s): accuracy {m['accuracy']:.3f}, "
            f"balanced accuracy {m['balanced_accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}"
        ]
        if self.timing:
            lines.append(
                f"Inference on {self.timing['device']}: {self.timing['ms_per_sample_batch1']:.2f} ms per image one at a time, "
                f"{self.timing['ms_per_sample_batched']:.2f} ms batched ({self.parameters / 1e6:.1f} M parameters)"
            )
        lines.append(self.per_class.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        return "\n".join(lines)

    def save(self, folder: str | os.PathLike) -> list[str]:
        """Write summary.json, per_class.csv, confusion.csv, predictions.csv, confusion.png and
        mistakes.png into ``folder``; returns the paths."""
        import pandas as pd

        from .plots import plot_confusion, plot_mistakes

        os.makedirs(folder, exist_ok=True)
        paths = {
            k: os.path.join(folder, k)
            for k in ("summary.json", "per_class.csv", "confusion.csv", "predictions.csv", "confusion.png", "mistakes.png")
        }
        with open(paths["summary.json"], "w") as f:
            json.dump(self.summary(), f, indent=2)
        self.per_class.to_csv(paths["per_class.csv"], index=False)
        pd.DataFrame(self.confusion, index=self.class_names, columns=self.class_names).rename_axis("true \\ predicted").to_csv(
            paths["confusion.csv"]
        )
        self.predictions.to_csv(paths["predictions.csv"], index=False)
        plot_confusion(self.confusion, self.class_names).savefig(paths["confusion.png"], dpi=120, bbox_inches="tight")
        plot_mistakes(self.mistakes, self.thumbnails).savefig(paths["mistakes.png"], dpi=120, bbox_inches="tight")
        return list(paths.values())


def evaluate_classifier(
    project, version: str | None = None, *, split: str = "test", device: str = "auto", timing: bool = True, mistakes: int = 16,
    tta: bool = False,
) -> ClassifierEvaluation:  # fmt: skip
    """Classify the project's ``split`` images that have a class and score the predictions (``tta``:
    averaged over the 8 flips and rotations of each image)."""
    import pandas as pd

    clf = Classifier.from_project(project, version, device=device)
    recs = [r for r in project.images(split) if r.image_class is not None]
    if not recs:
        raise DataError(
            f"No {split} image has a class: hold some classified images out (napari-seg-box split test NAMES, or the "
            "split menu of the Annotate panel) to evaluate on them."
        )
    unknown = sorted({r.image_class for r in recs} - set(clf.class_names))
    if unknown:
        raise DataError(f"Model {clf.info.version} does not know the class(es) {', '.join(unknown)}: train a new model on them.")
    names = [r.name for r in recs]
    x = np.stack([clf.prepare(project.get_image(n), name=n) for n in names])
    p = clf.predict_proba(x, tta=tta)
    k = len(clf.class_names)
    truth = np.array([clf.class_names.index(r.image_class) for r in recs])
    pred = p.argmax(1)
    m = classification_metrics(confusion(truth, pred, k))
    per_class = pd.DataFrame(
        {"class": clf.class_names, "precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "support": m["support"]}
    )
    table = pd.DataFrame(
        {"name": names, "true": [r.image_class for r in recs], "class": [clf.class_names[i] for i in pred], "confidence": p.max(1)}
    )
    table["correct"] = table["true"] == table["class"]
    for j, c in enumerate(clf.class_names):
        table[f"p_{c}"] = p[:, j]
    wrong = table[~table["correct"]].sort_values("confidence", ascending=False)["name"][:mistakes]
    thumbs = {n: _thumbnail(x[names.index(n)]) for n in wrong}
    times = {}
    if timing:
        from ..models import device_name

        times = {**clf.time_per_sample(x[:256], tta=tta), "device": device_name(clf.device)}
    return ClassifierEvaluation(
        clf.info.version, split, clf.class_names,
        {k_: m[k_] for k_ in ("accuracy", "balanced_accuracy", "macro_f1")},
        per_class, confusion(truth, pred, k), table, times, count_parameters(clf.model), thumbs,
    )  # fmt: skip


def compare_classifiers(project, versions: Sequence[str] | None = None, *, split: str = "test", device: str = "auto", tta: bool = False):
    """Several classification versions on the same held-out images: one row each (accuracy,
    balanced accuracy, macro-F1, ms per image one at a time and batched, parameters, training time)."""
    import pandas as pd

    versions = list(versions) if versions else [e.version for e in project.model_versions() if e.task == "classification"]
    if not versions:
        raise DataError("This project has no classification model yet: train one first.")
    rows = []
    for v in versions:
        ev = evaluate_classifier(project, v, split=split, device=device, mistakes=0, tta=tta)
        info = project.model_version(v)
        rows.append(
            {
                "version": v,
                "network": info.encoder,
                "accuracy": ev.metrics["accuracy"],
                "balanced_accuracy": ev.metrics["balanced_accuracy"],
                "macro_f1": ev.metrics["macro_f1"],
                "ms_per_image_batch1": ev.timing["ms_per_sample_batch1"],
                "ms_per_image_batched": ev.timing["ms_per_sample_batched"],
                "parameters_M": ev.parameters / 1e6,
                "training_s": info.training.duration_s,
            }
        )
    return pd.DataFrame(rows)


def _thumbnail(x: np.ndarray) -> np.ndarray:
    """A prepared (C, S, S) image for people: one channel grey, or the first three as RGB, in [0, 1]."""
    im = np.clip(x[:3].transpose(1, 2, 0), 0, 1)
    return im[..., 0] if im.shape[-1] == 1 else np.pad(im, ((0, 0), (0, 0), (0, 3 - im.shape[-1]))) if im.shape[-1] < 3 else im
