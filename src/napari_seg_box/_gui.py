"""Open a project store in napari with the four widgets docked (``napari-seg-box demo --gui``)."""

from __future__ import annotations

import os

WIDGETS = ("Annotate", "Train", "Predict and evaluate", "Quantify")


def open_project_in_napari(store: str | os.PathLike, *, run: bool = True):
    """A napari viewer showing the project's images and annotations, with the widgets docked."""
    import napari

    from . import widgets  # noqa: F401  (the triton guard, before napari draws)

    viewer = napari.Viewer(title=f"napari-seg-box: {os.fspath(store)}")
    viewer.open(os.fspath(store), plugin="napari-seg-box")
    for name in WIDGETS:
        viewer.window.add_plugin_dock_widget("napari-seg-box", name, tabify=True)
    if run:
        napari.run()
    return viewer
