"""Shared fixtures: real microscopy data from ../shared/data, small projects built from it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# a small copy of the real data in the repository (tests/data/README.md); SEGBOX_SHARED_DATA points elsewhere
DATA = Path(os.environ.get("SEGBOX_SHARED_DATA", REPO / "tests" / "data"))


def isbi(index: int) -> tuple[np.ndarray, np.ndarray]:
    """ISBI 2012 slice ``index``: (uint8 image, uint8 mask with 255 = cell interior, 0 = membrane)."""
    import imageio.v3 as iio

    return (
        np.asarray(iio.imread(DATA / "isbi2012" / "images" / f"{index}.png")),
        np.asarray(iio.imread(DATA / "isbi2012" / "labels" / f"{index}.png")),
    )


def nuclei() -> tuple[np.ndarray, np.ndarray]:
    """The DSB2018 nuclei image (uint16) and its instance labels (uint16, 125 nuclei): the package's
    sample data, the same pixels as ../shared/data/dsb2018-nuclei."""
    from napari_seg_box.core.samples import load_nuclei

    return load_nuclei()


def nuclei_quadrants() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The nuclei image split into its four 256x256 quadrants: (name, image, instances)."""
    image, mask = nuclei()
    out = []
    for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        out.append((f"q{i}", image[y : y + 256, x : x + 256], mask[y : y + 256, x : x + 256]))
    return out


@pytest.fixture
def shared_data() -> Path:
    if not DATA.is_dir():
        raise FileNotFoundError(f"Real test data not found at {DATA}: tests/data is part of the repository (or set SEGBOX_SHARED_DATA).")
    return DATA


@pytest.fixture
def nuclei_project(tmp_path, shared_data):
    """A project with the four nuclei quadrants: q0, q1 train, q2 validation, q3 test (with instances)."""
    from napari_seg_box.core import Project

    project = Project.create(tmp_path / "nuclei.zarr", classes=["background", "nucleus"])
    splits = ["train", "train", "validation", "test"]
    for (name, image, inst), split in zip(nuclei_quadrants(), splits):
        project.add_image(name, image, labels=(1 + (inst > 0)).astype(np.uint8), instances=inst, split=split)
    return project


# ---------------------------------------------------------------------- a real S3 server on loopback
SECRET = "segbox-test-secret-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "segbox-test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="lab")
    yield s3_server
    bucket = boto3.resource("s3", endpoint_url=s3_server).Bucket("lab")
    bucket.objects.all().delete()
    bucket.delete()
