"""``napari-seg-box demo --gui``: the project opens in napari with the four widgets docked."""

from __future__ import annotations


def test_project_opens_with_widgets_docked(tmp_path, qtbot):
    from napari_seg_box._gui import WIDGETS, open_project_in_napari
    from napari_seg_box.workflows.demo import build_demo_project

    build_demo_project(tmp_path / "project.zarr")
    viewer = open_project_in_napari(tmp_path / "project.zarr", run=False)
    try:
        assert [layer.name for layer in viewer.layers][:2] == ["q0", "q0 annotations"]
        assert len(viewer.layers) == 8
        docked = dict(viewer.window.dock_widgets)  # name -> our widget
        assert all(any(d.startswith(name) for d in docked) for name in WIDGETS), list(docked)
        for widget in docked.values():  # each widget found the project from the layers
            assert widget.project_box.url.rstrip("/").endswith("project.zarr")
    finally:
        viewer.close()
