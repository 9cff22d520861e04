"""The files of a project store: atomic writes, and a manifest that two writers cannot corrupt.

:class:`Storage` wraps one location (a local folder or any fsspec URL such as ``s3://bucket/prefix``)
and offers what the project store needs from it:

- ``write_bytes`` replaces a file atomically: readers see the old or the new file, whole
  (``os.replace`` of a fsynced temporary file on a local disk; a single PUT on object stores);
- ``transact(rel, change)`` replaces a small JSON document by ``change(document)`` *only if nobody
  replaced it meanwhile*, retrying with the fresh document when somebody did. On a local disk the
  read-change-write runs under an exclusive lock of ``.segbox.lock`` (``fcntl.flock``; ``msvcrt`` on
  Windows); on S3-compatible stores (AWS, MinIO, Ceph) it is a compare-and-swap: the PUT carries
  ``If-Match: <ETag read>`` (``If-None-Match: *`` to create), and the server refuses it when the
  object changed. Other fsspec file systems get a plain read-change-write (no guarantee against
  parallel writers: use a local folder or S3 for shared projects).

Paths are relative to the store's root and never leave it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import StoreError

LOCK_FILE = ".segbox.lock"
LOCK_TIMEOUT_S = 120.0
MAX_RETRIES = 50


def resolve_storage_options(url: str, storage_options: Mapping[str, Any] | None = None) -> dict:
    """Storage options for ``url``: explicit options first, then the environment.

    For ``s3://`` URLs the endpoint (MinIO and other S3-compatible servers) comes from the
    ``endpoint_url`` option or the ``AWS_ENDPOINT_URL`` / ``S3_ENDPOINT_URL`` environment
    variables; keys come from the option or the usual ``AWS_*`` variables, handled by s3fs.
    """
    opts = dict(storage_options or {})
    if url.startswith(("s3://", "s3a://")):
        endpoint = opts.pop("endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL")
        if endpoint:
            client_kwargs = dict(opts.pop("client_kwargs", {}) or {})
            client_kwargs.setdefault("endpoint_url", endpoint)
            opts["client_kwargs"] = client_kwargs
    return opts


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def json_default(obj: Any):
    """JSON for the numpy scalars/arrays, tuples and dates that metadata may hold."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


class Conflict(Exception):
    """The document changed between reading and writing it (another writer was faster): retry."""


