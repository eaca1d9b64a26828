"""Readers of the standard on-disk formats of clean datasets (IDX, CIFAR batches, SVHN .mat,
image folders, scikit-learn's digits); `sources.py` registers which dataset each one reads.

Each reader takes the directory that holds a dataset's files and a split ("train" or "test")
and returns an `ImageSet`. None of them executes code from a file: IDX and .mat are parsed as
data, the CIFAR pickles go through `restricted_load`.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from ..core.errors import DataError, one_line
from ..core.safe import (
    DEFAULT_MAX_BYTES,
    check_bytes,
    decode_image,
    header_channels,
    open_regular,
    readinto_exact,
)
from .imageset import ImageSet
from .unpickle import restricted_load_file

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
DIGIT_CLASSES = [str(i) for i in range(10)]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Parse an IDX file (gzipped or not) into an array, checking its header against its size.

    A gzipped file is streamed: its magic number and dimensions are checked before the body is
    inflated, and the body is read only up to the size they declare (at most `max_bytes`).
    """
    path = Path(path)
    with open_regular(path) as f:
        gz = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") if gz else contextlib.nullcontext(f) as stream:
                return _read_idx_stream(stream, path, None if gz else size, max_bytes)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(path, f"truncated or corrupted gzip ({one_line(e)})") from None


