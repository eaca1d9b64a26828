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

from .._io import DataError, atomic_dir, now_iso, read_json, sha256_array, versions, write_json
from .imageset import ImageSet

FORMAT_NAME = "unlearnable-dataset"
FORMAT_VERSION = 1
_ARRAYS = {"images": np.uint8, "labels": np.int64, "indices": np.int64}


def is_dataset_dir(path: str | os.PathLike[str]) -> bool:
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


def load_dataset_dir(path: str | os.PathLike[str], verify: bool = True) -> ImageSet:
    """Load and verify a dataset directory; any problem is a `DataError` naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "not a directory")
    man = read_json(path / "manifest.json")
    if not isinstance(man, dict) or man.get("format") != FORMAT_NAME:
        raise DataError(path / "manifest.json", f"not an {FORMAT_NAME} manifest")
    if man.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(path / "manifest.json",
                        f"format version {man.get('format_version')} is newer than this package "
                        f"supports ({FORMAT_VERSION}); upgrade unlearnable")
    classes = man.get("classes")
    if not isinstance(classes, list) or not classes:
        raise DataError(path / "manifest.json", "missing 'classes'")
    arrays = {}
    for key, dtype in _ARRAYS.items():
        f = path / f"{key}.npy"
        arrays[key] = a = load_npy(f)
        if a.dtype != dtype:
            raise DataError(f, f"dtype {a.dtype}, expected {np.dtype(dtype).name}")
        if verify:
            rec = man.get("arrays", {}).get(f"{key}.npy")
            if rec is None:
                raise DataError(path / "manifest.json", f"no checksum recorded for {key}.npy")
            if list(a.shape) != rec.get("shape"):
                raise DataError(f, f"shape {list(a.shape)} does not match manifest {rec.get('shape')}")
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


def load_npy(f: str | os.PathLike[str], mmap: bool = False) -> np.ndarray:
    """np.load without pickles, with a one-line error for a missing or broken file."""
    try:
        return np.load(f, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise DataError(f, "file not found") from None
    except ValueError as e:
        msg = str(e)
        if "allow_pickle" in msg or "Object arrays" in msg:
            raise DataError(f, "holds Python objects (a pickle); refused") from None
        raise DataError(f, f"not a valid .npy file ({msg})") from None
    except (OSError, EOFError) as e:
        raise DataError(f, f"truncated or unreadable .npy file ({e})") from None


def export_png_folder(data: ImageSet, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write `out/data/{index}.png` per image (the released poisons' layout) plus labels.csv."""
    from PIL import Image

    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "data").mkdir()
        lines = ["index,label,class"]
        for img, lab, idx in zip(data.images, data.labels, data.indices):
            arr = img[..., 0] if img.shape[2] == 1 else img
            Image.fromarray(arr).save(tmp / "data" / f"{idx}.png")
            lines.append(f"{idx},{lab},{data.classes[lab]}")
        (tmp / "labels.csv").write_text("\n".join(lines) + "\n")
    return Path(out)
