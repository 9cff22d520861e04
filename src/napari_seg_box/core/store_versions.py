"""Model versions in a project store (a part of :class:`~.store.Project`).

``models/<id>/weights.safetensors`` + ``models/<id>/model.json`` (a :class:`~.versions.ModelVersion`),
indexed in the manifest. Saving claims the next id inside a manifest transaction (two trainings
finishing together get two ids), writes the files, then marks the version ready in the index with
its summary; only ready versions are listed. ``latest`` and ``best`` resolve from the index (one read
of the manifest), a version's description is read once per handle, and its weights are checked
against their SHA-256 when read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from .errors import StoreError
from .manifest import VersionEntry, now_iso
from .versions import ModelVersion, Tuning

VERSION_ID = re.compile(r"v(\d+)")


class VersionsMixin:
    """Saving, listing, resolving and loading model versions (methods of :class:`~.store.Project`)."""

    def model_versions(self) -> list[VersionEntry]:
        """The complete model versions, oldest first, from the manifest's index (no other read)."""
        index = self._manifest.get("models") or {}
        return [
            VersionEntry.from_manifest(v, e) for v, e in sorted(index.items(), key=lambda kv: _order(kv[0])) if e.get("state") == "ready"
        ]

    def new_version_id(self) -> str:
        """The id the next saved version would get now (saving claims one atomically: use its result)."""
        return _next_id(self._manifest.get("models") or {}, self.list_dir("models"))

    def save_model_version(self, weights: bytes, version: ModelVersion) -> ModelVersion:
        """Store a model: claim a new id, write the weights and ``model.json``, then list it.

        Returns the saved :class:`ModelVersion` (with its id, creation time and weights checksum).
        """
        if not isinstance(version, ModelVersion):
            raise StoreError(f"save_model_version takes a ModelVersion (see napari_seg_box.core.versions), not {type(version).__name__}.")
        on_disk = self.list_dir("models")

        def claim(m):
            vid = _next_id(m.setdefault("models", {}), on_disk)
            m["models"][vid] = {"state": "claimed", "claimed": now_iso()}
            return vid

        vid = self._update(claim)
        saved = dataclasses.replace(version, version=vid, created=now_iso(), weights_sha256=hashlib.sha256(weights).hexdigest())
        try:
            self.write_bytes(f"models/{vid}/weights.safetensors", weights)
            self.write_json(f"models/{vid}/model.json", saved.to_json())
        except BaseException:
            self._update(lambda m: m["models"].pop(vid, None))
            self.remove(f"models/{vid}")
            raise
        self._update(lambda m: m["models"].__setitem__(vid, {**saved.index_entry(), "revision": 0}))
        self._versions[(vid, 0)] = saved
        return saved

    def resolve_version(self, version: str | None = None) -> str:
        """The id of ``version``: an id, ``latest`` (or None) or ``best`` (highest validation IoU; macro-F1 for classifiers)."""
        if version not in (None, "latest", "best") and self._ready(version):
            return version
        self.refresh()  # another program may have saved versions since this handle read the manifest
        entries = self.model_versions()
        if not entries:
            raise StoreError(
                f"The project {self.url} has no model version yet.",
                hints={
                    "python": "Train one first: train_model(project, TrainConfig(epochs=...)).",
                    "cli": "Train one first: `napari-seg-box train STORE --epochs N`.",
                    "gui": "Train one first in the Train panel.",
                },
            )
        if version in (None, "latest"):
            return entries[-1].version
        if version == "best":
            key = "val_f1" if self.task == "classification" else "val_iou"
            scored = [e for e in entries if isinstance(e.best.get(key), (int, float))]
            return max(scored, key=lambda e: e.best[key]).version if scored else entries[-1].version
        if not self._ready(version):
            raise StoreError(f"No model version {version!r} in the project (versions: {', '.join(e.version for e in entries)}).")
        return version

    def model_version(self, version: str | None = None) -> ModelVersion:
        """The :class:`ModelVersion` of ``version`` (default: the newest; ``best``): read once per handle."""
        vid = self.resolve_version(version)
        key = (vid, self._manifest["models"][vid].get("revision"))
        if key not in self._versions:
            mv = ModelVersion.from_json(self.read_json(f"models/{vid}/model.json"))
            self._versions[key] = mv if mv.version == vid else dataclasses.replace(mv, version=vid)
        return self._versions[key]

    def model_weights(self, version: str | ModelVersion | None = None) -> bytes:
        """The safetensors bytes of ``version``, checked against the SHA-256 in its description."""
        mv = version if isinstance(version, ModelVersion) else self.model_version(version)
        data = self.read_bytes(f"models/{mv.version}/weights.safetensors")
        if hashlib.sha256(data).hexdigest() != mv.weights_sha256:
            raise StoreError(f"The weights of model version {mv.version} are damaged (checksum mismatch): retrain or restore them.")
        return data

    def save_tuning(self, version: str | ModelVersion, tuning: Tuning | None) -> ModelVersion:
        """Save post-processing tuned for ``version`` into its description (``None`` forgets it)."""
        mv = version if isinstance(version, ModelVersion) else self.model_version(version)
        new = dataclasses.replace(mv, tuning=tuning)
        self.write_json(f"models/{mv.version}/model.json", new.to_json())

        def change(m):
            entry = m["models"][mv.version]
            entry.update(tuned=tuning is not None, revision=int(entry.get("revision") or 0) + 1)
            return entry["revision"]

        self._versions[(mv.version, self._update(change))] = new
        return new

    def _ready(self, version) -> bool:
        return isinstance(version, str) and (self._manifest.get("models") or {}).get(version, {}).get("state") == "ready"


def _order(vid: str):
    m = VERSION_ID.fullmatch(vid)
    return (0, int(m.group(1)), "") if m else (1, 0, vid)


def _next_id(index: dict, on_disk: list[str]) -> str:
    used = [int(m.group(1)) for v in [*index, *on_disk] if (m := VERSION_ID.fullmatch(v))]
    return f"v{max(used, default=0) + 1:03d}"
