"""Predictions out: NGFF labels written into OME-Zarr images (0.4 / zarr v2 and 0.5 / zarr v3), read
back by ome-zarr-py, napari-ome-zarr and our own readers; `predict --ome-zarr-labels / --geojson`;
QuPath GeoJSON of real nuclei (outlines rasterised back, measurements, holes and pieces)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_seg_box import _reader
from napari_seg_box.cli import main
from napari_seg_box.core.errors import DataError
from napari_seg_box.core.geojson import labels_to_geojson, write_geojson, write_objects_geojson
from napari_seg_box.core.ome_zarr_out import class_metadata, labels_groups, write_labels_group
from napari_seg_box.core.quantify import quantify_labels

from ..conftest import nuclei

UM = {"y": "micrometer", "x": "micrometer"}


def ome_image(path, image, version: str, *, axes="yx", scale=None, scale_factors=(2, 4, 8, 16)) -> str:
    """``image`` written by ome-zarr-py as an OME-Zarr of NGFF ``version`` ("0.4": zarr v2, "0.5": zarr v3)."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt = FormatV04() if version == "0.4" else FormatV05()
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    units = {a: u for a, u in UM.items() if a in axes}
    write_image(image, group, axes=list(axes), fmt=fmt, scale=scale, axes_units=units, scale_factors=scale_factors)
    return str(path)


