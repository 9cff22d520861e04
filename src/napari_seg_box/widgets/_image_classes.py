"""The Annotate panel of a classification project: a class per image.

One button per class (keys 1-9 on the project's image layers do the same), the counts per class
and split, "next image without a class", importing class folders (in a thread worker), and a
gallery layer of one class's images to review them. Each action is one core call
(``project.set_image_class``, ``iter_import_classified``).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ..layers import IMAGE_KEY, linked
from ._common import PathField
from ._messages import guarded, report_info
from ._workers import Runner

KEYS = "123456789"
GALLERY_SIZE = 100  # thumbnails per gallery layer


class ImageClassBox(QGroupBox):
    """The class of the current image, and the classes of the project (see the module docstring)."""

    def __init__(self, panel, parent=None):
        super().__init__("Image classes", parent)
        self.panel = panel  # the Annotate panel: its project box, status line, refresh and open_image
        lay = QVBoxLayout(self)
        self.current = QLabel("Open an image of the project (click it in the list).")
        self.current.setWordWrap(True)
        lay.addWidget(self.current)
        self.grid = QGridLayout()
        lay.addLayout(self.grid)
        self.buttons: list[QPushButton] = []
        row = QHBoxLayout()
        self.next_btn = QPushButton("Next without class")
        self.next_btn.setToolTip("Open the next image that has no class yet")
        self.clear_btn = QPushButton("No class")
        self.clear_btn.setToolTip("Take the class off the current image (it no longer trains the model)")
        row.addWidget(self.next_btn)
        row.addWidget(self.clear_btn)
        lay.addLayout(row)
        self.counts = QLabel("")
        self.counts.setWordWrap(True)
        lay.addWidget(self.counts)
        row = QHBoxLayout()
        self.gallery_combo = QComboBox()
        self.gallery_btn = QPushButton("Show gallery")
        self.gallery_btn.setToolTip(f"A layer with up to {GALLERY_SIZE} images of this class side by side, to review them")
        row.addWidget(QLabel("Review class:"))
        row.addWidget(self.gallery_combo, 1)
        row.addWidget(self.gallery_btn)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.folders = PathField("folder with one subfolder of images per class")
        self.import_btn = QPushButton("Import class folders")
        self.import_btn.setToolTip("Import root/<class>/*.tif|png|jpg: new classes are added; unreadable files are reported and skipped")
        row.addWidget(self.folders, 1)
        row.addWidget(self.import_btn)
        lay.addLayout(row)
        self.runner = Runner(on_return=self._imported, on_error=self._import_failed, owner=self)
        self.next_btn.clicked.connect(lambda: self.next_unclassified())
        self.clear_btn.clicked.connect(lambda: self.set_class(None))
        self.gallery_btn.clicked.connect(lambda: self.show_gallery(self.gallery_combo.currentText()))
        self.import_btn.clicked.connect(lambda: self.import_folders(self.folders.text()))

    # ------------------------------------------------------------------ state
    def refresh(self, project) -> None:
        """Buttons, counts and the current image's class from the store."""
        names = project.class_names
        if [b.property("class_name") for b in self.buttons] != names:
            for b in self.buttons:
                self.grid.removeWidget(b)
                b.deleteLater()
            self.buttons = []
            for i, name in enumerate(names):
                key = KEYS[i] if i < len(KEYS) else ""
                b = QPushButton(f"{key}: {name}" if key else name)
                b.setProperty("class_name", name)
                b.setToolTip(f"The current image is of class {name}" + (f" (key {key} on the image)" if key else ""))
                b.clicked.connect(lambda _=False, n=name: self.set_class(n))
                self.grid.addWidget(b, i // 3, i % 3)
                self.buttons.append(b)
            self.gallery_combo.clear()
            self.gallery_combo.addItems(names)
        counts = project.class_counts()
        self.counts.setText(
            "Images per class (train / validation / test): "
            + "; ".join(f"{c} {v['train']}/{v['validation']}/{v['test']}" for c, v in counts.items())
            if counts
            else "No class yet: import class folders, or name classes above and press Apply classes."
        )
        self.show_current(project)

    def show_row(self, project, image: str) -> None:
        """The list's row of ``image`` and the counts, updated in place (a whole refresh of thousands
        of images after every key would freeze the panel)."""
        table = self.panel.table
        for r in range(table.rowCount()):
            if table.item(r, 0) is not None and table.item(r, 0).text() == image:
                table.item(r, 2).setText(project.image_record(image).image_class or "")
                break
        self.refresh(project)

    def current_image(self) -> str | None:
        layer = self.panel.viewer.layers.selection.active
        if layer is not None and linked(layer, self.panel.project_box.url):
            return (layer.metadata or {}).get(IMAGE_KEY)
        return None

    def show_current(self, project=None) -> None:
        name = self.current_image()
        if name is None:
            self.current.setText("Open an image of the project (click it in the list), then press its class (or keys 1-9).")
            return
        project = project or self.panel.project_box.project()
        cls = project.image_record(name).image_class
        self.current.setText(f"<b>{name}</b>: {cls or 'no class yet'}")

    def bind_keys(self, layer) -> None:
        """Keys 1-9 on ``layer`` (an image of the project) give the current image the class of that number."""
        for i, key in enumerate(KEYS):
            layer.bind_key(key, lambda _layer, i=i: self._key(i), overwrite=True)

    def _key(self, index: int) -> None:
        names = self.panel.project_box.project().class_names
        if index < len(names):
            self.set_class(names[index], advance=True)

    # ------------------------------------------------------------------ actions
    @guarded()
    def set_class(self, name: str | None, *, image: str | None = None, advance: bool = False):
        """``project.set_image_class(image, name)`` for the current image; ``advance`` then opens
        the next image without a class (as the keys do)."""
        from ..core.errors import DataError

        image = image or self.current_image()
        if image is None:
            raise DataError("Open an image of the project first (click it in the list), then choose its class.")
        project = self.panel.project_box.project()
        project.set_image_class(image, name)
        report_info(f"{image}: {name or 'no class'}.", self.panel.status)
        self.show_row(project, image)
        if advance:
            self.next_unclassified(after=image)
        return image

    @guarded()
    def next_unclassified(self, after: str | None = None):
        """Open the next image (after ``after``, else the current one) that has no class."""
        project = self.panel.project_box.project()
        names = project.image_names()
        start = names.index(after) + 1 if after in names else 0
        todo = [n for n in names[start:] + names[:start] if project.image_record(n).image_class is None]
        if not todo:
            report_info("Every image has a class.", self.panel.status)
            return None
        self.panel.open_image(todo[0])
        return todo[0]

    @guarded()
    def show_gallery(self, class_name: str):
        """An image layer ``gallery: <class>`` with up to :data:`GALLERY_SIZE` of its images side by side (first channels)."""
        from ..core.errors import DataError

        project = self.panel.project_box.project()
        names = [r.name for r in project.images() if r.image_class == class_name][:GALLERY_SIZE]
        if not names:
            raise DataError(f"No image is of class {class_name!r} yet.")
        tiles = [np.asarray(project.get_image(n), dtype=np.float32) for n in names]
        tiles = [t if t.ndim == 2 else t[..., 0] for t in tiles]  # the first channel: a montage to review, not to measure
        side = max(max(t.shape) for t in tiles)
        cols = int(np.ceil(np.sqrt(len(tiles))))
        montage = np.zeros((side * int(np.ceil(len(tiles) / cols)), side * cols), np.float32)
        for k, t in enumerate(tiles):
            lo, hi = np.percentile(t, (1, 99.8))
            r, c = divmod(k, cols)
            montage[r * side : r * side + t.shape[0], c * side : c * side + t.shape[1]] = (t - lo) / max(hi - lo, 1e-6)
        title = f"gallery: {class_name}"
        if title in self.panel.viewer.layers:
            self.panel.viewer.layers[title].data = montage
        else:
            self.panel.viewer.add_image(montage, name=title, contrast_limits=(0, 1), metadata={"segbox_gallery": names})
        report_info(f"{len(names)} image(s) of {class_name}, row by row: {', '.join(names[:3])}…", self.panel.status)
        return names

    @guarded()
    def import_folders(self, folder: str):
        """Import an ImageFolder layout in a thread worker (``iter_import_classified``)."""
        from ..core.classify.importing import class_folder_files
        from ..core.errors import DataError

        if not folder:
            raise DataError("Choose the folder with one subfolder of images per class (the … button).")
        project = self.panel.project_box.project()
        pairs = class_folder_files(folder)
        self.import_btn.setEnabled(False)
        report_info(f"Importing {len(pairs)} image(s)…", self.panel.status)
        self.runner.start(_import, project, pairs)

    def _imported(self, report) -> None:
        self.import_btn.setEnabled(True)
        self.panel.refresh()
        report_info(report.text(), self.panel.status, notify=True)

    def _import_failed(self, err) -> None:
        from ._messages import report_error

        self.import_btn.setEnabled(True)
        report_error(err, self.panel.status)


def _import(project, pairs, cancel=None):
    from ..core.classify.importing import iter_import_classified

    return (yield from iter_import_classified(project, pairs))
