"""The project's on-disk dataset format, used for every protected dataset made or imported.

    DIR/images.npy     uint8 (N, H, W, C)
    DIR/labels.npy     int64 (N,)
    DIR/indices.npy    int64 (N,): index of each sample in the base training set
    DIR/manifest.json  how it was made (method, params, seed, base + its checksum, perturbation
                       statistics, versions) and the SHA-256, dtype and shape of each array

Written atomically (temp dir + rename); verified on load; arrays read with allow_pickle=False.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.errors import DataError
from ..core.files import atomic_dir, json_type, read_json, write_json
from ..core.hashing import sha256_array
from ..core.provenance import now_iso, versions
from ..core.safe import DEFAULT_MAX_BYTES, NpyHeader, read_npy
from .imageset import ImageSet
from .refs import record_ref

FORMAT_NAME = "unlearnable-dataset"
FORMAT_VERSION = 1
_ARRAYS = {"images": np.uint8, "labels": np.int64, "indices": np.int64}


def is_dataset_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a directory of the project's dataset format (it holds a manifest.json)."""
    return (Path(path) / "manifest.json").is_file()


def perturbation_stats(protected: np.ndarray, base: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """l_inf / l2 statistics of delta = protected - base in [0, 1] units, and whether it is class-wise."""
    if protected.shape != base.shape:
        raise ValueError(f"shapes differ: {protected.shape} vs {base.shape}")
    n = len(protected)
    linf = np.zeros(n, np.float32)
    l2 = np.zeros(n, np.float32)
    changed = 0
    # Chunked so a 50,000-image set never needs a float copy of the whole thing.
    for s in range(0, n, 4096):
        d = protected[s:s + 4096].astype(np.int16) - base[s:s + 4096].astype(np.int16)
        d = d.reshape(len(d), -1)
        linf[s:s + 4096] = np.abs(d).max(axis=1) / 255.0 if d.size else 0
        l2[s:s + 4096] = np.sqrt((d.astype(np.float32) ** 2).sum(axis=1)) / 255.0
        changed += int((d != 0).any(axis=1).sum())
    return {
        "linf_max": float(linf.max(initial=0)),
        "linf_mean": float(linf.mean()) if n else 0.0,
        "l2_mean": float(l2.mean()) if n else 0.0,
        "l2_max": float(l2.max(initial=0)),
        "images_changed": changed,
        "class_wise": _is_class_wise(protected, base, labels),
    }


def _is_class_wise(protected: np.ndarray, base: np.ndarray, labels: np.ndarray) -> bool:
    """True when every image of a class carries the same delta (before clipping hides parts of it).

    Clipping at 0 and 255 changes the delta where the pattern pushes past the range, so pixels
    that sit at a bound in the protected image are ignored in the comparison.
    """
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)[:256]
        d = protected[idx].astype(np.int16) - base[idx].astype(np.int16)
        free = (protected[idx] != 0) & (protected[idx] != 255)
        ref = np.zeros(d.shape[1:], np.int16)
        have = np.zeros(d.shape[1:], bool)
        for di, fi in zip(d, free):
            clash = have & fi & (ref != di)
            if clash.any():
                return False
            newly = fi & ~have
            ref[newly] = di[newly]
            have |= fi
    return True


