"""Where to annotate next, in the Predict panel: the model ranks the project's unannotated images (or
tiles of large ones) by its uncertainty; clicking a suggestion opens the image zoomed to the region,
predicts it and starts its correction (:mod:`._correct`).

Core call: :func:`..core.suggest.iter_suggest` in a thread worker.
"""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QLabel, QListWidget, QPushButton, QSpinBox, QVBoxLayout

from ..layers import image_layer_of
from ._messages import guarded, report_error, report_info
from ._workers import Runner


class SuggestBox(QGroupBox):
    """The suggestion list of a :class:`~.predict.PredictWidget` (``panel``)."""

    def __init__(self, panel):
        super().__init__("Where to annotate next")
        self.panel = panel
        self.viewer = panel.viewer
        self.suggestions: list = []
        self.runner = Runner(on_return=self._show, on_error=self._on_error, on_finish=self._finished, owner=self)
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.suggest_btn = QPushButton("Suggest")
        self.suggest_btn.setToolTip("Rank the images nobody annotated yet by how unsure the model is of them")
        self.top = QSpinBox()
        self.top.setRange(1, 50)
        self.top.setValue(5)
        self.flips = QCheckBox("also flipped (slower)")
        self.flips.setToolTip("Also count where predictions of flipped copies of the image disagree")
        row.addWidget(self.suggest_btn)
        row.addWidget(QLabel("how many:"))
        row.addWidget(self.top)
        row.addWidget(self.flips)
        lay.addLayout(row)
        self.list = QListWidget()
        self.list.setMaximumHeight(130)
        self.list.setToolTip("Click a suggestion: the image opens at that region, predicted, ready to correct")
        lay.addWidget(self.list)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.suggest_btn.clicked.connect(lambda: self.suggest())
        self.list.itemClicked.connect(lambda item: self.open(self.list.row(item)))

    @guarded()
    def suggest(self):
        """Rank the unannotated images in a worker; returns the worker."""
        from ..core.errors import DataError, SegBoxError
        from ..core.suggest import iter_suggest

        if self.runner.running:
            raise SegBoxError("Suggestions are being computed: wait for them.")
        version = self.panel.version_combo.currentData()
        if not version:
            raise DataError("The project has no model version yet: train one in the Train panel first.")
        project = self.panel.project_box.project()
        self.suggest_btn.setEnabled(False)
        report_info(f"Looking for what model version {version} is least sure of…", self.status)
        mode = "tta" if self.flips.isChecked() else "entropy"
        return self.runner.start(iter_suggest, project, version, top=self.top.value(), mode=mode)

    def _show(self, suggestions) -> None:
        self.suggestions = list(suggestions)
        self.list.clear()
        for i, s in enumerate(self.suggestions, 1):
            y0, x0, y1, x1 = s.box
            where = s.image if s.z is None else f"{s.image} [plane {s.z}]"
            self.list.addItem(f"{i}. {where}  rows {y0}-{y1}, columns {x0}-{x1}  (uncertainty {s.uncertainty:.2f})")
        report_info(f"{len(self.suggestions)} suggestion(s), the most useful first: click one to correct it.", self.status)

    def _on_error(self, err) -> None:
        report_error(err, self.status)

    def _finished(self) -> None:
        self.suggest_btn.setEnabled(True)

    @guarded()
    def open(self, index: int):
        """Open suggestion ``index`` zoomed to its region, predict it and correct it when it is shown."""
        s = self.suggestions[index]
        project = self.panel.project_box.project()
        layer = image_layer_of(self.viewer, project, s.image)
        for other in self.viewer.layers:  # the suggestion alone in view
            other.visible = other is layer
        if s.z is not None:
            self.viewer.dims.set_current_step(0, s.z)
        self.viewer.reset_view()
        y0, x0, y1, x1 = s.box
        h, w = layer.data.shape[-3:-1] if layer.rgb else layer.data.shape[-2:]
        sy, sx = layer.scale[-2:]
        self.viewer.camera.center = ((y0 + y1) / 2 * sy, (x0 + x1) / 2 * sx)
        self.viewer.camera.zoom *= 0.95 * min(h / max(y1 - y0, 1), w / max(x1 - x0, 1))
        self.panel.correct_box.correct_when_shown = layer.name
        self.panel.predict(layer)
        return layer
