"""The one content hash: SHA-256 over a file, an array's bytes, or a JSON value's canonical text.

    sha256_file("images.npy")         # hex of the file's bytes
    sha256_array(labels)              # hex of the array's bytes in C order (dtype, shape apart)
    digest_json({"kind": "train"})    # hex of the canonical JSON text (`canonical_json`)

Everything identified by content goes through these three: job keys (`runner.jobs.job_key`),
manifests' array checksums, a crafting run's resumable-state fingerprint, the shipped detector
calibration, and the listings of copied artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(root: str | os.PathLike[str], skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """Relative POSIX path -> SHA-256 of every regular file under `root` (links and names in
    `skip` left out), in sorted order; {} when `root` is not a directory."""
    base = Path(root)
    if not base.is_dir():
        return {}
    return {p.relative_to(base).as_posix(): sha256_file(p) for p in sorted(base.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name not in skip}


def sha256_array(a: np.ndarray) -> str:
    """Checksum of an array's bytes in C order (dtype and shape are recorded separately)."""
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, no whitespace, ASCII, no nan."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def digest_json(value: Any) -> str:
    """Hex SHA-256 of `canonical_json(value)`: equal values, equal digests, whatever their key order."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
