"""Packaging promises: a headless core, a valid manifest whose python_names import, reader/writer, sample data."""

from __future__ import annotations

import filecmp
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import napari_seg_box
from napari_seg_box import _reader, _sample_data, _writer
from napari_seg_box.core import Project, StoreError

PKG = Path(napari_seg_box.__file__).parent
REPO = Path(__file__).resolve().parents[2]


def test_core_and_cli_import_load_no_qt_napari_or_torch():
    code = (
        "import sys, napari_seg_box.core as c\n"
        "from napari_seg_box.core import store, io, data, events\n"
        "import napari_seg_box.cli, napari_seg_box.workflows\n"
        "napari_seg_box.cli.build_parser()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy','napari','magicgui','superqt','PyQt6','PyQt5','PySide6','torch')]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_core_module_is_headless():
    code = (
        "import sys, pkgutil, importlib, napari_seg_box.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('napari_seg_box.core.' + m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy','napari','magicgui','superqt','PyQt6','PyQt5','PySide6')]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_network_call_on_import():
    """albumentations asks PyPI for updates when imported (2 s and a warning on an offline cluster)."""
    code = (
        "import os, sys, urllib.request\n"
        "calls = []\n"
        "urllib.request.OpenerDirector.open = lambda self, url, *a, **k: calls.append(url)\n"
        "import napari_seg_box.core.augment, albumentations\n"
        "print(calls); sys.exit(1 if calls else 0)"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_shipped_in_package_and_valid():
    assert filecmp.cmp(REPO / "napari.yaml", PKG / "napari.yaml", shallow=False)
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-seg-box")
    assert manifest.name == "napari-seg-box"
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-seg-box"], capture_output=True, text=True)
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr


def test_every_python_name_in_the_manifest_imports():
    manifest = yaml.safe_load((PKG / "napari.yaml").read_text())
    names = [c["python_name"] for c in manifest["contributions"]["commands"]]
    assert len(names) >= 8
    for python_name in names:
        module, attr = python_name.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), python_name


def test_reader_claims_only_project_stores(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    assert _reader.get_reader(str(tmp_path / "other.zarr")) is None
    assert _reader.get_reader(str(tmp_path / "image.png")) is None
    assert _reader.get_reader([str(tmp_path / "a"), str(tmp_path / "b")]) is None
    image, mask = _sample_data.load_nuclei()
    p = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"], pixel_size=0.5)
    p.add_image("nuclei", image, labels=1 + (mask > 0))
    reader = _reader.get_reader(str(tmp_path / "p.zarr"))
    layers = reader(str(tmp_path / "p.zarr"))
    (img, img_kw, img_type), (lab, lab_kw, lab_type) = layers
    assert (img_type, lab_type) == ("image", "labels")
    np.testing.assert_array_equal(np.asarray(img[...]), image)
    np.testing.assert_array_equal(lab, 1 + (mask > 0))
    assert lab_kw["metadata"] == {"segbox_store": p.url, "segbox_image": "nuclei"}
    assert lab_kw["colormap"][2] == p.classes[1].color and img_kw["scale"] == (0.5, 0.5)


def test_writer_saves_linked_labels_and_refuses_unlinked(tmp_path):
    image, mask = _sample_data.load_nuclei()
    p = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    p.add_image("nuclei", image)
    labels = (1 + (mask > 0)).astype(np.uint8)
    assert _writer.write_labels(p.url, labels, {"metadata": {"segbox_image": "nuclei"}}) == [p.url]
    np.testing.assert_array_equal(Project.open(p.url).get_labels("nuclei"), labels)
    with pytest.raises(StoreError, match="not linked"):
        _writer.write_labels(p.url, labels, {"metadata": {}})


def test_sample_data_is_real_bundled_and_small():
    image, mask = _sample_data.load_nuclei()
    assert image.shape == (512, 512) and image.dtype == np.uint16
    assert len(np.unique(mask)) - 1 == 125 and mask.max() == 183
    em, em_masks = _sample_data.load_em()
    assert em.shape == (6, 512, 512) and set(np.unique(em_masks)) == {0, 255}
    total = sum(f.stat().st_size for f in (PKG / "sample_data").iterdir())
    assert total < 5 * 1024 * 1024
    layers = _sample_data.nuclei() + _sample_data.em_slices()
    assert [t for _, _, t in layers] == ["image", "labels", "image", "labels"]


def test_import_contracts_hold():
    """Layers (widgets and cli over workflows over core), a headless core, and no import circle:
    the import-linter contracts of pyproject.toml, checked on every import, function-level ones too."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


def test_modules_stay_small():
    """One job per module: none over 450 lines (the design's rule; the redesign split the big ones)."""
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


def test_napari_and_qt_are_not_required_to_install_or_run_the_cli(tmp_path):
    """pip install napari-seg-box on a cluster node: the core and the CLI, without napari or Qt."""
    from importlib.metadata import requires

    hard = [r for r in requires("napari-seg-box") if "extra ==" not in r]
    assert not [r for r in hard if r.split()[0].lower().startswith(("napari", "pyqt", "pyside", "magicgui", "qtpy", "superqt", "npe2"))], (
        hard
    )
    code = (
        "import sys\n"
        "for name in ('napari', 'qtpy', 'magicgui', 'superqt', 'PyQt6', 'PyQt5', 'PySide6'): sys.modules[name] = None\n"
        "from napari_seg_box.cli import main\n"
        f"assert main(['init', {str(tmp_path / 'p.zarr')!r}, '--classes', 'background,cell']) == 0\n"
        f"assert main(['info', {str(tmp_path / 'p.zarr')!r}]) == 0\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 = background" in result.stdout
