"""The project store on a real S3 server on loopback (moto's ThreadedMotoServer), as with MinIO."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_box.cli import main as cli
from napari_seg_box.core import Project, StoreError

from ..conftest import SECRET, free_port, isbi
from .test_store import tiny_version

pytestmark = pytest.mark.s3


def test_s3_round_trip_and_no_credentials_stored(s3_env, shared_data):
    image, mask = isbi(4)
    opts = {"endpoint_url": s3_env}
    p = Project.create("s3://lab/projects/em", classes=["membrane", "cell"], storage_options=opts)
    p.add_image("slice4", image, labels=1 + (mask > 0), split="test")
    p.save_model_version(b"\x00weights", tiny_version(p, 0.5))

    q = Project.open("s3://lab/projects/em", storage_options=opts)
    np.testing.assert_array_equal(q.get_image("slice4"), image)
    np.testing.assert_array_equal(q.get_labels("slice4"), 1 + (mask > 0))
    assert q.image_record("slice4").split == "test"
    assert q.model_weights("v001") == b"\x00weights"

    new = np.ones_like(mask, dtype=np.uint8)
    q.set_labels("slice4", new)
    np.testing.assert_array_equal(Project.open("s3://lab/projects/em", storage_options=opts).get_labels("slice4"), new)

    # credentials are used to connect, never written into the store
    import boto3

    bucket = boto3.resource("s3", endpoint_url=s3_env).Bucket("lab")
    for obj in bucket.objects.all():
        body = obj.get()["Body"].read()
        assert SECRET.encode() not in body and b"segbox-test-key-id" not in body, obj.key


def test_s3_endpoint_from_environment_and_cli(s3_env, monkeypatch, capsys, tmp_path, shared_data):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env)
    assert cli(["init", "s3://lab/cli-project", "--classes", "membrane,cell"]) == 0
    from imageio.v3 import imwrite

    image, mask = isbi(5)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    imwrite(tmp_path / "images" / "s5.png", image)
    imwrite(tmp_path / "masks" / "s5.png", mask)
    assert cli(["import", "s3://lab/cli-project", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks")]) == 0
    capsys.readouterr()
    assert cli(["info", "s3://lab/cli-project"]) == 0
    out = capsys.readouterr().out
    assert "s5" in out and "membrane" in out and "Images: 1 (train 1" in out


def test_unreachable_s3_endpoint_gives_clear_error(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    port = free_port()  # nothing listens there
    opts = {"endpoint_url": f"http://127.0.0.1:{port}", "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}
    with pytest.raises(StoreError, match="Cannot reach the project store"):
        Project.open("s3://lab/nowhere", storage_options=opts)


@pytest.mark.parametrize("port", [38403, 4030, 9000])
def test_a_port_containing_403_is_not_read_as_refused_access(port):
    """Regression: an unreachable endpoint on port 38403 was reported as 'access refused' (CI, 2026-11)."""
    from botocore.exceptions import EndpointConnectionError

    from napari_seg_box.core.store import _unreachable

    err = EndpointConnectionError(endpoint_url=f"http://127.0.0.1:{port}/lab/nowhere")
    assert "Cannot reach the project store" in str(_unreachable("s3://lab/nowhere", err))
    refused = PermissionError(f"An error occurred (403) when calling HeadObject on http://127.0.0.1:{port}/lab")
    assert "was refused" in str(_unreachable("s3://lab/nowhere", refused))
    forbidden = OSError("[Errno 403] Forbidden")
    assert "was refused" in str(_unreachable("s3://lab/nowhere", forbidden))
