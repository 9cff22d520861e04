"""A process killed (SIGKILL) while saving leaves the previous state readable and complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from napari_seg_box.core import Project

WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from napari_seg_box.core import Project
    from napari_seg_box.core.models import ModelSpec
    from napari_seg_box.core.versions import ModelVersion, Training
    p = Project.open(sys.argv[1])
    spec = ModelSpec("resnet18", 1, 2, 3, (32, 16, 8))
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        p.set_labels("big", np.full((2048, 2048), 1 + i % 2, np.uint8))
        n = int(p.new_version_id()[1:])
        p.save_model_version(bytes([n % 251]) * 3_000_000, ModelVersion(spec, ("a", "b"), training=Training(run=str(n))))
    """
)


def test_sigkill_while_saving_keeps_previous_state(tmp_path):
    store = tmp_path / "p.zarr"
    p = Project.create(store)
    p.add_image("big", np.zeros((2048, 2048), np.uint8), labels=np.ones((2048, 2048), np.uint8))
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = np.random.default_rng(1)
    for delay in rng.uniform(0.3, 1.5, size=4):
        proc = subprocess.Popen([sys.executable, str(script), str(store)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        q = Project.open(store)
        labels = q.get_labels("big")
        assert labels is not None and labels.shape == (2048, 2048)
        assert len(np.unique(labels)) == 1 and labels[0, 0] in (1, 2), "labels are one whole revision"
        for entry in q.model_versions():  # every listed version is complete
            info = q.model_version(entry.version)
            assert q.model_weights(info) == bytes([int(info.training.run) % 251]) * 3_000_000
