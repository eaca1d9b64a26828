"""Where job artifacts live: a local directory, or any fsspec URL (s3://, gs://, file://, memory://).

    storage = open_storage("runs/reproduce")          # local: jobs write in place, as always
    storage = open_storage("s3://bucket/grids/t3")   # remote: jobs work in a scratch directory

A local directory is what every job has always used: `JobContext.dir_of(spec)` is a directory
under it that the job reads and writes directly, and a cluster needs it on a filesystem every
node mounts. A URL needs no shared mount: before a job runs, `stage` copies its own directory
(what a failed earlier attempt left, to resume from) and its dependencies' directories (the
protected set a training reads, the run a DFR curve reads) from the URL into a fresh scratch
directory on the worker; the job runs there with the same layout; afterwards its directory is
copied back. Nothing else changes for a job kind.

A copied directory carries a listing (`ARTIFACTS`: every file's size and sha256) written after
its files: a copy is used only when its listing exists and every file matches it, so a copy
cut short (a killed upload) is never read, and a listing cannot name a path outside its
directory. Anything missing is remade from the spec, which is deterministic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ..core.errors import DataError, UnlearnableError
from ..core.hashing import sha256_file, sha256_tree
from ..core.provenance import now_iso

log = logging.getLogger(__name__)

ARTIFACTS = ".unlearnable-artifacts.json"  # the listing of a copied job directory
MAX_LISTING = 16 << 20  # bytes: a listing is a few hundred bytes per file


def is_url(where: str | os.PathLike[str]) -> bool:
    """Whether `where` is an fsspec URL (s3://, memory://, ...) rather than a directory."""
    return "://" in str(where)


class LocalStorage:
    """Artifacts in a local (or shared-mount) directory: jobs read and write it in place."""

    remote = False

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStorage({self.url!r})"


class FsspecStorage:
    """Artifacts under an fsspec URL; jobs copy what they need in and what they made out."""

    remote = True

    def __init__(self, url: str):
        try:
            import fsspec
        except ImportError:
            raise UnlearnableError(f"{url}: artifacts at a URL need fsspec (pip install fsspec)") from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as e:  # an unknown protocol, or its package missing
            raise UnlearnableError(f"{url}: cannot open this artifact URL ({e})") from None
        self.url = url.rstrip("/")
        self.root = root.rstrip("/")

    def __repr__(self) -> str:
        return f"FsspecStorage({self.url!r})"

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._path(rel) + "/" + ARTIFACTS)

    def push(self, src: Path, rel: str) -> int:
        """Copy the directory `src` to `rel` (files first, the listing last); the number of files."""
        files = {}
        for name, digest in sha256_tree(src, skip=frozenset({ARTIFACTS})).items():
            self.fs.makedirs(os.path.dirname(self._path(f"{rel}/{name}")), exist_ok=True)
            self.fs.put_file(str(src / name), self._path(f"{rel}/{name}"))
            files[name] = {"size": (src / name).stat().st_size, "sha256": digest}
        listing = {"files": files, "written": now_iso(), "host": socket.gethostname()}
        with self.fs.open(self._path(f"{rel}/{ARTIFACTS}"), "w") as f:
            json.dump(listing, f, indent=1)
        return len(files)

    def pull(self, rel: str, dest: Path) -> bool:
        """Copy `rel` into the directory `dest`; False when there is no complete copy of it."""
        listing_path = self._path(f"{rel}/{ARTIFACTS}")
        if not self.fs.exists(listing_path):
            return False
        where = f"{self.url}/{rel}"
        with self.fs.open(listing_path, "rb") as f:
            raw = f.read(MAX_LISTING + 1)
        try:
            if len(raw) > MAX_LISTING:
                raise ValueError(f"larger than {MAX_LISTING} bytes")
            files = json.loads(raw)["files"]
            items = [(str(n), int(m["size"]), str(m["sha256"])) for n, m in files.items()]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{where}/{ARTIFACTS}", f"is not an artifact listing ({e})") from None
        for name, size, digest in items:
            parts = PurePosixPath(name).parts
            if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
                raise DataError(f"{where}/{ARTIFACTS}", f"names a file outside its directory: {name!r}")
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self._path(f"{rel}/{name}"), str(target))
            if target.stat().st_size != size or sha256_file(target) != digest:
                raise DataError(f"{where}/{name}", "does not match its listing (changed or cut short); "
                                "delete the job's directory there to remake it")
        return True

    def remove(self, rel: str) -> None:
        path = self._path(rel)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


Storage = LocalStorage | FsspecStorage


def open_storage(where: str | os.PathLike[str] | Storage) -> Storage:
    """A storage for a local directory or an fsspec URL (a storage is returned as it is)."""
    if isinstance(where, (LocalStorage, FsspecStorage)):
        return where
    return FsspecStorage(str(where)) if is_url(where) else LocalStorage(where)


def relocate(value: Any, old: str, new: str) -> Any:
    """`value` (a job result) with every string path under `old` rewritten under `new`: a result
    names where its artifacts live in the storage, not in a worker's deleted scratch directory."""
    if isinstance(value, dict):
        return {k: relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):].replace(os.sep, "/")
    return value


@contextlib.contextmanager
def staged(storage: FsspecStorage, rels: list[str], own: str) -> Iterator[Path]:
    """A fresh scratch directory holding the copies of `rels` that exist in the storage; on exit
    (a result or a failure) the job's own directory `own` is copied back, and the scratch goes."""
    scratch = Path(tempfile.mkdtemp(prefix="unlearnable-job-"))
    try:
        for rel in dict.fromkeys(rels):
            if storage.pull(rel, scratch / rel):
                log.debug("pulled %s/%s", storage.url, rel)
        try:
            yield scratch
        finally:
            if (scratch / own).is_dir():
                n = storage.push(scratch / own, own)
                log.debug("pushed %d files to %s/%s", n, storage.url, own)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
