"""The post-processing controls of the Predict panel: sliders, the model's tuned settings, the count."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QLabel, QPushButton


def _slider(low, high, step, tip: str, *, double: bool = False):
    from superqt import QLabeledDoubleSlider, QLabeledSlider

    slider = (QLabeledDoubleSlider if double else QLabeledSlider)(Qt.Orientation.Horizontal)
    slider.setRange(low, high)
    slider.setSingleStep(step)
    slider.setToolTip(tip)
    return slider


class PostprocessBox(QGroupBox):
    """Threshold, erosion, minimum size and watershed splitting; ``changed`` fires on every move."""

    changed = Signal()

    def __init__(self, parent=None):
        from ..core.postprocess import PostprocessConfig

        super().__init__("Objects (update live, without running the network again)", parent)
        form = QFormLayout(self)
        self.threshold = _slider(
            0.05, 0.95, 0.05, "A pixel belongs to an object when its probability of not being background is at least this", double=True
        )
        form.addRow("Threshold:", self.threshold)
        self.erosion = _slider(
            0, 30, 1, "Shrink objects by this many pixels before separating them (splits touching ones), then grow them back"
        )
        form.addRow("Erosion (px):", self.erosion)
        self.min_size = _slider(0, 5000, 10, "Objects smaller than this many pixels are dropped")
        form.addRow("Minimum size (px):", self.min_size)
        self.split = QCheckBox("split touching objects (watershed)")
        form.addRow(self.split)
        self.seed_distance = _slider(1, 100, 1, "Smallest distance between the centres of two touching objects")
        self.seed_distance_label = QLabel("Seed distance (px):")
        form.addRow(self.seed_distance_label, self.seed_distance)
        self.seed_level = _slider(
            0.05,
            0.95,
            0.05,
            "Objects grow from the centres the model predicts: pixels whose predicted distance to the border "
            "(0 at the border, 1 at the centre) is at least this. Higher splits more.",
            double=True,
        )
        self.seed_level_label = QLabel("Centre level:")
        form.addRow(self.seed_level_label, self.seed_level)
        self.tuned_btn = QPushButton("Use the model's tuned settings")
        form.addRow(self.tuned_btn)
        self.tuned_label = QLabel("")  # which settings, wrapped: a long button would widen the panel
        self.tuned_label.setWordWrap(True)
        form.addRow(self.tuned_label)
        self.count_label = QLabel("")
        form.addRow(self.count_label)
        self._facts: dict = {}  # the model's outputs (boundary, distance)
        self.set_config(PostprocessConfig())  # the core's defaults until a model version is chosen
        for w in (self.threshold, self.erosion, self.min_size, self.seed_distance, self.seed_level):
            w.valueChanged.connect(lambda *a: self.changed.emit())
        self.split.toggled.connect(lambda *a: self.changed.emit())
        self.split.toggled.connect(self.seed_distance.setEnabled)
        self.split.toggled.connect(self.seed_level.setEnabled)

    def config(self, base=None):
        """The :class:`PostprocessConfig` of the controls (other settings from ``base``)."""
        from ..core.postprocess import PostprocessConfig

        return (base or PostprocessConfig()).replace(
            threshold=round(float(self.threshold.value()), 4),
            erosion=int(self.erosion.value()),
            min_size=int(self.min_size.value()),
            instances="watershed" if self.split.isChecked() else "components",
            seed_distance=int(self.seed_distance.value()),
            seed_level=round(float(self.seed_level.value()), 4),
            seeds=self._seeds,  # set by the model's tuned settings (no control of its own)
        )

    def set_config(self, cfg) -> None:
        controls = (self.threshold, self.erosion, self.min_size, self.seed_distance, self.seed_level, self.split)
        for w in controls:
            w.blockSignals(True)
        self.threshold.setValue(cfg.threshold)
        self.erosion.setValue(cfg.erosion)
        self.min_size.setValue(cfg.min_size)
        self.seed_distance.setValue(cfg.seed_distance)
        self.seed_level.setValue(cfg.seed_level)
        self.split.setChecked(cfg.instances == "watershed")
        self.seed_distance.setEnabled(cfg.instances == "watershed")
        self.seed_level.setEnabled(cfg.instances == "watershed")
        self._seeds = cfg.seeds
        self._show_seeds()
        for w in controls:
            w.blockSignals(False)
        self.changed.emit()

    def show_model(self, info) -> None:
        """Say on the button what the model version's tuned settings are (or that it has none), and
        show the watershed setting its outputs use (seed distance, or centre level for a distance model)."""
        self._facts = info.output_facts if info is not None else {}
        self._show_seeds()
        if info is None or info.tuning is None:
            self.tuned_btn.setEnabled(False)
            who = info.version if info is not None else "The model"
            self.tuned_btn.setText(f"{who} has no tuned settings")
            self.tuned_label.setText("The defaults are used.")
            return
        cfg = info.tuning.config
        self.tuned_btn.setEnabled(True)
        self.tuned_btn.setText(f"Use {info.version}'s tuned settings")
        self.tuned_label.setText(
            f"Tuned: threshold {cfg.threshold:g}, min size {cfg.min_size}, {cfg.objects_in_words(**info.output_facts)}"
        )

    def _show_seeds(self) -> None:
        """The seed distance for the distance-transform watershed, the centre level for a distance
        model's own seeds, neither for a boundary model's (the predicted interiors)."""
        own = self._seeds == "model" and (self._facts.get("boundary") or self._facts.get("distance"))
        for label, slider, shown in (
            (self.seed_distance_label, self.seed_distance, not own),
            (self.seed_level_label, self.seed_level, bool(own and self._facts.get("distance"))),
        ):
            label.setVisible(shown)
            slider.setVisible(shown)


@dataclass
class Objects:
    """The objects of one prediction under one post-processing: what the Predict dock shows."""

    config: object  # the PostprocessConfig
    semantic: np.ndarray
    instances: np.ndarray
    classes: dict = field(default_factory=dict)  # instance id -> class value (a stack: of its planes)
    count: int = 0  # objects (a stack: of all its planes)
    paths: list = field(default_factory=list)  # closed outlines of a 2-D result, (N, 2) arrays


def iter_objects(probabilities, config, *, boundary: bool = False, distance: bool = False, record=None, cancel=None):
    """Post-process a prediction (a volume of the store, ``record``, in 3D; another stack plane by
    plane) and outline it, in a worker thread.

    A generator for :class:`~._common.Runner`: it yields nothing and returns :class:`Objects`.
    """
    from ..core.errors import CancelledError
    from ..core.postprocess import outlines, postprocess

    if probabilities.ndim == 4 and record is not None and record.is_stack and not record.is_timelapse:
        from ..core.volume import postprocess_volume

        r = postprocess_volume(probabilities, config, voxel_size=record.voxel_size, boundary=boundary, distance=distance)
        yield from ()
        return Objects(config, r.semantic, r.instances, dict(r.instance_classes), r.n_objects)
    planes = probabilities if probabilities.ndim == 4 else [probabilities]
    results = []
    for p in planes:
        if cancel is not None and cancel.is_set():
            raise CancelledError("post-processing cancelled")
        results.append(postprocess(p, config, boundary=boundary, distance=distance))
        yield from ()
    if probabilities.ndim == 4:
        classes = {}
        for r in results:
            classes.update(r.instance_classes)
        semantic, instances = np.stack([r.semantic for r in results]), np.stack([r.instances for r in results])
        return Objects(config, semantic, instances, classes, sum(r.n_objects for r in results))
    r = results[0]
    paths = outlines(r.instances)[0] if config.instances != "none" else []
    return Objects(config, r.semantic, r.instances, dict(r.instance_classes), r.n_objects, paths)