def _read_idx_stream(stream: IO[bytes], path: Path, size: int | None, max_bytes: int) -> np.ndarray:
    """The IDX array in `stream`; `size` is the file's length when it is not compressed."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise DataError(path, "not an IDX file (bad magic number)")
    ndim = magic[3]
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(path, "truncated IDX header")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = np.dtype(_IDX_DTYPES[magic[2]])
    need = math.prod(shape) * dtype.itemsize
    if size is not None and size - 4 - 4 * ndim != need:
        raise DataError(path, f"IDX header says shape {shape} ({need} bytes) but the file holds "
                              f"{size - 4 - 4 * ndim}")
    check_bytes(path, need, max_bytes, f"the IDX array of shape {shape}")
    body = np.empty(need, np.uint8)
    try:
        readinto_exact(stream, body, path, "the IDX header")
    except DataError:
        raise DataError(path, f"IDX header says shape {shape} ({need} bytes) but the file holds less") from None
    if stream.read(1):
        raise DataError(path, f"IDX header says shape {shape} ({need} bytes) but the file holds more")
    return body.view(dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _find(root: Path, stems: list[str]) -> Path:
    for stem in stems:
        for cand in (root / stem, root / f"{stem}.gz"):
            if cand.is_file():
                return cand
    raise DataError(root / stems[0], "file not found (looked for it gzipped and not)")


def load_idx_pair(root: Path, split: str, classes: list[str], name: str) -> ImageSet:
    """MNIST-style IDX image and label files (train-* or t10k-*), gzipped or not, under `root`."""
    prefix = "train" if split == "train" else "t10k"
    img_f = _find(root, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    lab_f = _find(root, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    images, labels = read_idx(img_f), read_idx(lab_f)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(img_f, f"expected uint8 (N, H, W) images, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(lab_f, f"expected uint8 (N,) labels, got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise DataError(lab_f, f"{len(labels)} labels for {len(images)} images in {img_f.name}")
    _check_range(lab_f, labels, len(classes))
    return ImageSet(images[..., None], labels.astype(np.int64), classes, name)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 python batches

def _cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int64 labels) of one python batch: rows are 1024 red, 1024 green,
    1024 blue bytes, each channel row-major."""
    d = restricted_load_file(path)
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        raise DataError(path, f"not a CIFAR batch (needs keys b'data' and {label_key!r})")
    data, labels = d[b"data"], np.asarray(d[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(path, f"b'data' must be uint8 (N, 3072), got {what}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(path, f"{label_key!r} must be {len(data)} integers, got {labels.dtype} {labels.shape}")
    _check_range(path, labels, num_classes)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def _cifar_names(path: Path, key: bytes, fallback: list[str]) -> list[str]:
    """Class names from a meta pickle; `fallback` (the published names) when the file is absent."""
    if not path.is_file():
        return fallback
    meta = restricted_load_file(path)
    names = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != len(fallback) or \
            not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(path, f"expected a list of {len(fallback)} names under {key!r}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def load_cifar10(root: Path, split: str) -> ImageSet:
    """CIFAR-10's python batches under `root` (data_batch_1..5 or test_batch)."""
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_cifar_batch(root / f, b"labels", 10) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    classes = _cifar_names(root / "batches.meta", b"label_names", CIFAR10_CLASSES)
    return ImageSet(np.ascontiguousarray(images), labels, classes, "cifar10")


def load_cifar100(root: Path, split: str) -> ImageSet:
    """CIFAR-100's python batches under `root` (train or test), with the fine labels."""
    f = root / ("train" if split == "train" else "test")
    images, labels = _cifar_batch(f, b"fine_labels", 100)
    classes = _cifar_names(root / "meta", b"fine_label_names", [f"class_{i}" for i in range(100)])
    return ImageSet(np.ascontiguousarray(images), labels, classes, "cifar100")


def _check_range(path: Path, labels: np.ndarray, k: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise DataError(path, f"labels out of range [0, {k}): min {labels.min()}, max {labels.max()}")


# ---------------------------------------------------------------------------------------------
# SVHN (.mat, cropped digits)

_MAT_COMPRESSED = 15  # miCOMPRESSED: a zlib-compressed variable of a MAT v5 file


def _mat_inflated_sizes(f: IO[bytes], path: Path, limits: list[int]) -> None:
    """Refuse a compressed variable of a MAT v5 file that inflates past its limit (`limits[i]` for
    the i-th variable), counting its output without keeping it."""
    head = f.read(128)
    order = {b"IM": "<", b"MI": ">"}.get(head[126:128])
    if not head.startswith(b"MATLAB 5.0") or order is None:
        return  # v4 files are not compressed; scipy refuses the rest
    for limit in limits:
        tag = f.read(8)
        if len(tag) < 8:
            return
        mdtype, nbytes = struct.unpack(order + "II", tag)
        if mdtype >> 16:  # a small data element, its data inside the tag
            continue
        if mdtype != _MAT_COMPRESSED:
            f.seek(nbytes, os.SEEK_CUR)
            continue
        z, out = zlib.decompressobj(), 0
        while nbytes > 0 and (chunk := f.read(min(nbytes, 1 << 20))):
            nbytes -= len(chunk)
            while chunk and out <= limit:
                out += len(z.decompress(chunk, 1 << 24))
                chunk = z.unconsumed_tail
            check_bytes(path, out, limit, "a compressed variable")


def load_svhn(root: Path, split: str, max_bytes: int = DEFAULT_MAX_BYTES) -> ImageSet:
    """SVHN's cropped digits (.mat) under `root`, every compressed variable's size checked before it
    inflates."""
    import scipy.io  # 0.4 s to import: only when SVHN is read

    f = root / f"{split}_32x32.mat"
    try:
        with open_regular(f) as fh:
            found = scipy.io.whosmat(fh)
            names = {name: (shape, cls) for name, shape, cls in found}
            if "X" not in names or "y" not in names:
                raise DataError(f, "expected variables 'X' and 'y'")
            (xs, xc), (ys, _) = names["X"], names["y"]
            if len(xs) != 4 or xs[:3] != (32, 32, 3) or xc != "uint8":
                raise DataError(f, f"'X' must be uint8 (32, 32, 3, N), got {xc} {xs}")
            check_bytes(f, math.prod(xs), max_bytes, f"'X' of shape {xs}")
            if math.prod(ys) != xs[3]:
                raise DataError(f, f"{math.prod(ys)} labels for {xs[3]} images")
            # Each variable may inflate to its declared size (16 bytes an element at most) plus
            # its header; what would inflate further is refused before scipy inflates it.
            fh.seek(0)
            _mat_inflated_sizes(fh, f, [16 * math.prod(shape) + (1 << 16) for _, shape, _ in found])
            fh.seek(0)
            mat = scipy.io.loadmat(fh, variable_names=["X", "y"])
    except DataError:
        raise
    except Exception as e:  # scipy raises a zoo of types for a broken file
        raise DataError(f, f"not a readable .mat file ({type(e).__name__}: {one_line(e)})") from None
    x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f, f"'X' must be uint8 (32, 32, 3, N), got {x.dtype} {x.shape}")
    if len(y) != x.shape[3]:
        raise DataError(f, f"{len(y)} labels for {x.shape[3]} images")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(f, f"'y' must hold labels 1..10 (10 is the digit 0), got min {y.min()}, max {y.max()}")
    y[y == 10] = 0  # SVHN stores the digit 0 as label 10
    return ImageSet(np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y, DIGIT_CLASSES, "svhn")


# ---------------------------------------------------------------------------------------------
# ImageFolder: ROOT/{train,test}/CLASS/*.png|jpg

_FOLDER_FORMATS = ("PNG", "JPEG", "BMP")


def _is_colour(a: np.ndarray) -> bool:
    """Whether a decoded (H, W, C) image carries colour: three channels that are not all equal."""
    return a.shape[2] == 3 and bool((a[..., 0] != a[..., 1]).any() or (a[..., 0] != a[..., 2]).any())


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


def load_image_folder(root: Path, split: str, max_bytes: int = DEFAULT_MAX_BYTES) -> ImageSet:
    """ROOT/train/CLASS/*.png (and ROOT/test/CLASS/...), or a flat ROOT/CLASS/*.png training set.

    Classes are the sorted folder names of the training split, so a test folder that lacks a
    class still gets the same label numbers; all images must share one size. Each image is
    read as the PNG, JPEG or BMP its content says it is (whatever its name), its size checked
    from its header before it is decoded, by the one rule of `core.safe.decode_image` (8-bit
    only, opaque only, palettes expanded). The split is colour (3 channels) when any of its
    images carries colour, and then its grey images are repeated on three channels; otherwise
    it is grey (1 channel). A colour image is never made grey, whichever image comes first.
    The images together may take at most `max_bytes`.
    """
    root = Path(root)
    split_layout = (root / "train").is_dir()
    train_dir = root / "train" if split_layout else root
    d = root / split if split_layout else root
    if split != "train" and not split_layout:
        raise DataError(root / split, "no such split (expected ROOT/train/CLASS/ and ROOT/test/CLASS/)")
    if not d.is_dir():
        raise DataError(d, "no such split folder")
    classes = [c.name for c in _class_dirs(train_dir)]
    if not classes:
        raise DataError(train_dir, "no class folders (expected ROOT/[train|test]/CLASS/*.png)")
    index = {c: k for k, c in enumerate(classes)}
    images: list[np.ndarray] = []
    labels: list[int] = []
    size: tuple[int, ...] | None = None
    # The most channels an image so far may decode to: every image is counted at it, so the
    # bound holds for the images held and for the array they become, whatever comes later.
    channels = 1
    colour = False

    def same_size(wh: tuple[int, int], im_mode: str) -> None:
        shape = (wh[1], wh[0])
        if size is not None and shape != size:
            raise DataError(f, f"image of shape {shape}, the others are {size}")
        c = max(channels, header_channels(im_mode))
        check_bytes(f, (len(images) + 1) * math.prod(shape) * c, max_bytes, "the images together")

    for cdir in _class_dirs(d):
        if cdir.name not in index:
            raise DataError(cdir, f"class folder not in the training split's classes {classes}")
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            arr = decode_image(f, _FOLDER_FORMATS, check=same_size)
            size = size or arr.shape[:2]
            channels = max(channels, arr.shape[2])
            colour = colour or _is_colour(arr)
            images.append(arr)
            labels.append(index[cdir.name])
    if not images:
        raise DataError(d, "no images found (.png, .jpg, .jpeg, .bmp)")
    c = 3 if colour else 1
    out = np.empty((len(images), *size, c), np.uint8)
    for i, arr in enumerate(images):
        out[i] = arr[..., :c]  # a grey image broadcasts onto three channels; an equal-channel one gives one
    # No "dataset" in the source: a folder named like a registered dataset does not take its facts.
    return ImageSet(out, np.asarray(labels, np.int64), classes, root.name,
                    meta={"source": {"imagefolder": str(root), "split": split}})


# ---------------------------------------------------------------------------------------------
# scikit-learn digits: 1,797 8x8 images shipped inside scikit-learn (the embedded tiny set)

def load_digits(root: Path | None, split: str) -> ImageSet:
    """scikit-learn's 8x8 digits, as grey levels 0-255: every fifth image is a test image."""
    from sklearn.datasets import load_digits as _sk_digits  # 2 s to import: only when digits are read

    d = _sk_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.int64)
    # A fixed split: every fifth image is a test image (360 test, 1,437 train).
    test = np.arange(len(labels)) % 5 == 0
    keep = test if split == "test" else ~test
    return ImageSet(images[keep][..., None], labels[keep], DIGIT_CLASSES, "digits")
