"""``TrainConfig.compile``: the training step through torch.compile, and the fallback when it fails."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_box.core import ConfigError
from napari_seg_box.core.events import Message, StepLoss
from napari_seg_box.core.train import TrainConfig, iter_train

from .test_train import collect, tiny


def _run(project, **kw):
    version, events = collect(iter_train(project, tiny(epochs=1, steps_per_epoch=3, **kw)))
    losses = [e.loss for e in events if isinstance(e, StepLoss)]
    return version, losses, [e for e in events if isinstance(e, Message) and e.topic == "device"]


def test_a_compiled_step_learns_as_the_plain_one(nuclei_project):
    """Inductor on the CPU (the first step compiles, about a minute here): the same losses as eager
    within float tolerance, and the run says what compiling cost."""
    _, eager, _ = _run(nuclei_project)
    version, compiled, said = _run(nuclei_project, compile="default")
    np.testing.assert_allclose(compiled, eager, rtol=2e-3)
    assert any(m.text.startswith("Network compiled (torch.compile, default) in ") for m in said), [m.text for m in said]
    assert "torch.compile default" in said[0].text  # "Training on CPU ..., torch.compile default."
    assert nuclei_project.model_version(version).training.config["compile"] == "default"


def test_a_failing_compilation_falls_back_to_plain_pytorch(nuclei_project, monkeypatch):
    import torch

    _, eager, _ = _run(nuclei_project)

    def broken(model, **kw):
        def call(*args):
            raise RuntimeError("CppCompileError: C++ compile error\nno compiler found")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    version, losses, said = _run(nuclei_project, compile="reduce-overhead")
    assert losses == eager  # the failed step was redone without compiling: nothing of it remains
    warnings = [m for m in said if m.level == "warning"]
    assert len(warnings) == 1 and warnings[0].text == (
        "torch.compile (reduce-overhead) failed: RuntimeError: CppCompileError: C++ compile error. Training continues without it."
    )
    assert nuclei_project.model_version(version).training.status == "completed"


def test_an_unknown_compile_mode_is_refused():
    with pytest.raises(ConfigError, match="compile must be one of off, default, reduce-overhead"):
        TrainConfig(compile="fast")
