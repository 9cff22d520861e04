"""Issue 20: a training as a first-time user lives it in the Train panel (a real viewer under Xvfb).

Points: 1 (only objects painted: the panel offers the two meanings), 5 (the run belongs to the
window: closing the panel asks, a reopened panel shows the run, no second run beside it, napari's
Activity dock), 6 (phases named, time left, chosen settings shown), 7 (log-scale loss, explained),
8 (Resume; the bar does not freeze after Stop).
"""

from __future__ import annotations

import re

import numpy as np

from napari_seg_box.core import Project
from napari_seg_box.widgets import train as train_module
from napari_seg_box.widgets._session import Session
from napari_seg_box.widgets.train import TrainWidget
from tests.widgets.conftest import make_train_widget as make_widget
from tests.widgets.conftest import wait_done
from tests.widgets.test_first_use import answer


def test_objects_painted_alone_offer_the_two_meanings(viewer, qtbot, tmp_path, nuclei_q, monkeypatch):
    """Point 1: painting only nuclei used to train "validation IoU 1.000" nonsense without a word."""
    p = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    for (name, image, inst), split in zip(nuclei_q[:3], ["train", "train", "validation"]):
        p.add_image(name, image, labels=np.where(inst > 0, 2, 0).astype(np.uint8), split=split)
    asked = answer(monkeypatch, train_module, 1)  # "I will paint some background"
    w = make_widget(viewer, p, epochs=1)
    w.start()
    wait_done(qtbot, w.runner, 120000)
    assert asked and "Only 'nucleus' is painted" in asked[0][1]
    assert asked[0][2] == ["Unpainted pixels are background", "I will paint some background"]
    assert Project.open(p.url).model_versions() == [] and w.run.status == "failed"
    assert "Only 'nucleus' is painted" in w.status.text()
    asked = answer(monkeypatch, train_module, 0)  # "unpainted pixels are background": trains again
    w.start()
    qtbot.waitUntil(lambda: len(asked) == 1 and w.run.status == "finished", timeout=240000)
    p = Project.open(p.url)
    assert all(r.unpainted_background for r in p.images())
    best = p.model_version(w.last_version).best
    assert best["val_iou"] < 0.99  # a real score, not the perfect nonsense of one class


def test_the_run_belongs_to_the_window_and_the_panel_says_what_happens(viewer, qtbot, project, monkeypatch):
    """Points 5, 6, 7, 8 on one training: phases, time left and chosen settings in the panel; closing
    the panel asks and keeps the run; a reopened panel shows it; no second run; Stop, then Resume."""
    from napari.utils import progress

    from napari_seg_box.widgets._common import dock_of
    from napari_seg_box.widgets.predict import PredictWidget
    from napari_seg_box.widgets.quantify import QuantifyWidget

    w = make_widget(viewer, project, epochs=30, learning_rate=0.0)  # automatic learning rate: the long first wait
    others = [PredictWidget(viewer), QuantifyWidget(viewer)]
    for other in others:
        viewer.window.add_dock_widget(other)
    assert [o.version_combo.count() for o in others] == [0, 0]
    phases = []
    w.start()
    run = w.run
    run.event.connect(lambda e: phases.append(w.phase_label.text()))
    qtbot.waitUntil(lambda: len(run.history) >= 1, timeout=240000)
    # point 6: each phase named; the time left from learning steps; the chosen settings
    assert any(t.startswith("Finding a good learning rate") for t in phases), phases
    assert any(t.startswith("Preparing the training data") for t in phases) or phases[0].startswith("Finding"), phases
    assert re.fullmatch(r"epoch \d+ of 30 · about (\d+:)?\d+:\d\d left", w.eta_label.text()), w.eta_label.text()
    settings = w.settings_label.text()
    assert all(word in settings for word in ("patch", "batch", "learning rate", "alidation")), settings
    assert any(isinstance(p, progress) and "training" in (p.desc or "") for p in progress._all_instances), "no Activity entry"
    # point 7: the loss on a log scale, with what good curves look like
    w.plot.wait()
    assert w.plot.axes[0].get_yscale() == "log"
    assert train_module.CURVES_HELP.startswith("Good curves")
    # point 5: closing asks; "Close, keep training" keeps the run; a reopened panel shows it
    dock = dock_of(w)
    asked = answer(monkeypatch, train_module, 2)  # Cancel: the panel stays
    docked = lambda: any(x is w for x in dict(viewer.window.dock_widgets).values())  # noqa: E731
    dock.destroyOnClose()
    assert asked and docked() and run.running
    answer(monkeypatch, train_module, 0)
    dock.destroyOnClose()
    qtbot.waitUntil(lambda: not docked(), timeout=5000)
    assert run.running and Session.of(viewer).training is run
    again = TrainWidget(viewer)
    viewer.window.add_dock_widget(again)
    assert again.run is run and not again.start_btn.isEnabled() and again.stop_btn.isEnabled()
    assert len(again.history) == len(run.history) >= 1
    assert again.start() is None and "already running" in again.status.text()  # never a second run beside it
    # point 8: Stop keeps the best epoch, the bar does not freeze part-way, Resume continues
    again.stop_btn.click()
    wait_done(qtbot, run.runner, 120000)
    first = run.version
    # the other panels list the new version at once (they used to need their Refresh button)
    assert [o.version_combo.currentData() for o in others] == [first, first]
    stopped_after = len(run.history)
    assert Project.open(project.url).model_version(first).training.status == "stopped"
    assert again.progress.value() == again.progress.maximum() and again.progress.format() == "stopped"
    assert again.resume_btn.isEnabled() and again.start_btn.isEnabled()
    again.resume_btn.click()  # on to the 30 epochs it was started with
    resumed = again.run
    assert resumed is not run
    wait_done(qtbot, resumed.runner, 240000)
    meta = Project.open(project.url).model_version(resumed.version).training
    assert meta.status == "completed" and [h["epoch"] for h in meta.history] == list(range(1, 31))
    assert meta.history[: stopped_after - 1] == Project.open(project.url).model_version(first).training.history[: stopped_after - 1]
    assert not again.resume_btn.isEnabled()
