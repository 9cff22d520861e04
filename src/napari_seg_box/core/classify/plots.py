"""Figures of a classifier's evaluation: the confusion matrix and the gallery of its mistakes (matplotlib, no pyplot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def plot_confusion(conf: np.ndarray, class_names: Sequence[str]):
    """The confusion matrix as a figure: each row (true class) coloured by its share, with the counts."""
    from matplotlib.figure import Figure

    conf = np.asarray(conf)
    share = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig = Figure(figsize=(1.2 + 0.7 * k, 1.0 + 0.6 * k), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(conf[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (colour: share of the true class)")
    fig.tight_layout()
    return fig


def plot_mistakes(mistakes, thumbnails: Mapping[str, np.ndarray], *, columns: int = 8):
    """A gallery of the most confident mistakes: each thumbnail titled 'true -> predicted (confidence)'."""
    from matplotlib.figure import Figure

    rows = [r for r in mistakes.to_dict("records") if r["name"] in thumbnails]
    n = max(len(rows), 1)
    cols = min(columns, n)
    fig = Figure(figsize=(1.6 * cols, 2.1 * ((n + cols - 1) // cols)), dpi=100)
    if not rows:
        fig.text(0.5, 0.5, "no mistakes", ha="center", va="center")
        return fig
    for i, r in enumerate(rows):
        ax = fig.add_subplot((n + cols - 1) // cols, cols, i + 1)
        ax.imshow(thumbnails[r["name"]], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{r['true']} → {r['class']}\n({r['confidence']:.2f})", fontsize=7)
        ax.axis("off")
    fig.suptitle("Most confident mistakes (true → predicted)", fontsize=9)
    fig.tight_layout()
    return fig
