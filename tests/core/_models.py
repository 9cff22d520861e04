"""A tiny model version saved into a project (untrained or briefly fitted), for prediction tests."""

from __future__ import annotations

import numpy as np

TINY = dict(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))


def save_tiny_model(
    project, *, in_channels: int = 1, classes: int = 2, seed: int = 0, model=None, tuning=None, boundary_width=None, distance: bool = False
) -> str:
    """Save a tiny resnet18 U-Net as a model version of ``project`` (through the store's one version
    writer, as training does); returns the version id. ``classes`` counts the network's outputs."""
    import torch

    from napari_seg_box.core.models import ModelSpec, build_model, weights_to_bytes
    from napari_seg_box.core.versions import ModelVersion

    spec = ModelSpec(in_channels=in_channels, classes=classes, **TINY)
    if model is None:
        torch.manual_seed(seed)
        model = build_model(spec)
    model.eval()
    n = classes - (boundary_width is not None) - distance
    names = project.class_names[:n] if len(project.class_names) >= n else [f"c{i}" for i in range(n)]
    info = ModelVersion(spec, tuple(names), boundary_width=boundary_width, distance=distance, patch_size=64, tuning=tuning)
    return project.save_model_version(weights_to_bytes(model), info).version


def fit_tiny_model(images, labels, *, steps: int = 60, patch: int = 64, seed: int = 0, lr: float = 3e-3):
    """Fit a tiny U-Net on (image, project-labels) pairs for a few steps (CPU, a few seconds)."""
    import torch

    from napari_seg_box.core.data import labels_to_target, normalize
    from napari_seg_box.core.models import ModelSpec, build_model

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(ModelSpec(in_channels=1, classes=2, **TINY))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    norms = [normalize(im)[..., 0] for im in images]
    targets = [labels_to_target(lb) for lb in labels]
    model.train()
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(8):
            i = rng.integers(len(norms))
            y0 = rng.integers(0, norms[i].shape[0] - patch + 1)
            x0 = rng.integers(0, norms[i].shape[1] - patch + 1)
            xs.append(norms[i][y0 : y0 + patch, x0 : x0 + patch])
            ys.append(targets[i][y0 : y0 + patch, x0 : x0 + patch])
        x = torch.from_numpy(np.stack(xs)[:, None].copy())
        y = torch.from_numpy(np.stack(ys).copy())
        loss = torch.nn.functional.cross_entropy(model(x), y, ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


_FITTED = {}


def fitted_nuclei_model(steps: int = 80):
    """A tiny U-Net fitted on nuclei quadrants q0, q1 (cached per test session: ~20 s on 2 CPU cores)."""
    if steps not in _FITTED:
        from tests.conftest import nuclei_quadrants

        q = nuclei_quadrants()
        _FITTED[steps] = fit_tiny_model(
            [q[0][1], q[1][1]], [(1 + (q[0][2] > 0)).astype(np.uint8), (1 + (q[1][2] > 0)).astype(np.uint8)], steps=steps
        )
    return _FITTED[steps]


def with_distance_output(model):
    """A 3-output copy of a fitted 2-class tiny U-Net whose last output (the "distance") repeats the
    nucleus logit: high inside nuclei, as a trained distance output is (wiring tests, not accuracy)."""
    import torch

    from napari_seg_box.core.models import ModelSpec, build_model

    out = build_model(ModelSpec(in_channels=1, classes=3, **TINY))
    state = model.state_dict()
    for key in ("segmentation_head.0.weight", "segmentation_head.0.bias"):
        state[key] = torch.cat([state[key], state[key][1:2]])
    out.load_state_dict(state)
    return out.eval()


def nuclei_project_with_model(project, **kwargs) -> str:
    """Save the fitted nuclei model into ``project`` (the conftest ``nuclei_project``); returns the version."""
    return save_tiny_model(project, model=fitted_nuclei_model(), **kwargs)
