"""Quantification: exact measurements on hand-made objects, units, no torch, batches over folders,
globs, lists, zarr and stores, bad files reported, dask threads/processes/distributed, tables, plots."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from napari_seg_box.core import DataError
from napari_seg_box.core.events import ItemDone
from napari_seg_box.core.quantify import quantify_labels
from napari_seg_box.core.quantify_batch import iter_quantify, quantify_batch

from ..conftest import nuclei


def hand_made():
    labels = np.ones((100, 100), np.uint8)  # 1 = background
    labels[10:20, 10:20] = 2  # 100 px
    labels[50:54, 60:66] = 2  # 24 px
    labels[70:75, 10:15] = 3  # 25 px
    image = np.zeros((100, 100), np.uint16)
    image[10:20, 10:20] = 100
    image[10, 10] = 500
    image[50:54, 60:66] = 10
    image[70:75, 10:15] = 7
    return labels, image


def test_quantify_labels_exact_values_in_physical_units():
    labels, image = hand_made()
    q = quantify_labels(labels, image, pixel_size=0.5, unit="µm", class_names=["background", "cell", "nucleus"], name="a")
    objs = q.objects.sort_values(["class", "area_px"]).reset_index(drop=True)
    assert list(objs["class_name"]) == ["cell", "cell", "nucleus"]
    assert list(objs["area_px"]) == [24, 100, 25]
    assert objs["area_um2"].tolist() == pytest.approx([6.0, 25.0, 6.25])
    assert objs.loc[1, "equivalent_diameter_um"] == pytest.approx(np.sqrt(4 * 100 / np.pi) * 0.5)
    assert objs.loc[1, "centroid_y_um"] == pytest.approx(14.5 * 0.5) and objs.loc[1, "centroid_x_um"] == pytest.approx(14.5 * 0.5)
    assert objs.loc[1, "solidity"] == pytest.approx(1.0)
    assert objs.loc[1, "eccentricity"] == pytest.approx(0.0, abs=1e-6)
    assert objs.loc[0, "major_axis_length_um"] > objs.loc[0, "minor_axis_length_um"]
    assert objs.loc[1, "intensity_max"] == 500
    assert objs.loc[1, "intensity_mean"] == pytest.approx((99 * 100 + 500) / 100)
    assert objs.loc[1, "intensity_integrated"] == pytest.approx(99 * 100 + 500)
    assert objs.loc[2, "intensity_integrated"] == pytest.approx(25 * 7)
    for col in ("perimeter_um", "orientation_rad"):
        assert col in objs
    per = q.images.set_index("class_name")
    assert per.loc["cell", "n_objects"] == 2 and per.loc["nucleus", "n_objects"] == 1
    assert per.loc["cell", "coverage_percent"] == pytest.approx(1.24)
    assert per.loc["cell", "mean_area_um2"] == pytest.approx((6 + 25) / 2)
    assert per.loc["nucleus", "coverage_percent"] == pytest.approx(0.25)
    # without a pixel size: pixel units, stated in the column names
    qp = quantify_labels(labels, kind="semantic")
    assert "area_px2" in qp.objects and "perimeter_px" in qp.objects and "intensity_mean" not in qp.objects


def test_instances_multichannel_anisotropic_and_empty():
    inst = np.zeros((30, 40), np.int32)
    inst[2:6, 2:12] = 5
    inst[20:25, 20:25] = 9
    img = np.zeros((30, 40, 2), np.float32)
    img[..., 0] = 1.0
    img[..., 1] = 3.0
    q = quantify_labels(inst, img, kind="instances", pixel_size=(2.0, 0.5), unit="nm")
    assert sorted(q.objects["label"]) == [5, 9]
    assert q.objects.set_index("label").loc[5, "area_nm2"] == pytest.approx(40 * 1.0)
    assert q.objects.set_index("label").loc[9, "centroid_y_nm"] == pytest.approx(22 * 2.0)
    assert (q.objects["intensity_mean_c1"] == 3.0).all() and (q.objects["intensity_mean_c0"] == 1.0).all()
    empty = quantify_labels(np.zeros((20, 20), np.int32), kind="instances")
    assert len(empty.objects) == 0 and empty.images["n_objects"].sum() == 0
    allbg = quantify_labels(np.ones((20, 20), np.uint8))
    assert len(allbg.objects) == 0 and allbg.images.loc[0, "n_objects"] == 0
    with pytest.raises(DataError, match="differ in size"):
        quantify_labels(inst, np.zeros((5, 5)))
    with pytest.raises(DataError, match="positive"):
        quantify_labels(inst, pixel_size=-1)


def test_quantify_imports_no_torch():
    code = (
        "import sys, numpy as np\n"
        "from napari_seg_box.core.quantify import quantify_labels\nfrom napari_seg_box.core.quantify_batch import quantify_batch\n"
        "q = quantify_labels(np.eye(10, dtype=int), kind='instances')\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.fixture
def folder(tmp_path):
    import tifffile

    image, mask = nuclei()
    d = tmp_path / "masks"
    d.mkdir()
    imgs = tmp_path / "images"
    imgs.mkdir()
    for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        tifffile.imwrite(d / f"q{i}.tif", mask[y : y + 256, x : x + 256])
        tifffile.imwrite(imgs / f"q{i}.tif", image[y : y + 256, x : x + 256])
    (d / "broken.tif").write_bytes(b"this is not a tiff")
    return d, imgs


def test_batch_folder_reports_bad_file_and_goes_on(folder, tmp_path):
    masks, images = folder
    events = []
    gen = iter_quantify(str(masks), images=str(images), pixel_size=0.25)
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        q = stop.value
    done = [e for e in events if isinstance(e, ItemDone)]
    assert len(done) == 5 and sum(e.error is not None for e in done) == 1
    assert len(q.errors) == 1 and q.errors[0]["image"] == "broken" and "Cannot read" in q.errors[0]["error"]
    good = q.images[q.images["error"].isna()]
    _, mask = nuclei()
    total = sum(len(np.unique(mask[y : y + 256, x : x + 256])) - 1 for y, x in [(0, 0), (0, 256), (256, 0), (256, 256)])
    assert good["n_objects"].sum() == total == len(q.objects)
    assert "intensity_mean" in q.objects and q.objects["intensity_mean"].notna().all()
    q.save(tmp_path / "out")
    for name in (
        "objects.csv",
        "objects.parquet",
        "images.csv",
        "images.parquet",
        "area_histogram.png",
        "counts_per_image.png",
        "coverage_per_image.png",
    ):
        assert (tmp_path / "out" / name).exists(), name
    back = pd.read_parquet(tmp_path / "out" / "objects.parquet")
    assert len(back) == len(q.objects) and "area_um2" in back
    assert (tmp_path / "out" / "area_histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_batch_schedulers_agree(folder):
    masks, _ = folder
    files = sorted(str(p) for p in masks.glob("q*.tif"))
    ref = quantify_batch(files, scheduler="sync")
    threads = quantify_batch(str(masks / "q*.tif"), scheduler="threads", workers=2)
    procs = quantify_batch(files, scheduler="processes", workers=2)
    for other in (threads, procs):
        pd.testing.assert_frame_equal(ref.objects.reset_index(drop=True), other.objects.reset_index(drop=True))
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dist = quantify_batch(files, scheduler=cluster.scheduler_address)
    pd.testing.assert_frame_equal(ref.objects.reset_index(drop=True), dist.objects.reset_index(drop=True))


def test_batch_zarr_and_store(tmp_path, nuclei_project):
    import zarr

    _, mask = nuclei()
    z = zarr.create_array(str(tmp_path / "labels.zarr"), shape=mask.shape, chunks=(256, 256), dtype=mask.dtype)
    z[...] = mask
    q = quantify_batch(str(tmp_path / "labels.zarr"))
    assert q.images.loc[0, "n_objects"] == 125
    nuclei_project.set_pixel_size(0.5)
    qs = quantify_batch(project=nuclei_project)
    assert sorted(qs.images["image"]) == ["q0", "q1", "q2", "q3"]
    assert (qs.images["class_name"] == "nucleus").all()
    assert "area_um2" in qs.objects
    # the store's instances split touching nuclei: as many objects as instance ids
    n = sum(len(np.unique(nuclei_project.get_instances(name))) - 1 for name in ["q0", "q1", "q2", "q3"])
    assert len(qs.objects) == n


def test_column_labels_for_people():
    from napari_seg_box.core.plots import column_label

    assert column_label("area_um2") == "area (µm²)" and column_label("mean_area_px2") == "mean area (px²)"
    assert column_label("coverage_percent") == "coverage (%)" and column_label("n_objects") == "n objects"


def test_tables_equal_a_plain_regionprops_loop_on_real_nuclei_also_with_huge_ids():
    """The one-scan counting (bincount, not unique) and the one-construction table give what a bare
    regionprops_table call gives, in physical units; huge ids are renumbered for measuring and kept."""
    from skimage import measure

    image, inst = nuclei()
    ps = 0.5
    props = ["label", "area", "perimeter", "eccentricity", "solidity", "centroid", "intensity_mean", "intensity_max"]
    plain = measure.regionprops_table(inst, intensity_image=image, properties=props)
    for offset in (0, 2**40):
        ids = np.where(inst > 0, inst.astype(np.int64) + offset, 0)
        q = quantify_labels(ids, image, kind="instances", pixel_size=ps, unit="um")
        o = q.objects
        np.testing.assert_array_equal(o["label"], plain["label"] + offset)
        np.testing.assert_allclose(o["area_um2"], plain["area"] * ps * ps)
        np.testing.assert_array_equal(o["area_px"], plain["area"])
        np.testing.assert_allclose(o["perimeter_um"], plain["perimeter"] * ps)
        np.testing.assert_allclose(o["eccentricity"], plain["eccentricity"])
        np.testing.assert_allclose(o["solidity"], plain["solidity"])
        np.testing.assert_allclose(o["centroid_y_um"], plain["centroid-0"] * ps)
        np.testing.assert_allclose(o["intensity_mean"], plain["intensity_mean"])
        np.testing.assert_allclose(o["intensity_integrated"], plain["intensity_mean"] * plain["area"])
        row = q.images.iloc[0]
        assert row["n_objects"] == 125 == len(o)
        assert row["coverage_percent"] == pytest.approx(100 * (inst > 0).mean())
        assert row["median_area_um2"] == pytest.approx(np.median(plain["area"]) * ps * ps)