class Storage:
    """One store location (see the module docstring)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None):
        import fsspec

        self.url = str(url).rstrip("/")
        self.options = resolve_storage_options(self.url, storage_options)
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.options)
        self.remote = is_remote(self.url)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.kind = "local" if protocol in ("file", "local") else ("s3" if protocol in ("s3", "s3a") else "other")
        self._zarr = None

    # ------------------------------------------------------------------ paths and plain files
    def path(self, rel: str) -> str:
        parts = rel.replace("\\", "/").split("/")
        if rel.startswith("/") or ".." in parts:
            raise StoreError(f"The path {rel!r} leaves the project store: use a path inside it (no '..', not absolute).")
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def zarr_store(self):
        if self._zarr is None:
            import zarr.storage

            if self.remote:
                self._zarr = zarr.storage.FsspecStore.from_url(self.url, storage_options=self.options)
            else:
                os.makedirs(self.root, exist_ok=True)
                self._zarr = zarr.storage.LocalStore(self.root)
        return self._zarr

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file atomically: readers see the old or the new file, whole."""
        path = self.path(rel)
        if self.remote:
            self.fs.pipe_file(path, data)  # one PUT: atomic on S3-compatible stores
            return
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError as err:
            raise StoreError(f"{rel} is missing from the project store {self.url}.") from err

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def list_dir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty when it does not exist)."""
        path = self.path(rel)
        if not self.fs.exists(path):
            return []
        return sorted(os.path.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False))

    def remove(self, rel: str) -> None:
        path = self.path(rel)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, default=json_default).encode())

    def read_json(self, rel: str) -> Any:
        raw = self.read_bytes(rel)
        try:
            return json.loads(raw)
        except ValueError as err:
            raise StoreError(f"{rel} in the project store {self.url} is not valid JSON ({err}): it is damaged.") from err

    # ------------------------------------------------------------------ compare-and-swap
    def transact(self, rel: str, change: Callable[[Any], Any], *, create: bool = False) -> tuple[Any, Any]:
        """Replace the JSON document ``rel`` by ``change(document)``, safe against parallel writers.

        ``change`` receives the current document (freshly read; ``None`` when ``create`` and it does
        not exist yet), edits it in place or returns a new one as the first item of a pair
        ``(document, result)``; it may raise to abort (nothing is written). It can run more than once
        (after a conflict), so it must only compute from its argument. Returns ``(document, result)``.
        """
        if self.kind == "local":
            with self._locked():
                return self._apply(rel, change, create, conditional=False)
        delay = 0.02
        for _ in range(MAX_RETRIES):
            try:
                return self._apply(rel, change, create, conditional=self.kind == "s3")
            except Conflict:
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
        raise StoreError(
            f"{rel} of {self.url} kept changing under {MAX_RETRIES} attempts to update it: too many programs write to "
            "this project at once. Try again; nothing was lost."
        )

    def _apply(self, rel: str, change, create: bool, *, conditional: bool):
        raw, token = self._read_versioned(rel, missing_ok=create)
        doc = None if raw is None else json.loads(raw)
        if doc is not None and create:
            raise FileExistsError(rel)
        new, result = change(doc)
        data = json.dumps(new, indent=2, default=json_default).encode()
        if conditional:
            self._put_if(rel, data, token)
        else:
            self.write_bytes(rel, data)
        return new, result

    def _read_versioned(self, rel: str, *, missing_ok: bool) -> tuple[bytes | None, str | None]:
        """The document's bytes and a token that changes whenever it is replaced (S3: its ETag)."""
        if self.kind != "s3":
            try:
                return self.fs.cat_file(self.path(rel)), None
            except FileNotFoundError:
                if missing_ok:
                    return None, None
                raise StoreError(f"{rel} is missing from the project store {self.url}.") from None
        from fsspec.asyn import sync

        bucket, key, _ = self.fs.split_path(self.path(rel))

        async def get():
            try:
                resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return None, None
            body = resp["Body"]
            try:
                return await body.read(), resp["ETag"]
            finally:
                body.close()

        data, etag = sync(self.fs.loop, get)
        if data is None and not missing_ok:
            raise StoreError(f"{rel} is missing from the project store {self.url}.")
        return data, etag

    def _put_if(self, rel: str, data: bytes, etag: str | None) -> None:
        """PUT ``data`` only if the object still has ``etag`` (None: only if it does not exist)."""
        from botocore.exceptions import ClientError

        match = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self.fs.pipe_file(self.path(rel), data, **match)
        except ClientError as err:
            raise self._conflict_or(err) from err
        except OSError as err:  # s3fs translates some client errors into OSError subclasses
            cause = err.__cause__ or err.__context__
            if isinstance(cause, ClientError):
                raise self._conflict_or(cause) from err
            raise

    @staticmethod
    def _conflict_or(err) -> Exception:
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return Conflict(code or status)
        return err

    @contextlib.contextmanager
    def _locked(self):
        """An exclusive lock of the store (local folders) for one read-change-write of a document."""
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(os.path.join(self.root, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _lock(fd, self.url)
            yield
        finally:
            _unlock(fd)
            os.close(fd)


def _lock(fd: int, url: str) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            if os.name == "nt":  # pragma: no cover - Windows
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise StoreError(
                    f"The project store {url} has been locked by another program for {LOCK_TIMEOUT_S:.0f} s: "
                    "wait for it to finish (or stop it), then try again."
                ) from None
            time.sleep(0.01 + 0.02 * random.random())


def _unlock(fd: int) -> None:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