def save_dataset(
    path: str | os.PathLike[str],
    data: ImageSet,
    manifest: dict[str, Any],
    base: ImageSet | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `data` in the project format with `manifest` (method, params, seed, ...) completed.

    `base` is the clean set the samples came from, aligned with `data` (same order); when given,
    the manifest gets the perturbation statistics and the base checksum.
    """
    path = Path(path)
    arrays = {"images": data.images, "labels": data.labels, "indices": data.indices}
    man: dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
    man.update(manifest)
    man.setdefault("name", data.name or path.name)
    man["classes"] = list(data.classes)
    man["num_samples"] = len(data)
    man["image_shape_hwc"] = list(data.images.shape[1:])
    if base is not None:
        if base.images.shape != data.images.shape:
            raise ValueError(f"base shape {base.images.shape} != data shape {data.images.shape}")
        man.setdefault("base", {})
        man["base"].setdefault("name", base.name)
    if isinstance((man.get("base") or {}).get("name"), str):
        # A path is written relative to the set itself (data/refs.py), never to where the writer ran.
        man["base"]["name"] = record_ref(man["base"]["name"], path)
    if base is not None:
        man["base"]["sha256_images"] = sha256_array(base.images)
        man["perturbation_measured"] = perturbation_stats(data.images, base.images, data.labels)
    man["created"] = now_iso()
    man["versions"] = versions()
    man["arrays"] = {}
    with atomic_dir(path, overwrite=overwrite) as tmp:
        for key, dtype in _ARRAYS.items():
            a = np.ascontiguousarray(arrays[key], dtype=dtype)
            np.save(tmp / f"{key}.npy", a, allow_pickle=False)
            man["arrays"][f"{key}.npy"] = {
                "sha256": sha256_array(a), "dtype": np.dtype(dtype).name, "shape": list(a.shape),
            }
        write_json(tmp / "manifest.json", man)
    return path


# The fields code reads from a manifest: (JSON types accepted, null accepted). A manifest comes
# with a downloaded dataset, so each is checked before any code relies on its type.
_NUM = (int, float)
_MANIFEST_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), False), "format_version": ((int,), False), "name": ((str,), False),
    "method": ((str,), False), "kind": ((str,), True), "additive": ((bool,), False), "summary": ((str,), True),
    "paper": ((str,), True),
    "created": ((str,), True), "note": ((str,), True), "source_dataset": ((str,), True),
    "classes": ((list,), False), "num_samples": ((int,), False), "image_shape_hwc": ((list,), False),
    "params": ((dict,), False), "seed": ((int,), False), "fraction": (_NUM, False),
    "num_poisoned": ((int,), False), "rank": ((int,), False), "poisoned_mask": ((dict,), False),
    "bound": ((dict,), True), "budget": ((dict,), True), "level": ((str,), True),
    "compute_budget": ((str,), True), "info": ((dict,), True), "subset": ((dict,), True),
    "base": ((dict,), False), "arrays": ((dict,), False), "perturbation_measured": ((dict,), False),
    "timing": ((dict,), False), "verification": ((dict,), False), "source": ((dict,), False),
    "derived_from": ((dict,), True), "purified": ((dict,), True),
    "versions": ((dict,), False),
}
_NESTED_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "base": {"name": ((str,), False), "sha256_images": ((str,), False), "num_samples": ((int,), False),
             "split": ((str,), False)},
    "poisoned_mask": {"sha256": ((str,), False)},
    "timing": {"generate_seconds": (_NUM, False), "load_seconds": (_NUM, False)},
    "info": {"level": ((str,), True), "compute_budget": ((str,), True)},
}
_NON_NEGATIVE = {"format_version", "num_samples", "seed", "num_poisoned", "rank", "base.num_samples"}
_ARRAY_RECORD = {"sha256": ((str,), False), "dtype": ((str,), False), "shape": ((list,), False)}


def _field(where: Path, rec: dict[str, Any], name: str, key: str,
           spec: tuple[tuple[type, ...], bool]) -> None:
    if key not in rec:
        return
    kinds, nullable = spec
    v = rec[key]
    if v is None and nullable:
        return
    # JSON's true/false is a Python int; a seed or a count of `true` is not meant.
    if isinstance(v, bool) != (kinds == (bool,)) or not isinstance(v, kinds):
        want = "a number" if float in kinds else \
            {str: "a string", int: "an integer", dict: "an object", list: "an array", bool: "true or false"}[kinds[0]]
        raise DataError(where, f"field {name!r} must be {want}{' or null' if nullable else ''}, "
                               f"got {json_type(v)}")
    if isinstance(v, str) and "\0" in v:
        raise DataError(where, f"field {name!r} holds a NUL character")
    if name in _NON_NEGATIVE and v < 0:
        raise DataError(where, f"field {name!r} must not be negative, got {v}")


def _int_list(where: Path, name: str, v: list[Any]) -> None:
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v):
        raise DataError(where, f"field {name!r} must be an array of non-negative integers")


def check_manifest(man: Any, where: str | os.PathLike[str]) -> dict[str, Any]:
    """`man` (a parsed manifest.json at `where`) with every field the code reads of its type and
    range; otherwise a `DataError` naming the file and the field."""
    where = Path(where)
    if not isinstance(man, dict) or man.get("format") != FORMAT_NAME:
        raise DataError(where, f"not an {FORMAT_NAME} manifest")
    for key, spec in _MANIFEST_FIELDS.items():
        _field(where, man, key, key, spec)
    for parent, fields in _NESTED_FIELDS.items():
        for key, spec in fields.items():
            if isinstance(man.get(parent), dict):
                _field(where, man[parent], f"{parent}.{key}", key, spec)
    if man.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(where, f"format version {man.get('format_version')} is newer than this package "
                               f"supports ({FORMAT_VERSION}); upgrade unlearnable")
    classes = man.get("classes")
    if not isinstance(classes, list) or not classes:
        raise DataError(where, "missing 'classes'")
    if not all(isinstance(c, str) for c in classes):
        raise DataError(where, "field 'classes' must be an array of strings")
    if "image_shape_hwc" in man:
        _int_list(where, "image_shape_hwc", man["image_shape_hwc"])
    if "fraction" in man and not 0 <= man["fraction"] <= 1:
        raise DataError(where, f"field 'fraction' must be in [0, 1], got {man['fraction']}")
    for fname, rec in man.get("arrays", {}).items():
        if not isinstance(rec, dict):
            raise DataError(where, f"field 'arrays.{fname}' must be an object, got {json_type(rec)}")
        for key, spec in _ARRAY_RECORD.items():
            _field(where, rec, f"arrays.{fname}.{key}", key, spec)
        if "shape" in rec:
            _int_list(where, f"arrays.{fname}.shape", rec["shape"])
    return man


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked manifest of dataset directory `path` (no array is read)."""
    f = Path(path) / "manifest.json"
    return check_manifest(read_json(f), f)


def load_dataset_dir(path: str | os.PathLike[str], verify: bool = True,
                     max_bytes: int = DEFAULT_MAX_BYTES) -> ImageSet:
    """Load and verify a dataset directory; any problem is a `DataError` naming the file.

    Each array's .npy header is checked (dtype, and with `verify` the shape the manifest records)
    before its data is read; no array above `max_bytes` is read.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "not a directory")
    man = read_manifest(path)
    classes = man["classes"]
    arrays = {}
    for key, dtype in _ARRAYS.items():
        f = path / f"{key}.npy"
        rec = man.get("arrays", {}).get(f"{key}.npy")
        if verify and rec is None:
            raise DataError(path / "manifest.json", f"no checksum recorded for {key}.npy")

        def expected(h: NpyHeader, f: Path = f, dtype: Any = dtype, rec: Any = rec) -> None:
            if h.dtype != dtype:
                raise DataError(f, f"dtype {h.dtype}, expected {np.dtype(dtype).name}")
            if verify and list(h.shape) != rec.get("shape"):
                raise DataError(f, f"shape {list(h.shape)} does not match manifest {rec.get('shape')}")

        arrays[key] = a = read_npy(f, max_bytes=max_bytes, check=expected)
        if verify:
            if sha256_array(a) != rec.get("sha256"):
                raise DataError(f, "SHA-256 mismatch: the file is corrupted or was modified")
    images, labels, indices = arrays["images"], arrays["labels"], arrays["indices"]
    if images.ndim != 4:
        raise DataError(path / "images.npy", f"expected (N, H, W, C), got shape {images.shape}")
    if labels.shape != (len(images),) or indices.shape != (len(images),):
        raise DataError(path / "labels.npy",
                        f"{len(images)} images, {labels.shape} labels, {indices.shape} indices")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(path / "labels.npy", f"labels out of range [0, {len(classes)})")
    if len(indices) and indices.min() < 0:
        raise DataError(path / "indices.npy", "negative index")
    n_base = man.get("base", {}).get("num_samples")
    if n_base is not None and len(indices) and indices.max() >= n_base:
        raise DataError(path / "indices.npy", f"index {indices.max()} >= base size {n_base}")
    return ImageSet(images, labels, classes, man.get("name", path.name), indices,
                    {"manifest": man, "path": str(path)})


def manifest_bound(man: dict[str, Any]) -> dict[str, Any] | None:
    """The l_p bound a poison manifest records ({"norm": ..., "eps"/"l2"/...}), or None.

    Manifests written before the rename call it "budget"; the new key wins when both exist.
    """
    return man.get("bound", man.get("budget"))


def manifest_level(man: dict[str, Any]) -> str | None:
    """The compute level (tiny | quick | paper) a poison manifest records, or None.

    Older manifests call it "compute_budget" (also inside "info"); the new key wins.
    """
    for rec in (man, man.get("info") or {}):
        for key in ("level", "compute_budget"):
            if rec.get(key) is not None:
                return rec[key]
    return None


def load_npy(f: str | os.PathLike[str], mmap: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """An .npy array without pickles, its header checked before anything is allocated (see
    `unlearnable.core.safe.read_npy`); a missing, odd or broken file is a one-line `DataError`."""
    return read_npy(f, mmap=mmap, max_bytes=max_bytes)


def export_png_folder(data: ImageSet, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write `out/data/{index}.png` per image (the released poisons' layout) plus labels.csv."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "data").mkdir()
        lines = ["index,label,class"]
        for img, lab, idx in zip(data.images, data.labels, data.indices):
            arr = img[..., 0] if img.shape[2] == 1 else img
            Image.fromarray(arr).save(tmp / "data" / f"{idx}.png")
            lines.append(f"{idx},{lab},{data.classes[lab]}")
        (tmp / "labels.csv").write_text("\n".join(lines) + "\n")
    return Path(out)
