"""Formats that release the protected images themselves: PNG folders, NTGA's arrays, plain npz.

Labels: PNG folders carry none (unless a `labels.csv` from `unlearnable export` or class
folders are present), NTGA and npz usually do; labels a format carries are checked against the
base set by `import_dataset`.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import DataError, UnlearnableError
from ..core.progress import bar
from ..core.safe import decode_image, read_bounded, read_npz
from ..core.text import for_filename
from ..data.imageset import ImageSet
from ..data.store import load_npy
from .base import Imported, check_finite, chunks, describe, find_one, register_importer

# ---------------------------------------------------------------------------------------------
# PNG folders

_INT_STEM = re.compile(r"^[0-9]+$")
# labels.csv of a 50,000-image set is under a megabyte.
_MAX_CSV_BYTES = 256 << 20


def array_limit(base: ImageSet) -> int:
    """The most bytes an array of a release for `base` may declare: every base value as a
    16-byte number, plus one-hot labels of as many; more cannot be a release for this base."""
    return 16 * (base.images.size + len(base) * base.num_classes) + (1 << 20)


def class_dir_name(name: str) -> str:
    """A class name as a folder name ("T-shirt/top" -> "T-shirt_top"); export and import agree."""
    return for_filename(name, spaces=True)  # never ".", ".." or hidden: a class cannot name a parent


def read_png(f: Path, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """One PNG as uint8 (H, W, channels); with `size` (width, height), one of that size.

    Decoded by the one rule every image reader follows (`core.safe.decode_image`: 8-bit only,
    opaque only, palettes expanded), then held to the base set: for a grey base an RGB image is
    accepted only when its three channels are equal (effectively grey); a grey image for a
    colour base is refused (nothing says how it was meant). The size is checked from the header
    before decoding; a file that is not a PNG by its content (a JPEG named .png) is refused.
    """
    def header(wh: tuple[int, int], mode: str) -> None:
        if size is not None and wh != size:
            raise DataError(f, f"image of {wh[0]}x{wh[1]} pixels, the base set's are {size[0]}x{size[1]}")

    a = decode_image(f, ("PNG",), "PNG", check=header)
    if channels == 1 and a.shape[2] == 3:
        if (a[..., 0] != a[..., 1]).any() or (a[..., 0] != a[..., 2]).any():
            raise DataError(f, "colour image for a grey (1-channel) base set")
        a = a[..., :1]
    elif channels == 3 and a.shape[2] == 1:
        raise DataError(f, "grey image for a colour (3-channel) base set")
    return a


def _pngs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def _png_layout(path: Path) -> tuple[str, Path]:
    """("flat", dir of {index}.png) or ("classes", dir of CLASS/ folders)."""
    if not path.is_dir():
        raise DataError(path, "not a directory (expected data/{index}.png, {index}.png or CLASS/*.png)")
    if (path / "data").is_dir() and _pngs(path / "data"):
        return "flat", path / "data"
    if _pngs(path):
        return "flat", path
    for root in (path / "train", path):
        if root.is_dir() and any(d.is_dir() and _pngs(d) for d in root.iterdir()):
            return "classes", root
    raise DataError(path, "no PNG files (expected data/{index}.png, {index}.png or CLASS/*.png)")


def _is_png_folder(path: Path) -> bool:
    try:
        _png_layout(path)
        return True
    except DataError:
        return False


def _index_of(f: Path, n: int) -> int:
    if not _INT_STEM.match(f.stem):
        raise DataError(f, "file name is not an index into the base set ({index}.png)")
    # Checked as a Python int: a 20-digit name does not fit the int64 array of indices.
    i = int(f.stem)
    if i >= n:
        raise DataError(f, f"index {i} is outside the base set (0..{n - 1})")
    return i


def _read_labels_csv(f: Path) -> dict[int, int]:
    """index -> label from the labels.csv `unlearnable export` writes (index,label[,class])."""
    out: dict[int, int] = {}
    try:
        text = read_bounded(f, _MAX_CSV_BYTES).decode("utf-8")
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f, f"unreadable CSV ({e})") from None
    if not rows or [c.strip() for c in rows[0][:2]] != ["index", "label"]:
        raise DataError(f, "expected a header 'index,label[,class]'")
    for n, row in enumerate(rows[1:], start=2):
        try:
            index, label = int(row[0]), int(row[1])
        except (ValueError, IndexError):
            raise DataError(f, f"line {n}: expected 'index,label', got {','.join(row)[:80]!r}") from None
        if not (0 <= index < 1 << 63 and -1 << 63 <= label < 1 << 63):
            raise DataError(f, f"line {n}: index or label out of range")
        out[index] = label
    return out


@dataclass
class PNGParams:
    """subset: accept PNGs for only part of the base set (default: every base index must have
    its PNG, so a broken download is caught). labels_csv: read labels.csv when present."""

    subset: bool = False
    labels_csv: bool = True


@register_importer(
    "png-folder", PNGParams, _is_png_folder,
    "one PNG per image named by its base index: data/{index}.png, {index}.png, or CLASS/{index}.png",
    "Adversarial Poisoning, AR, Regions, class-wise random noise (Fowl et al., Sandoval-Segura et al.)")
def import_png(path: Path, base: ImageSet, p: PNGParams, progress: bool) -> Imported:
    """A folder of one PNG per image, named by its base index: PATH/data/{index}.png or PATH/{index}.png
    (labels from PATH/labels.csv when present), or PATH[/train]/CLASS/{index}.png (labels from the folders)."""
    layout, root = _png_layout(path)
    files: list[Path] = []
    folder_labels: list[int] = []
    if layout == "flat":
        files = _pngs(root)
    else:
        lookup: dict[str, int] = {}
        for k, c in enumerate(base.classes):
            lookup.setdefault(c, k)
            lookup.setdefault(class_dir_name(c), k)
        for d in sorted(x for x in root.iterdir() if x.is_dir()):
            k = lookup.get(d.name, int(d.name) if _INT_STEM.match(d.name) else -1)
            if not 0 <= k < base.num_classes:
                raise DataError(d, f"class folder matches no class of the base set ({', '.join(base.classes)})")
            found = _pngs(d)
            files += found
            folder_labels += [k] * len(found)
    idx = np.array([_index_of(f, len(base)) for f in files], dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    files = [files[i] for i in order]
    idx = idx[order]
    dup = np.flatnonzero(np.diff(idx) == 0)
    if len(dup):
        raise DataError(files[dup[0] + 1], f"index {idx[dup[0]]} appears twice ({files[dup[0]].name})")
    if not p.subset and len(idx) != len(base):
        missing = np.setdiff1d(np.arange(len(base)), idx)
        where = root if layout == "classes" else root / f"{missing[0]}.png"
        raise DataError(where, f"missing: {len(missing)} of {len(base)} base images have no PNG "
                               f"(first: index {missing[0]}); --param subset=true imports a subset")
    h, w, c = base.images.shape[1:]
    images = np.empty((len(files), h, w, c), np.uint8)
    for i, f in enumerate(bar(files, desc="read PNG", progress=progress)):
        a = read_png(f, c, (w, h))
        if a.shape != (h, w, c):
            raise DataError(f, f"image of {a.shape[1]}x{a.shape[0]} pixels with {a.shape[2]} channel(s), "
                               f"the base set's are {w}x{h} with {c}")
        images[i] = a
    sources = list(files)
    labels = labels_src = None
    if layout == "classes":
        labels, labels_src = np.asarray(folder_labels, np.int64)[order], root
    elif p.labels_csv and (path / "labels.csv").is_file():
        labels_src = path / "labels.csv"
        table = _read_labels_csv(labels_src)
        absent = [int(i) for i in idx if int(i) not in table]
        if absent:
            raise DataError(labels_src, f"no label for index {absent[0]} ({len(absent)} indices unlabelled)")
        labels = np.array([table[int(i)] for i in idx], np.int64)
        sources.append(labels_src)
    return Imported(images, idx, sources, labels, labels_src, details={
        "layout": "class folders" if layout == "classes" else "flat {index}.png",
        "png_root": str(root.resolve()),
    })


# ---------------------------------------------------------------------------------------------
# NTGA: x_train*.npy (float [0, 1], NHWC) and one-hot y_train*.npy

def _labels_from(y: np.ndarray, f: Path, n: int, k: int) -> np.ndarray:
    """Integer labels from a 1-d label array or a one-hot (n, K) array."""
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        if len(y) != n:
            raise DataError(f, f"{len(y)} labels for {n} images")
        return y.astype(np.int64)
    if y.ndim == 2:
        if y.shape != (n, k):
            raise DataError(f, f"one-hot labels of shape {y.shape}, expected ({n}, {k})")
        check_finite(y, f)
        hot = y == 1
        if not (((y == 0) | hot).all() and (hot.sum(axis=1) == 1).all()):
            raise DataError(f, "labels are not one-hot (each row one 1, the rest 0)")
        return y.argmax(axis=1).astype(np.int64)
    raise DataError(f, f"expected integer labels (n,) or one-hot (n, K), got {describe(y)}")


@dataclass
class NTGAParams:
    """clip: clip pixel values outside [0, 1] (counted) instead of refusing the file."""

    clip: bool = False


def _is_ntga(p: Path) -> bool:
    if p.is_file():
        return p.name.startswith("x_train") and p.suffix == ".npy"
    return p.is_dir() and next(p.glob("x_train*.npy"), None) is not None


@register_importer(
    "ntga-npy", NTGAParams, _is_ntga,
    "NTGA: x_train*.npy (N, H, W, C) float in [0, 1] and one-hot y_train*.npy; sample i = base image i",
    "Yuan & Wu, Neural Tangent Generalization Attacks, ICML 2021")
def import_ntga(path: Path, base: ImageSet, p: NTGAParams, progress: bool) -> Imported:
    """NTGA's release: x_train*.npy, float (N, H, W, C) in [0, 1], the whole base set in order, and
    the y_train*.npy beside it of one-hot (or integer) labels; pixels become uint8 by truncation."""
    fx = find_one(path, ("x_train*.npy",), "x_train*.npy")
    fy = fx.with_name("y_train" + fx.name[len("x_train"):]) if path.is_file() else \
        find_one(path, ("y_train*.npy",), "y_train*.npy")
    x = load_npy(fx, mmap=True, max_bytes=array_limit(base))
    y = load_npy(fy, max_bytes=array_limit(base))
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(fx, f"expected float images in [0, 1], got {describe(x)}")
    if x.ndim != 4 or x.shape[1:] != base.images.shape[1:]:
        raise DataError(fx, f"images of shape {x.shape}, expected (N, H, W, C) with (H, W, C) = "
                            f"{base.images.shape[1:]} from the base set")
    if len(x) != len(base):
        raise DataError(fx, f"{len(x)} images but the base set has {len(base)}; NTGA releases the "
                            f"whole training set in order")
    check_finite(x, fx)
    labels = _labels_from(y, fy, len(x), base.num_classes)
    images, clipped = _to_uint8(x, 1, fx, p.clip, "truncate")
    return Imported(images, np.arange(len(x)), [fx, fy], labels, fy, details={
        "values_clipped": clipped, "quantization": "truncate ((x * 255).astype(uint8), as the paper's loader)",
    })


def _to_uint8(x: np.ndarray, scale: int, f: Path, clip: bool, quantize: str) -> tuple[np.ndarray, int]:
    """Pixels at `scale` (1 or 255) to uint8, chunked; out-of-range values refused or clipped."""
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x), 0
    out = np.empty(x.shape, np.uint8)
    clipped = 0
    for sl in chunks(len(x)):
        v = x[sl] * 255 if scale == 1 else x[sl]  # in the file's own dtype, as the loaders do
        bad = (v < 0) | (v > 255)
        if bad.any():
            if not clip:
                i = np.argwhere(bad)[0]
                i[0] += sl.start
                lim = "[0, 1]" if scale == 1 else "[0, 255]"
                raise DataError(f, f"values outside {lim} (first at {tuple(int(j) for j in i)}: "
                                   f"{x[tuple(i)]}); --param clip=true clips them")
            clipped += int(bad.sum())
            v = np.clip(v, 0, 255)
        if quantize == "round" and not np.issubdtype(v.dtype, np.integer):
            v = np.rint(v)
        out[sl] = v.astype(np.uint8)
    return out, clipped


# ---------------------------------------------------------------------------------------------
# Plain npz: images, labels, optional indices

@dataclass
class NPZParams:
    """layout: NHWC, NCHW or auto (by matching the base set's C, H, W). scale: 1 (pixels in
    [0, 1]), 255, or auto (uint8 -> 255; float with max <= 1 -> 1). quantize: round (nearest grey
    level) or truncate, for float pixels. clip: clip out-of-range values instead of refusing."""

    layout: str = "auto"
    scale: str = "auto"
    quantize: str = "round"
    clip: bool = False


def _layout(x: np.ndarray, base: ImageSet, f: Path, layout: str) -> tuple[np.ndarray, str]:
    """(x as NHWC, the layout it had); a 3-d array is (N, H, W) for a grey base set."""
    h, w, c = base.images.shape[1:]
    if x.ndim == 3 and c == 1:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f, f"images of shape {x.shape}, expected 4-d (N, H, W, C) or (N, C, H, W)")
    fits = {"NHWC": x.shape[1:] == (h, w, c), "NCHW": x.shape[1:] == (c, h, w)}
    if layout == "auto":
        ok = [k for k, v in fits.items() if v]
        if len(ok) == 2:
            raise DataError(f, f"images of shape {x.shape} fit both NHWC and NCHW; pass --layout")
        if not ok:
            raise DataError(f, f"images of shape {x.shape} fit neither NHWC {(h, w, c)} nor NCHW "
                               f"{(c, h, w)} of the base set")
        layout = ok[0]
    if layout not in fits:
        raise UnlearnableError(f"--layout must be NHWC or NCHW, got {layout!r}")
    if not fits[layout]:
        raise DataError(f, f"images of shape {x.shape} are not {layout} for the base set's (H, W, C) = {(h, w, c)}")
    return (x if layout == "NHWC" else x.transpose(0, 2, 3, 1)), layout


def _scale(x: np.ndarray, f: Path, scale: str) -> int:
    if scale in {"1", "255"}:
        return int(scale)
    if scale != "auto":
        raise UnlearnableError(f"--scale must be 1 or 255, got {scale!r}")
    if x.dtype == np.uint8:
        return 255
    if np.issubdtype(x.dtype, np.integer):
        return 255
    hi = max((float(x[sl].max()) for sl in chunks(len(x))), default=0.0)
    if hi <= 1:
        return 1
    raise DataError(f, f"float pixels reach {hi:g}: in [0, 255] or out of range? pass --scale 255 or --scale 1")


@register_importer(
    "npz", NPZParams, lambda p: p.suffix == ".npz" if p.is_file() else
    (p.is_dir() and next(p.glob("*.npz"), None) is not None),
    "plain arrays: images, labels (optional), indices (optional) into the base set",
    "any tool that saves numpy arrays")
def import_npz(path: Path, base: ImageSet, p: NPZParams, progress: bool) -> Imported:
    """One .npz with `images` (NHWC or NCHW; uint8, integer or float) and optional `labels` and
    `indices` into the base set (default: the first N base images); other members are never read."""
    f = find_one(path, ("*.npz",), ".npz")
    # Only these members are read; any other is never inflated.
    z, members = read_npz(f, ("images", "labels", "indices"), array_limit(base))
    if "images" not in z:
        raise DataError(f, f"no 'images' array (has: {', '.join(map(repr, members[:10])) or 'nothing'})")
    if p.quantize not in {"round", "truncate"}:
        raise UnlearnableError(f"quantize must be round or truncate, got {p.quantize!r}")
    x = z["images"]
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f, f"images must be numbers, got {describe(x)}")
    x, layout = _layout(x, base, f, p.layout)
    check_finite(x, f)
    scale = _scale(x, f, p.scale)
    images, clipped = _to_uint8(x, scale, f, p.clip, p.quantize)
    n = len(images)
    if "indices" in z:
        idx = z["indices"]
        if idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer):
            raise DataError(f, f"'indices' must be {n} integers, got {describe(idx)}")
    else:
        if n > len(base):
            raise DataError(f, f"{n} images but the base set has {len(base)} (and no 'indices')")
        idx = np.arange(n)
    labels = _labels_from(z["labels"], f, n, base.num_classes) if "labels" in z else None
    return Imported(images, idx.astype(np.int64), [f], labels, f, details={
        "layout": layout, "scale": scale, "values_clipped": clipped,
        "quantization": "none (uint8)" if z["images"].dtype == np.uint8 else p.quantize,
    })