def reader_nodes(path) -> dict:
    """ome-zarr-py's nodes of an image: {"image": node, <label name>: node}."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for node in Reader(parse_url(str(path)))():
            if any(isinstance(s, Label) for s in node.specs):
                out[str(node.zarr.path).rstrip("/").rsplit("/", 1)[-1]] = node
            elif node.data and "image" not in out:
                out["image"] = node
    return out


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_group_found_by_ome_zarr_napari_ome_zarr_and_our_readers(tmp_path, version, capsys):
    import zarr

    image, inst = nuclei()
    path = ome_image(tmp_path / "nuclei.zarr", image, version, scale={"y": 0.5, "x": 0.5})
    semantic = (1 + (inst > 0)).astype(np.uint8)
    props, colors = class_metadata(["background", "nucleus"], ["#808080", "#ff0000"])
    assert write_labels_group(path, "classes", semantic, properties=props, colors=colors) == f"{path}/labels/classes"
    write_labels_group(path, "objects", inst)
    # the NGFF version of the image: .zattrs (0.4) or zarr.json attributes under "ome" (0.5)
    group = zarr.open_group(path, mode="r")
    attrs = dict(group["labels/classes"].attrs)
    if version == "0.4":
        assert group.metadata.zarr_format == 2 and (tmp_path / "nuclei.zarr/labels/.zattrs").exists()
        assert dict(group["labels"].attrs) == {"labels": ["classes", "objects"]}
        meta = attrs
        assert meta["multiscales"][0]["version"] == "0.4" and meta["image-label"]["version"] == "0.4"
    else:
        assert group.metadata.zarr_format == 3 and group["labels"].attrs["ome"] == {"version": "0.5", "labels": ["classes", "objects"]}
        meta = attrs["ome"]
        assert meta["version"] == "0.5" and "multiscales" in meta and group["labels/objects/0"].metadata.dimension_names == ("y", "x")
    assert meta["image-label"]["colors"] == [{"label-value": 1, "rgba": [128, 128, 128, 255]}, {"label-value": 2, "rgba": [255, 0, 0, 255]}]
    assert meta["image-label"]["properties"] == [{"label-value": 1, "class": "background"}, {"label-value": 2, "class": "nucleus"}]
    assert [a["name"] for a in meta["multiscales"][0]["axes"]] == ["y", "x"] and meta["multiscales"][0]["axes"][0]["unit"] == "micrometer"
    assert group["labels/objects/0"].dtype == inst.dtype and group["labels/classes/0"].dtype == np.uint8

    # ome-zarr-py: the labels nodes, one level per image level, level 0 = what we wrote, level 1 = [::2, ::2]
    nodes = reader_nodes(path)
    assert {"image", "classes", "objects"} <= set(nodes)
    img_node, obj = nodes["image"], nodes["objects"]
    assert len(obj.data) == len(img_node.data) == 5
    np.testing.assert_array_equal(np.asarray(obj.data[0]), inst)
    np.testing.assert_array_equal(np.asarray(obj.data[1]), inst[::2, ::2])
    np.testing.assert_array_equal(np.asarray(nodes["classes"].data[2]), semantic[::4, ::4])
    for level in range(5):  # the same grid as the image's: shapes and scales level by level
        assert obj.data[level].shape == img_node.data[level].shape
        assert obj.metadata["coordinateTransformations"][level][0] == img_node.metadata["coordinateTransformations"][level][0]
    assert obj.metadata["coordinateTransformations"][0][0]["scale"] == [0.5, 0.5]
    assert nodes["classes"].metadata["properties"] == {1: {"class": "background"}, 2: {"class": "nucleus"}}

    # napari-ome-zarr's reader, called directly: one labels layer per label image, data and scale right
    from napari_ome_zarr._reader import napari_get_reader

    layers = napari_get_reader(path)(path)
    capsys.readouterr()  # it prints the root attributes
    kinds = [kind for _, _, kind in layers]
    assert kinds.count("labels") == 2 and kinds.count("image") == 1
    image_scale = next(meta for _, meta, kind in layers if kind == "image")["scale"]
    labels_layers = {meta["name"].rsplit("/", 1)[-1]: (data, meta) for data, meta, kind in layers if kind == "labels"}
    data, meta = labels_layers["objects"]
    np.testing.assert_array_equal(np.asarray(data[0]), inst)
    np.testing.assert_array_equal(np.asarray(data[1]), inst[::2, ::2])
    assert list(meta["scale"]) == list(image_scale) == [0.5, 0.5]
    assert labels_layers["classes"][1]["colormap"][2] == [1.0, 0.0, 0.0, 1.0]

    # our plugin reader claims an OME-Zarr image with labels (not one without), and so does the import reader
    reader = _reader.get_reader(path)
    assert reader is not None
    ours = reader(path)
    assert [kind for _, _, kind in ours] == ["image", "labels", "labels"]
    (img, img_kw, _), (cls, cls_kw, _), (objs, obj_kw, _) = ours
    np.testing.assert_array_equal(np.asarray(img[0]), image)
    np.testing.assert_array_equal(np.asarray(objs[0]), inst)
    assert img_kw["scale"] == cls_kw["scale"] == obj_kw["scale"] == [0.5, 0.5] and len(objs) == 5
    assert cls_kw["colormap"][2] == (1.0, 0.0, 0.0, 1.0) and cls_kw["features"] == {"index": [1, 2], "class": ["background", "nucleus"]}
    assert _reader.get_reader(ome_image(tmp_path / "bare.zarr", image, version)) is None
    from napari_seg_box.core.io import read_ome_zarr

    read_image, read_labels = read_ome_zarr(path)  # the import reader: the image with its first label image
    np.testing.assert_array_equal(read_image, image)
    np.testing.assert_array_equal(read_labels, semantic)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_replacing_labels_needs_overwrite_and_keeps_the_old_ones(tmp_path, version):
    import zarr

    image, inst = nuclei()
    path = ome_image(tmp_path / "n.zarr", image, version, scale_factors=(2,))
    write_labels_group(path, "objects", inst)
    with pytest.raises(DataError, match="has labels 'objects' already") as err:
        write_labels_group(path, "objects", np.zeros_like(inst))
    assert "--overwrite" in err.value.for_face("cli") and "overwrite=True" in str(err.value)
    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["labels/objects/0"][...], inst)
    np.testing.assert_array_equal(group["labels/objects/1"][...], inst[::2, ::2])
    before = {k: group[k][...].copy() for k in group.array_keys()}  # the image's own arrays
    write_labels_group(path, "objects", (inst > 0).astype(np.uint8), overwrite=True)
    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["labels/objects/0"][...], inst > 0)
    assert group["labels/objects/0"].dtype == np.uint8 and [g["name"] for g in labels_groups(path)] == ["objects"]
    for k, v in before.items():
        np.testing.assert_array_equal(group[k][...], v)
    # a given scale and more levels than the image has: factor 2 more per level, label ids kept
    write_labels_group(path, "scaled", inst, scale=(2.0, 3.0), n_levels=3)
    ms = labels_groups(path)[1]
    assert [lv.shape for lv in ms["data"]] == [(512, 512), (256, 256), (128, 128)] and ms["scale"] == [2.0, 3.0]
    np.testing.assert_array_equal(ms["data"][2][...], inst[::4, ::4])
    meta = zarr.open_group(path, mode="r")["labels/scaled"].attrs.asdict()
    meta = meta.get("ome", meta)["multiscales"][0]
    assert meta["datasets"][2]["coordinateTransformations"][0]["scale"] == [8.0, 12.0]
    with pytest.raises(DataError, match="scale needs"):
        write_labels_group(path, "badscale", inst, scale=(1.0, 1.0, 1.0))
    assert "badscale" not in zarr.open_group(path, mode="r")["labels"]
    with pytest.raises(DataError, match="shape"):
        write_labels_group(path, "more", inst[:100])
    with pytest.raises(DataError, match="not valid"):
        write_labels_group(path, "../escape", inst)
    with pytest.raises(DataError, match="integers"):
        write_labels_group(path, "floats", inst.astype(np.float32))
    with pytest.raises(DataError, match="not an OME-Zarr image"):
        write_labels_group(zarr.open_group(str(tmp_path / "plain.zarr"), mode="w"), "x", inst)


def test_labels_from_a_zarr_array_chunk_by_chunk_into_a_channel_image(tmp_path):
    """Labels larger than memory: a zarr array, copied chunk by chunk; the image has channels (c, y, x)
    and odd sizes: the labels get a channel axis of length 1 and the image's level shapes."""
    import zarr

    image, inst = nuclei()
    crop = inst[:301, :411]
    two = np.stack([image[:301, :411], image[:301, :411] // 2])
    path = ome_image(tmp_path / "c.zarr", two, "0.4", axes="cyx", scale={"c": 1.0, "y": 0.25, "x": 0.3}, scale_factors=(2, 4))
    source = zarr.create_array(str(tmp_path / "pred.zarr"), shape=crop.shape, chunks=(64, 64), dtype=crop.dtype)
    source[...] = crop
    reads = []
    real = source.__getitem__

    class Spy:  # counts the reads: never the whole array at once
        shape, dtype = source.shape, source.dtype

        def __getitem__(self, key):
            reads.append(key)
            return real(key)

    write_labels_group(path, "objects", Spy(), chunk=64)
    assert len(reads) == 5 * 7 and all((k[0].stop - k[0].start) <= 64 for k in reads)
    group = zarr.open_group(path, mode="r")
    levels = [group[f"labels/objects/{i}"] for i in range(3)]
    assert [lv.shape for lv in levels] == [(1, *group[d].shape[1:]) for d in ("s0", "s1", "s2")]
    assert levels[0].chunks == (1, 64, 64)
    np.testing.assert_array_equal(levels[0][0], crop)
    np.testing.assert_array_equal(levels[1][0], crop[::2, ::2][: levels[1].shape[1], : levels[1].shape[2]])
    np.testing.assert_array_equal(levels[2][0], crop[::4, ::4][: levels[2].shape[1], : levels[2].shape[2]])
    ms = group["labels/objects"].attrs["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.25, 0.3]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    layers = _reader.read_ome_zarr_labels(path)  # channels split in the image layer, dropped from the labels
    assert layers[0][1]["channel_axis"] == 0 and layers[1][0][0].shape == crop.shape and layers[1][1]["scale"] == [0.25, 0.3]


def test_predict_cli_writes_ome_zarr_labels_and_geojson(tmp_path, capsys):
    import tifffile
    import zarr

    from napari_seg_box.core import Project

    from ._models import save_tiny_model

    project = Project.create(tmp_path / "p.zarr", classes=["background", "nucleus"])
    save_tiny_model(project, seed=2)  # untrained, but its labels hold both classes and tens of objects here
    image, _ = nuclei()
    path = ome_image(tmp_path / "img.zarr", image[:128, 64:192], "0.4", scale={"y": 0.5, "x": 0.5}, scale_factors=(2,))
    common = ["predict", str(project.url), "--images", path, "--tile-size", "128", "--json"]
    assert main([*common, "--large", "--out", str(tmp_path / "sep.zarr")]) == 0  # the separate output, as before
    capsys.readouterr()
    separate = zarr.open_group(str(tmp_path / "sep.zarr"), mode="r")["labels"][...]
    assert set(np.unique(separate)) == {1, 2}
    assert main([*common, "--large", "--ome-zarr-labels"]) == 0  # into the image, no --out
    out = json.loads(capsys.readouterr().out)
    assert out["ome_zarr_labels"] == [f"{path}/labels/classes"] and out["output"] is None
    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["labels/classes/0"][...], separate)
    np.testing.assert_array_equal(group["labels/classes/1"][...], separate[::2, ::2])
    assert group["labels/classes"].attrs["image-label"]["properties"][1] == {"label-value": 2, "class": "nucleus"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.zarr", "p.zarr", "sep.zarr"]  # the temporary output is gone
    assert main([*common, "--large", "--ome-zarr-labels"]) == 1  # again: refused before predicting, labels intact
    assert "--overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(group["labels/classes/0"][...], separate)
    # predict files: the label TIFFs as before, plus the labels groups in the OME-Zarr input and the GeoJSON
    outdir = tmp_path / "files"
    assert main([*common, "--out", str(outdir), "--ome-zarr-labels", "--overwrite", "--geojson", "--labels-prefix", "v1_"]) == 0
    row = json.loads(capsys.readouterr().out)["images"][0]
    semantic, instances = tifffile.imread(row["labels"]), tifffile.imread(row["instances"])
    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["labels/v1_classes/0"][...], semantic)
    np.testing.assert_array_equal(group["labels/v1_objects/0"][...], instances)
    assert group["labels"].attrs["labels"] == ["classes", "v1_classes", "v1_objects"]
    collection = json.loads((outdir / "img_objects.geojson").read_text())
    assert row["geojson"] == str(outdir / "img_objects.geojson") and len(collection["features"]) == row["n_objects"] > 10
    assert {f["properties"]["classification"]["name"] for f in collection["features"]} == {"nucleus"}
    assert sorted(f["properties"]["measurements"]["area_px"] for f in collection["features"]) == sorted(
        np.unique(instances, return_counts=True)[1][1:].tolist()
    )
    assert main(["predict", str(project.url), "--images", path, "--large", "--geojson", "--out", str(tmp_path / "g.zarr")]) == 1
    assert "--geojson writes objects" in capsys.readouterr().err


# ---------------------------------------------------------------------- GeoJSON for QuPath
def rasterise(geometry: dict, shape) -> np.ndarray:
    """A GeoJSON geometry back into a mask (pixel centres inside; coordinates in QuPath's pixel-corner convention)."""
    from skimage.draw import polygon

    mask = np.zeros(shape, bool)
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    for rings in polygons:
        for k, ring in enumerate(rings):
            xy = np.asarray(ring, float) - 0.5
            rr, cc = polygon(xy[:, 1], xy[:, 0], shape)
            mask[rr, cc] = k == 0  # the outer ring fills, holes empty
    return mask


def signed_area(ring) -> float:
    xy = np.asarray(ring, float)
    return 0.5 * float(np.dot(xy[:, 0], np.roll(xy[:, 1], -1)) - np.dot(np.roll(xy[:, 0], -1), xy[:, 1]))


def test_geojson_of_nuclei_rasterises_back_with_measurements(tmp_path):
    image, inst = nuclei()
    table = quantify_labels(inst, image, kind="instances", pixel_size=0.5).objects
    ids = np.unique(inst)[1:]
    classes = {int(i): ("nucleus" if i % 2 else "mitotic") for i in ids}
    collection = labels_to_geojson(inst, classes=classes, measurements=table, colors={"nucleus": "#ff0000"})
    text = json.dumps(collection, allow_nan=False)  # serialisable, no NaN
    assert json.loads(text)["type"] == "FeatureCollection" and len(collection["features"]) == len(ids) == 125
    by_label = table.set_index("label")
    ious = []
    for label, feature in zip(ids, collection["features"]):
        props = feature["properties"]
        assert feature["type"] == "Feature" and len(feature["id"]) == 36 and props["objectType"] == "detection"
        assert props["classification"]["name"] == classes[int(label)]
        m = props["measurements"]
        assert m["area_px"] == by_label.loc[label, "area_px"] and m["area_um2"] == pytest.approx(by_label.loc[label, "area_um2"])
        assert m["intensity_mean"] == pytest.approx(by_label.loc[label, "intensity_mean"]) and "label" not in m
        assert all(isinstance(v, (int, float)) for v in m.values())
        mask = inst == label
        drawn = rasterise(feature["geometry"], inst.shape)
        ious.append((drawn & mask).sum() / (drawn | mask).sum())
        for rings in (
            [feature["geometry"]["coordinates"]] if feature["geometry"]["type"] == "Polygon" else feature["geometry"]["coordinates"]
        ):
            assert all(r[0] == r[-1] and len(r) >= 4 for r in rings) and signed_area(rings[0]) > 0
    assert min(ious) > 0.9 and np.mean(ious) > 0.98
    colors = {f["properties"]["classification"]["name"]: f["properties"]["classification"]["color"] for f in collection["features"]}
    assert colors["nucleus"] == [255, 0, 0] and len(colors["mitotic"]) == 3
    # a crop placed with offset: the same outlines as in the full image
    sub = inst[256:, 300:]
    crop, full = labels_to_geojson(sub, offset=(256, 300))["features"], labels_to_geojson(inst)["features"]
    sub_ids = list(np.unique(sub)[1:])
    inside = [lab for lab in sub_ids if (sub == lab).sum() == (inst == lab).sum()]
    assert len(inside) > 10
    for lab in inside:
        assert crop[sub_ids.index(lab)]["geometry"] == full[list(ids).index(lab)]["geometry"]
    # the file, and the helper that measures
    path = write_geojson(tmp_path / "n.geojson", inst, classes="nucleus")
    assert path == str(tmp_path / "n.geojson") and len(json.loads((tmp_path / "n.geojson").read_text())["features"]) == 125
    write_objects_geojson(tmp_path / "m.geojson", inst, image=image, pixel_size=0.5)
    first = json.loads((tmp_path / "m.geojson").read_text())["features"][0]["properties"]
    assert first["measurements"]["area_um2"] == pytest.approx(by_label.iloc[0]["area_um2"]) and "classification" not in first


def test_geojson_holes_and_pieces():
    """A nucleus with a hole punched in it is a Polygon with an interior ring; two nuclei under one id a MultiPolygon."""
    _, inst = nuclei()
    ids, counts = np.unique(inst, return_counts=True)
    big = [int(i) for i, c in sorted(zip(ids[1:], counts[1:]), key=lambda t: -t[1])[:3]]
    labels = np.zeros_like(inst)
    holed = inst == big[0]
    ys, xs = np.nonzero(holed)
    cy, cx = int(ys.mean()), int(xs.mean())
    holed[cy - 2 : cy + 3, cx - 2 : cx + 3] = False
    labels[holed] = 1
    labels[(inst == big[1]) | (inst == big[2])] = 2
    collection = labels_to_geojson(labels, object_type="annotation")
    one, two = collection["features"]
    assert one["geometry"]["type"] == "Polygon" and len(one["geometry"]["coordinates"]) == 2
    outer, hole = one["geometry"]["coordinates"]
    assert signed_area(outer) > 0 > signed_area(hole) and abs(signed_area(hole)) == pytest.approx(25, abs=5)
    assert two["geometry"]["type"] == "MultiPolygon" and len(two["geometry"]["coordinates"]) == 2
    assert one["properties"] == {"objectType": "annotation", "measurements": {}}
    for feature, mask in ((one, labels == 1), (two, labels == 2)):
        drawn = rasterise(feature["geometry"], labels.shape)
        assert (drawn & mask).sum() / (drawn | mask).sum() > 0.95
    with pytest.raises(DataError, match="2D"):
        labels_to_geojson(np.stack([labels, labels]))
