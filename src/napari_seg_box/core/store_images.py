"""Images and annotations of a project store (a part of :class:`~.store.Project`).

Every write puts its arrays under new names first, then records them in the manifest with one
compare-and-swap, then removes what they replaced: readers always see whole revisions, and parallel
writers never drop each other's images or annotations.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import DataError, StoreError
from .layout import canonical_axes, channels_of, parse_axes, read_axes, spatial_shape, to_canonical
from .manifest import (
    ORIGINS,
    ImageRecord,
    annotated_planes,
    check_image_array,
    check_instances,
    check_name,
    check_plane_size,
    check_split,
    existing,
    now_iso,
    provenance,
    slug,
)
from .voxels import record_fields

HISTORY_LENGTH = 20  # annotation revisions whose provenance the manifest keeps per image


class ImagesMixin:
    """Images, splits, image classes and annotation revisions (methods of :class:`~.store.Project`)."""

    def image_names(self, split: str | None = None) -> list[str]:
        images = self._manifest["images"]
        return [n for n, rec in images.items() if split is None or rec["split"] == check_split(split)]

    def image_record(self, name: str) -> ImageRecord:
        return ImageRecord.from_entry(name, self._entry(name), self.pixel_size, self.unit)

    def images(self, split: str | None = None) -> list[ImageRecord]:
        return [self.image_record(n) for n in self.image_names(split)]

    def _entry(self, name: str) -> dict:
        try:
            return self._manifest["images"][name]
        except KeyError:
            known = ", ".join(list(self._manifest["images"])[:10]) or "none yet"
            raise StoreError(f"No image named {name!r} in the project (images: {known}).") from None

    def add_image(
        self,
        name: str,
        image: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        instances: np.ndarray | None = None,
        split: str | None = None,
        channel_axis: int | None = None,
        stack: bool | None = None,
        axes: str | None = None,
        pixel_size: float | Sequence[float] | None = None,
        unit: str | None = None,
        frame_interval: float | None = None,
        time_unit: str | None = None,
        source: str | None = None,
        image_class: str | None = None,
        origin: str = "imported",
        overwrite: bool = False,
    ) -> str:
        """Add one image, optionally with annotations, and return its name.

        ``image`` is (Y, X), multichannel (Y, X, C), a volume (Z, Y, X[, C]) or a time-lapse (T, Y,
        X[, C]), a stack kept whole as one image; which one is decided by :func:`.layout.read_axes`
        (``channel_axis`` / ``stack`` override it) or, given, by the named ``axes`` (``"TYX"``,
        ``"ZCYX"``...: :func:`.layout.parse_axes`; the only way to say time). It is stored
        channel-last. ``labels`` holds 0 = unlabelled and 1..K = classes, of the image's spatial
        shape; ``instances`` optional ground-truth object ids (for object metrics). ``pixel_size`` is
        (y, x) or, for a volume, (z, y, x), in ``unit`` (default: the project's; converted to it when
        both are lengths); a time-lapse has a ``frame_interval`` in ``time_unit`` (default ``s``).
        ``split`` defaults to ``train`` for a new image and keeps the split of the image it replaces
        (``overwrite=True``), so re-importing never moves held-out images back into training.
        ``image_class`` is the image-level class of a classification project.
        """
        options = dict(labels=labels, instances=instances, split=split, channel_axis=channel_axis, stack=stack, axes=axes)
        options.update(pixel_size=pixel_size, unit=unit, frame_interval=frame_interval, time_unit=time_unit)
        options.update(source=source, image_class=image_class, origin=origin)
        return self.add_images([(name, image, options)], overwrite=overwrite)[0]

    def add_images(self, items: Iterable[tuple[str, np.ndarray, Mapping[str, Any]]], *, overwrite: bool = False) -> list[str]:
        """Add many images with one manifest update (all or none): ``items`` are ``(name, image,
        options)`` with the keyword options of :meth:`add_image`. Thousands of small images (a
        classification project) import in seconds where one update per image would rewrite the
        manifest thousands of times."""
        staged: list[tuple[str, dict, str | None]] = []
        counts = {r["channels"] for r in self._manifest["images"].values()}
        seen: set[str] = set()
        try:
            for name, image, options in items:
                if name in seen:
                    raise DataError(f"The image name {name!r} is given twice: each image needs its own name.")
                seen.add(name)
                rec = self._stage(name, image, channels=counts.pop() if len(counts) == 1 else None, **options)
                counts = {rec["channels"]}
                staged.append((name, rec, options.get("split")))
        except BaseException:
            for _, rec, _ in staged:
                self.remove(f"images/{rec['key']}")
            raise

        def change(m):
            names = {n for n, _, _ in staged}
            replaced = []
            used = {r["channels"] for n, r in m["images"].items() if n not in names}
            for name, rec, split in staged:
                old = m["images"].get(name)
                if old and not overwrite:
                    raise StoreError(
                        f"An image named {name!r} is already in the project.",
                        hints={
                            "python": "Choose another name, or pass overwrite=True to replace it.",
                            "cli": "Use --prefix for other names, or --overwrite to replace it.",
                            "gui": "It is in the panel's list: change its split there (e.g. to test), rename the layer to add "
                            "it again, or select it and press Remove first.",
                        },
                    )
                if used and rec["channels"] not in used:
                    raise DataError(
                        f"The image {name!r} has {rec['channels']} channel(s) but the project's images have {used.pop()}: "
                        "one model needs one kind of image. Convert it (e.g. RGB to grayscale) or use another project."
                    )
                if old and split is None:
                    rec["split"] = old["split"]
                m["images"][name] = rec
                if old:
                    replaced.append(old)
            return replaced

        try:
            replaced = self._update(change)
        except BaseException:
            for _, rec, _ in staged:
                self.remove(f"images/{rec['key']}")  # nothing references the new arrays
            raise
        for old in replaced:
            self.remove(f"images/{old['key']}")
        return [n for n, _, _ in staged]

    def _stage(
        self, name, image, *, channels, labels=None, instances=None, split=None, channel_axis=None, stack=None, axes=None,
        pixel_size=None, unit=None, frame_interval=None, time_unit=None, source=None, image_class=None, origin="imported",
    ) -> dict:  # fmt: skip
        """Check one image, write its arrays under new names, and return its manifest record."""
        check_name(name)
        if split is not None:
            check_split(split)
        if origin not in ORIGINS:
            raise DataError(f"Unknown annotation origin {origin!r}: use one of {', '.join(ORIGINS)}.")
        image = check_image_array(image)
        if axes:
            layout = parse_axes(axes, image.shape)
        else:
            layout = read_axes(image.shape, channel_axis=channel_axis, stack=stack, channels=channels)
        axes = canonical_axes(image, layout)
        image = np.ascontiguousarray(to_canonical(image, layout))
        check_plane_size(image.shape, axes)
        space = spatial_shape(image.shape, axes)
        if labels is not None:
            labels = self._check_labels(labels, space)
        if instances is not None:
            instances = check_instances(instances, space)
        if image_class is not None:
            self._check_image_class(image_class)
        key = f"{slug(name)}-{uuid.uuid4().hex[:8]}"
        rec = {
            "key": key,
            "split": split or "train",
            "shape": list(image.shape),
            "dtype": str(image.dtype),
            "axes": axes,
            "channels": channels_of(image.shape, axes),
            "array": f"images/{key}/image",
            "labels": None,
            "instances": None,
            "label_counts": None,
            **record_fields(axes, pixel_size, unit, frame_interval, time_unit, self.unit),
            "source": source,
            "image_class": image_class,
            "annotation": None,
            "annotation_history": [],
            "added": now_iso(),
        }
        self._write_array(rec["array"], image, axes)
        if labels is not None:
            rec["labels"] = self._write_revision(key, "labels", labels)
            rec["label_counts"] = self._counts(labels)
            rec["annotated_planes"] = annotated_planes(labels, axes)
            rec["annotation"] = provenance(origin, None, rec["labels"])
            rec["annotation_history"] = [rec["annotation"]]
        if instances is not None:
            rec["instances"] = self._write_revision(key, "instances", instances)
        return rec

    def remove_image(self, name: str) -> None:
        old = self._update(lambda m: m["images"].pop(existing(m, name)))
        self.remove(f"images/{old['key']}")

    def set_split(self, names: str | Sequence[str], split: str) -> None:
        """Mark one image or several as train / validation / test (all or none: unknown names change nothing)."""
        check_split(split)
        names = [names] if isinstance(names, str) else list(names)

        def change(m):
            for n in names:
                existing(m, n)
            for n in names:
                m["images"][n]["split"] = split

        self._update(change)

    def split_into_tiles(self, name: str, rows: int = 2, cols: int = 2, *, splits: Sequence[str] | None = None) -> list[str]:
        """Cut one image into ``rows`` x ``cols`` tiles, each a new image with its share of the
        annotation and instances, so that part of a single large image can be held out (validation,
        test). ``splits`` gives each tile's split, row by row; by default the last tile is ``test``,
        the one before ``validation`` (from 3 tiles on) and the others ``train``. The image itself is
        removed once every tile is saved (nothing is lost). Returns the tiles' names."""
        rec = self.image_record(name)
        if rec.is_stack:
            raise DataError(f"{name} is a stack: cutting stacks into tiles is not supported; split its planes instead.")
        n = rows * cols
        if rows < 1 or cols < 1 or n < 2:
            raise DataError(f"Cut an image into at least 2 tiles (got {rows} x {cols}).")
        splits = (
            list(splits) if splits is not None else ["train"] * (n - 2 if n >= 3 else 1) + (["validation"] if n >= 3 else []) + ["test"]
        )
        if len(splits) != n:
            raise DataError(f"Give one split per tile: {n} tiles, {len(splits)} splits.")
        for s in splits:
            check_split(s)
        names = [f"{name} tile {r + 1}-{c + 1}" for r in range(rows) for c in range(cols)]
        taken = [t for t in names if t in self._manifest["images"]]
        if taken:
            raise DataError(f"Images named {taken[0]!r} and so on exist already: rename or remove them first.")
        image, labels, instances = self.get_image(name), self.get_labels(name), self.get_instances(name)
        h, w = rec.spatial_shape
        ys, xs = np.linspace(0, h, rows + 1).astype(int), np.linspace(0, w, cols + 1).astype(int)
        for k, (tile, split) in enumerate(zip(names, splits)):
            r, c = divmod(k, cols)
            sl = (slice(ys[r], ys[r + 1]), slice(xs[c], xs[c + 1]))
            self.add_image(
                tile, image[sl], labels=None if labels is None else labels[sl], instances=None if instances is None else instances[sl],
                split=split, pixel_size=rec.spacing, unit=rec.unit, source=f"{name}[{ys[r]}:{ys[r + 1]}, {xs[c]}:{xs[c + 1]}]",
                stack=False if image.ndim == 3 else None, channel_axis=2 if image.ndim == 3 else None,
            )  # fmt: skip
        if rec.unpainted_background:
            self.set_unpainted_background(names)
        self.remove_image(name)
        return names

    def set_unpainted_background(self, names: str | Sequence[str], on: bool = True) -> None:
        """Say that the unpainted pixels of these images are background (class 1): their annotation
        is dense, though only the objects were painted (as in cellpose or micro-sam). Training,
        tuning and evaluation then read label 0 of these images as class 1. All or none."""
        names = [names] if isinstance(names, str) else list(names)

        def change(m):
            for n in names:
                existing(m, n)
            for n in names:
                m["images"][n]["unpainted_background"] = bool(on)

        self._update(change)

    def set_image_class(self, name: str, image_class: str | None) -> None:
        """The image-level class of ``name`` (one of the project's class names), or None."""
        self.set_image_classes({name: image_class})

    def set_image_classes(self, classes: Mapping[str, str | None]) -> None:
        """Set the image-level class of many images at once (``{image: class or None}``; all or none)."""
        for c in set(classes.values()) - {None}:
            self._check_image_class(c)

        def change(m):
            for n in classes:
                existing(m, n)
            for n, c in classes.items():
                m["images"][n]["image_class"] = c

        self._update(change)

    def _check_image_class(self, image_class: str) -> None:
        if image_class not in self.class_names:
            raise DataError(f"Unknown class {image_class!r}: the project's classes are {', '.join(self.class_names)}.")

    def image_array(self, name: str):
        """The image as a lazy zarr array (canonical axes, channel-last): nothing is read until indexed."""
        return self._open_array(name, self._entry(name)["array"], "image")

    def get_image(self, name: str) -> np.ndarray:
        return np.asarray(self.image_array(name)[...])

    def get_labels(self, name: str) -> np.ndarray | None:
        """The current annotation of ``name`` (0 = unlabelled), or None when it has none.

        Checked against the annotated-pixel counts the manifest keeps: a lost chunk of the array
        would otherwise read as unlabelled pixels without notice."""
        labels = self._read_revision(name, "labels")
        saved = self._entry(name).get("label_counts")
        if labels is not None and saved is not None and self._counts(labels) != (list(saved) + [0] * self.n_classes)[: self.n_classes]:
            lost = int(sum(saved)) - int(np.count_nonzero(labels))
            raise StoreError(
                f"The annotation of {name!r} is damaged: {max(lost, 0):,} annotated pixels are missing from its array (a deleted or "
                "corrupted chunk). Restore the store from a backup, or save the annotation again from napari."
            )
        return labels

    def get_instances(self, name: str) -> np.ndarray | None:
        return self._read_revision(name, "instances")

    def set_labels(self, name: str, labels: np.ndarray | None, *, origin: str = "drawn", model_version: str | None = None) -> None:
        """Save the annotation of ``name`` (crash-safe: the old one stays until the new is whole).

        ``origin`` records where this revision comes from: ``drawn`` (painted), ``imported`` (a mask
        file), ``corrected`` (a model's prediction, edited; give ``model_version``) or ``predicted``.
        ``None`` removes the annotation.
        """
        if origin not in ORIGINS:
            raise DataError(f"Unknown annotation origin {origin!r}: use one of {', '.join(ORIGINS)}.")
        rec = self._entry(name)
        new = counts = None
        if labels is not None:
            labels = self._check_labels(labels, spatial_shape(rec["shape"], rec["axes"]))
            new = self._write_revision(rec["key"], "labels", labels)
            counts = self._counts(labels)
        origin_of = provenance(origin, model_version, new) if new else None

        def change(m):
            entry = m["images"][existing(m, name)]
            old = entry.get("labels")
            entry.update(labels=new, label_counts=counts, annotation=origin_of)
            entry["annotated_planes"] = None if labels is None else annotated_planes(labels, entry["axes"])
            if origin_of:
                entry["annotation_history"] = (entry.get("annotation_history") or [])[-(HISTORY_LENGTH - 1) :] + [origin_of]
            return old

        self._replace_revision(change, new)

    def set_instances(self, name: str, instances: np.ndarray | None) -> None:
        rec = self._entry(name)
        new = None
        if instances is not None:
            new = self._write_revision(rec["key"], "instances", check_instances(instances, spatial_shape(rec["shape"], rec["axes"])))

        def change(m):
            entry = m["images"][existing(m, name)]
            old, entry["instances"] = entry.get("instances"), new
            return old

        self._replace_revision(change, new)

    def _replace_revision(self, change, new: str | None) -> None:
        try:
            old = self._update(change)
        except BaseException:
            if new:
                self.remove(new)
            raise
        if old and old != new:
            self.remove(old)

    def annotation_stats(self, name: str) -> np.ndarray:
        """Annotated pixels per class of one image: array of length K (index 0 = class 1), from the manifest."""
        counts = np.zeros(self.n_classes, dtype=np.int64)
        saved = self._entry(name).get("label_counts") or []
        counts[: min(len(saved), self.n_classes)] = saved[: self.n_classes]
        return counts

    def annotation_history(self, name: str) -> list[dict]:
        """Provenance of the last annotation revisions of ``name`` (oldest first)."""
        return [dict(h) for h in self._entry(name).get("annotation_history") or []]

    # ------------------------------------------------------------------ arrays
    def _check_labels(self, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.shape != tuple(shape):
            raise DataError(f"Labels of shape {labels.shape} do not match the image's {tuple(shape)}.")
        whole = np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool
        if not whole and (not np.issubdtype(labels.dtype, np.number) or not np.all(np.mod(labels, 1) == 0)):
            raise DataError("Labels must be whole numbers: 0 = unlabelled, 1..K = classes.")
        labels = labels.astype(np.int64, copy=False)
        lo, hi = int(labels.min(initial=0)), int(labels.max(initial=0))
        if lo < 0 or hi > self.n_classes:
            raise DataError(
                f"Labels hold values {lo}..{hi} but the project has {self.n_classes} classes ({', '.join(self.class_names)}; 0 = unlabelled).",
                hints={
                    "python": "Add classes with project.set_classes([...]) or fix the labels.",
                    "cli": "Import them into a project with more classes (init --classes), or fix the labels.",
                    "gui": "Add a class in the Classes field (Apply classes), or paint only with the project's classes.",
                },
            )
        return labels.astype(np.uint8 if self.n_classes < 255 else np.uint16)

    def _counts(self, labels: np.ndarray) -> list[int]:
        return np.bincount(labels.ravel(), minlength=self.n_classes + 1)[1 : self.n_classes + 1].astype(int).tolist()

    def _write_array(self, rel: str, data: np.ndarray, axes: str) -> None:
        import zarr

        chunks = tuple({"z": 1, "t": 1, "y": min(n, 512), "x": min(n, 512), "c": n}[a] for a, n in zip(axes, data.shape))
        arr = zarr.create_array(
            store=self._storage.zarr_store(), name=rel, shape=data.shape, dtype=data.dtype, chunks=chunks, overwrite=True
        )
        arr[...] = data

    def _write_revision(self, key: str, kind: str, data: np.ndarray) -> str:
        rel = f"images/{key}/{kind}-{uuid.uuid4().hex[:12]}"
        self._write_array(rel, data, "zyx"[-data.ndim :])
        return rel

    def _read_revision(self, name: str, kind: str) -> np.ndarray | None:
        rel = self._entry(name).get(kind)
        if not rel:
            return None
        return np.asarray(self._open_array(name, rel, kind)[...])

    def _open_array(self, name: str, rel: str, kind: str):
        import zarr

        try:
            return zarr.open_array(store=self._storage.zarr_store(), path=rel, mode="r")
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.BaseZarrError) as err:
            raise StoreError(
                f"The {kind} array of {name!r} ({rel}) is missing or damaged in the project store {self.url}: "
                "restore it from a backup, or remove the image (the rest of the project is unaffected)."
            ) from err
