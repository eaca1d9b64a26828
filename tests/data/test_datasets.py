"""The clean-dataset readers, on small files written here in each dataset's real on-disk format,
loaded through the public path (`load_data(name, split, data_root=...)`), plus the resolver's
search order, offline downloads (file:// URLs) and the `unlearnable datasets` command."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from unlearnable import DataError, ImageSet, UnlearnableError, load_data
from unlearnable.cli import main
from unlearnable.core.process import host_tag
from unlearnable.data import DATASETS, DataFacts, download, facts_for, read_idx, save_dataset
from unlearnable.data.facts import UNKNOWN
from unlearnable.data.resolve import locate
from unlearnable.data.readers import CIFAR10_CLASSES, FASHION_CLASSES
from unlearnable.data.sources import Download

from helpers import write_png


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No $UNLEARNABLE_DATA and an empty user cache, so only what a test writes is found."""
    monkeypatch.delenv("UNLEARNABLE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _patch_source(monkeypatch, name: str, **changes) -> None:
    src = dataclasses.replace(DATASETS[name], **changes)
    for key, value in list(DATASETS.items()):
        if value is DATASETS[name] and key != name:
            monkeypatch.setitem(DATASETS, key, src)
    monkeypatch.setitem(DATASETS, name, src)


# ---------------------------------------------------------------------------------------------
# Writers of each real format. Each returns {split: (images NHWC uint8, labels int64)} as written.

def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file: magic 0x0000 08 ndim (unsigned byte), big-endian uint32 dims, then the data."""
    assert a.dtype == np.uint8
    return struct.pack(">I", 0x0800 | a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx_dataset(d: Path, rng: np.random.Generator, gz: bool = True, n=(12, 5), size: int = 28):
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, count in (("train", "train", n[0]), ("test", "t10k", n[1])):
        x = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
        y = rng.integers(0, 10, count).astype(np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            raw = idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (d / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (d / name).write_bytes(raw)
        out[split] = (x[..., None], y.astype(np.int64))
    return out


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 `str` (BINSTRING), as the CIFAR batches were written;
    read back with encoding='bytes' they come out as bytes, exactly like the real files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1 (which wrote the real files) names its reconstructor numpy.core.multiarray.
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_rows(images_nhwc: np.ndarray) -> np.ndarray:
    """The CIFAR row layout: 1024 red bytes, then 1024 green, then 1024 blue (each row-major)."""
    return images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), 3072).copy()


def write_cifar10(d: Path, rng: np.random.Generator, per_batch: int = 4, names=None):
    d.mkdir(parents=True, exist_ok=True)
    out = {"train": ([], [])}
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch)
        (d / f).write_bytes(py2_pickle({b"batch_label": b"batch " + f.encode(), b"labels": [int(v) for v in y],
                                        b"data": cifar_rows(x),
                                        b"filenames": [b"img_%d.png" % i for i in range(per_batch)]}))
        if f == "test_batch":
            out["test"] = (x, y.astype(np.int64))
        else:
            out["train"][0].append(x)
            out["train"][1].append(y)
    out["train"] = (np.concatenate(out["train"][0]), np.concatenate(out["train"][1]).astype(np.int64))
    names = names or [f"name{k}" for k in range(10)]
    (d / "batches.meta").write_bytes(py2_pickle({b"label_names": [n.encode() for n in names],
                                                 b"num_cases_per_batch": per_batch, b"num_vis": 3072}))
    return out


def write_cifar100(d: Path, rng: np.random.Generator, n=(10, 6)):
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, count in (("train", n[0]), ("test", n[1])):
        x = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, count)
        (d / split).write_bytes(py2_pickle({b"filenames": [b"f"] * count, b"batch_label": b"b",
                                            b"fine_labels": [int(v) for v in fine],
                                            b"coarse_labels": [int(v) // 5 for v in fine],
                                            b"data": cifar_rows(x)}))
        out[split] = (x, fine.astype(np.int64))
    (d / "meta").write_bytes(py2_pickle({b"fine_label_names": [b"fine%d" % k for k in range(100)],
                                         b"coarse_label_names": [b"coarse%d" % k for k in range(20)]}))
    return out


def write_svhn(d: Path, rng: np.random.Generator, n=(7, 4)):
    import scipy.io

    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, count in (("train", n[0]), ("test", n[1])):
        x = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)
        y = (np.arange(count) % 10 + 1).astype(np.uint8)  # 1..10, 10 meaning the digit 0
        scipy.io.savemat(d / f"{split}_32x32.mat", {"X": x, "y": y[:, None]})
        out[split] = (x.transpose(3, 0, 1, 2), (y % 10).astype(np.int64))
    return out


# name -> (folder under the data root, writer). A registered dataset without an entry here fails
# `test_every_registered_dataset_has_a_format_test`.
WRITERS = {
    "fashion-mnist": ("fashion-mnist", write_idx_dataset),
    "mnist": ("MNIST/raw", lambda d, rng: write_idx_dataset(d, rng, gz=False)),
    "cifar10": ("cifar-10-batches-py", write_cifar10),
    "cifar100": ("cifar-100-python", write_cifar100),
    "svhn": ("svhn", write_svhn),
}


def test_every_registered_dataset_has_a_format_test():
    names = {s.name for s in DATASETS.values() if not s.embedded}
    assert names <= set(WRITERS), f"write a small real-format writer for {names - set(WRITERS)}"


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_reader_keeps_pixels_and_labels_exactly(name, tmp_path):
    sub, writer = WRITERS[name]
    written = writer(tmp_path / sub, np.random.default_rng(1))
    for split in ("train", "test"):
        ds = load_data(name, split, data_root=tmp_path)
        x, y = written[split]
        assert ds.images.dtype == np.uint8 and ds.images.shape == x.shape
        assert np.array_equal(ds.images, x)
        assert np.array_equal(ds.labels, y) and ds.labels.dtype == np.int64
        assert ds.name == name
        assert ds.meta["source"] == {"dataset": name, "split": split, "path": str(tmp_path / sub)}
        assert ds.num_classes == DATASETS[name].num_classes
        assert ds.chw == DATASETS[name].shape_chw[:1] + x.shape[1:3]


# ---------------------------------------------------------------------------------------------
# IDX

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["", "fashion-mnist", "FashionMNIST/raw"])
def test_idx_gzipped_or_not_in_each_usual_folder(tmp_path, gz, layout):
    written = write_idx_dataset(tmp_path / layout, np.random.default_rng(2), gz=gz)
    ds = load_data("fashion-mnist", "test", data_root=tmp_path)
    assert np.array_equal(ds.images, written["test"][0]) and ds.classes == FASHION_CLASSES
    assert ds.image_size == (28, 28) and ds.channels == 1


def test_idx_header_is_big_endian_and_read_exactly(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    f = tmp_path / "x-idx3-ubyte"
    f.write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04" + a.tobytes())
    assert np.array_equal(read_idx(f), a)


def test_truncated_idx_is_refused_naming_the_file(tmp_path):
    write_idx_dataset(tmp_path, np.random.default_rng(0))
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-40])  # a cut-off download
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated or corrupted gzip"):
        load_data("fashion-mnist", "train", data_root=tmp_path)
    plain = tmp_path / "plain-idx3-ubyte"
    plain.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5])
    with pytest.raises(DataError, match=r"plain-idx3-ubyte: IDX header says shape \(3, 4, 4\)"):
        read_idx(plain)
    header_only = tmp_path / "short-idx3-ubyte"
    header_only.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="short-idx3-ubyte: truncated IDX header"):
        read_idx(header_only)


def test_idx_header_disagreeing_with_its_size_or_its_pair_is_refused(tmp_path):
    write_idx_dataset(tmp_path, np.random.default_rng(0), gz=False)
    f = tmp_path / "t10k-labels-idx1-ubyte"
    raw = bytearray(f.read_bytes())
    raw[4:8] = struct.pack(">I", 6)  # header says 6 labels, the file holds 5
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: IDX header says shape \(6,\)"):
        load_data("fashion-mnist", "test", data_root=tmp_path)
    f.write_bytes(idx_bytes(np.zeros(4, np.uint8)))  # a consistent file, but 4 labels for 5 images
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: 4 labels for 5 images"):
        load_data("fashion-mnist", "test", data_root=tmp_path)
    f.write_bytes(b"\x00\x00\x07\x01" + b"\x00" * 9)  # no such IDX type
    with pytest.raises(DataError, match="bad magic"):
        load_data("fashion-mnist", "test", data_root=tmp_path)


def test_idx_labels_out_of_range_and_missing_files(tmp_path):
    write_idx_dataset(tmp_path, np.random.default_rng(0))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 10, 2, 3], np.uint8))))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: labels out of range \[0, 10\)"):
        load_data("fashion-mnist", "test", data_root=tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: file not found"):
        load_data("fashion-mnist", "train", data_root=tmp_path)


# ---------------------------------------------------------------------------------------------
# CIFAR python batches

def test_cifar10_row_layout_is_channel_major_and_names_come_from_meta(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "lorry"]
    write_cifar10(d, np.random.default_rng(3), names=names)
    row = np.arange(3072, dtype=np.int64) % 251
    rows = np.stack([row, row[::-1]]).astype(np.uint8)
    (d / "test_batch").write_bytes(py2_pickle({b"labels": [9, 0], b"data": rows}))
    ds = load_data("cifar10", "test", data_root=tmp_path)
    assert ds.classes == names
    assert np.array_equal(ds.images[0, :, :, 0], rows[0, :1024].reshape(32, 32))  # red
    assert np.array_equal(ds.images[0, :, :, 1], rows[0, 1024:2048].reshape(32, 32))  # green
    assert np.array_equal(ds.images[1, :, :, 2], rows[1, 2048:].reshape(32, 32))  # blue
    assert ds.images[0, 0, 1, 0] == rows[0, 1]  # within a channel, row-major
    assert ds.labels.tolist() == [9, 0] and len(load_data("cifar10", "train", data_root=tmp_path)) == 20
    (d / "batches.meta").unlink()  # without meta: the published names
    assert load_data("cifar10", "test", data_root=tmp_path).classes == CIFAR10_CLASSES


def test_cifar100_uses_fine_labels_and_fine_names(tmp_path):
    written = write_cifar100(tmp_path / "cifar-100-python", np.random.default_rng(4))
    ds = load_data("cifar100", "train", data_root=tmp_path)
    assert ds.num_classes == 100 and ds.classes[7] == "fine7"
    assert np.array_equal(ds.labels, written["train"][1])


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_batch_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d, np.random.default_rng(0))
    marker = tmp_path / "pwned"
    evil = {b"labels": [0], b"data": np.zeros((1, 3072), np.uint8), b"x": _RunsCode(marker)}
    (d / "data_batch_2").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_2: unsafe or invalid pickle: refused to load global .*system"):
        load_data("cifar10", "train", data_root=tmp_path)
    assert not marker.exists()
    # The meta file is a pickle too.
    (d / "data_batch_2").write_bytes(py2_pickle({b"labels": [0], b"data": np.zeros((1, 3072), np.uint8)}))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": _RunsCode(marker)}, protocol=2))
    with pytest.raises(DataError, match="batches.meta: unsafe or invalid pickle"):
        load_data("cifar10", "test", data_root=tmp_path)
    assert not marker.exists()


def test_bad_cifar_batches_name_the_file(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d, np.random.default_rng(0))
    good = (d / "data_batch_3").read_bytes()
    (d / "data_batch_3").write_bytes(py2_pickle({b"labels": [0, 1], b"data": np.zeros((2, 3000), np.uint8)}))
    with pytest.raises(DataError, match=r"data_batch_3: b'data' must be uint8 \(N, 3072\), got uint8 \(2, 3000\)"):
        load_data("cifar10", "train", data_root=tmp_path)
    (d / "data_batch_3").write_bytes(py2_pickle({b"labels": [0, 10], b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataError, match=r"data_batch_3: labels out of range \[0, 10\): min 0, max 10"):
        load_data("cifar10", "train", data_root=tmp_path)
    (d / "data_batch_3").write_bytes(py2_pickle({b"labels": [0], b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataError, match="data_batch_3: b'labels' must be 2 integers"):
        load_data("cifar10", "train", data_root=tmp_path)
    (d / "data_batch_3").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="data_batch_3: truncated or corrupted pickle"):
        load_data("cifar10", "train", data_root=tmp_path)
    (d / "data_batch_3").write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR batch"):
        load_data("cifar10", "train", data_root=tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: file not found"):
        load_data("cifar10", "train", data_root=tmp_path)


# ---------------------------------------------------------------------------------------------
# SVHN

def test_svhn_label_10_is_the_digit_0_and_bad_mats_are_refused(tmp_path):
    import scipy.io

    d = tmp_path / "svhn"
    write_svhn(d, np.random.default_rng(5))
    ds = load_data("svhn", "train", data_root=tmp_path)
    assert ds.labels.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert load_data("svhn", "test", data_root=tmp_path).labels.tolist() == [1, 2, 3, 4]
    x = np.zeros((32, 32, 3, 2), np.uint8)
    scipy.io.savemat(d / "test_32x32.mat", {"X": x, "y": np.array([[10], [3]], np.uint8)})
    assert load_data("svhn", "test", data_root=tmp_path).labels.tolist() == [0, 3]
    scipy.io.savemat(d / "test_32x32.mat", {"images": x, "y": np.array([[1], [2]], np.uint8)})
    with pytest.raises(DataError, match=r"test_32x32\.mat: expected variables 'X' and 'y'"):
        load_data("svhn", "test", data_root=tmp_path)
    scipy.io.savemat(d / "test_32x32.mat", {"X": x, "y": np.array([[0], [11]], np.uint8)})
    with pytest.raises(DataError, match=r"test_32x32\.mat: 'y' must hold labels 1\.\.10"):
        load_data("svhn", "test", data_root=tmp_path)
    scipy.io.savemat(d / "test_32x32.mat", {"X": np.zeros((3, 32, 32, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match=r"test_32x32\.mat: 'X' must be uint8 \(32, 32, 3, N\)"):
        load_data("svhn", "test", data_root=tmp_path)
    (d / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but cut off")
    with pytest.raises(DataError, match=r"test_32x32\.mat: not a readable \.mat file"):
        load_data("svhn", "test", data_root=tmp_path)


# ---------------------------------------------------------------------------------------------
# ImageFolder

def test_image_folder_of_png_and_jpeg(tmp_path):
    rng = np.random.default_rng(6)
    root = tmp_path / "folder"
    cat = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    for i, a in enumerate(cat):
        write_png(root / "train" / "cat" / f"{i}.png", a)
    smooth = np.broadcast_to(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], (16, 16, 3)).copy()
    write_png(root / "train" / "dog" / "0.jpeg", smooth, "JPEG")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    write_png(root / "test" / "dog" / "0.png", cat[0])  # the test split lacks "cat": labels still match
    for spec in (f"imagefolder:{root}", str(root)):
        ds = load_data(spec, "train")
        assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1]
        assert ds.images.shape == (3, 16, 16, 3) and np.array_equal(ds.images[:2], cat)
        assert np.abs(ds.images[2].astype(int) - smooth).max() <= 8  # JPEG is lossy, but close
    test = load_data(f"imagefolder:{root}", "test")
    assert test.classes == ["cat", "dog"] and test.labels.tolist() == [1]


def test_grey_png_folder_and_bad_folders(tmp_path):
    root = tmp_path / "grey"
    write_png(root / "train" / "a" / "0.png", np.full((8, 8), 7, np.uint8))
    write_png(root / "train" / "b" / "0.png", np.full((8, 8), 9, np.uint8))
    ds = load_data(f"imagefolder:{root}", "train")
    assert ds.chw == (1, 8, 8) and ds.images[:, 0, 0, 0].tolist() == [7, 9]
    with pytest.raises(DataError, match="grey/test: no such split folder"):
        load_data(f"imagefolder:{root}", "test")
    write_png(root / "train" / "b" / "1.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match=r"b/1\.png: image of shape \(9, 8\), the others are \(8, 8\)"):
        load_data(f"imagefolder:{root}", "train")
    (root / "train" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"b/1\.png: unreadable image"):
        load_data(f"imagefolder:{root}", "train")
    (root / "train" / "b" / "1.png").unlink()
    write_png(root / "test" / "zebra" / "0.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="zebra: class folder not in the training split"):
        load_data(f"imagefolder:{root}", "test")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        load_data(f"imagefolder:{tmp_path / 'empty'}", "train")


# ---------------------------------------------------------------------------------------------
# digits, the embedded set

def test_digits_is_the_fixed_embedded_split(digits_train, digits_test):
    assert (len(digits_train), len(digits_test)) == (1437, 360)
    assert digits_train.chw == (1, 8, 8) and digits_train.images.max() == 255
    assert sorted(set(digits_test.labels.tolist())) == list(range(10))
    assert np.array_equal(load_data("digits", "train").images, digits_train.images)  # deterministic


# ---------------------------------------------------------------------------------------------
# Facts: what training may do to each dataset's images

# (flip keeps the label, crop padding of the registered image size); a new dataset must be added.
FACTS = {"fashion-mnist": (True, 4), "cifar10": (True, 4), "cifar100": (True, 4),
         "mnist": (False, 4), "svhn": (False, 4), "digits": (False, 0)}


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_every_registered_dataset_states_its_facts(key):
    src = DATASETS[key]
    assert isinstance(src.facts, DataFacts)
    assert src.name in FACTS, f"decide {src.name}'s facts (flip, crop) and add them to FACTS"
    assert (src.facts.hflip, src.facts.crop_padding(src.shape_chw[2])) == FACTS[src.name]


def test_crop_padding_is_the_papers_eighth_of_the_side():
    assert [DataFacts().crop_padding(s) for s in (32, 28, 16, 8, 3)] == [4, 4, 2, 1, 1]
    assert DataFacts(crop=False).crop_padding(32) == 0


def test_loaded_sets_carry_their_datasets_facts(tmp_path, digits_train):
    write_idx_dataset(tmp_path / "mnist", np.random.default_rng(0))
    assert facts_for(load_data("mnist", "train", data_root=tmp_path)) == DATASETS["mnist"].facts
    assert facts_for(digits_train) == DATASETS["digits"].facts
    assert facts_for(digits_train.subset([0, 1])) == DATASETS["digits"].facts
    assert facts_for(ImageSet(digits_train.images, digits_train.labels, digits_train.classes)) == UNKNOWN
    assert facts_for(digits_train.replace(digits_train.images, name="FMNIST", meta={})) == \
        DATASETS["fashion-mnist"].facts  # an alias names its dataset
    # An image folder is unknown data, whatever its directory is called.
    write_png(tmp_path / "folders" / "mnist" / "train" / "a" / "0.png", np.zeros((8, 8), np.uint8))
    folder = load_data(str(tmp_path / "folders" / "mnist"), "train")
    assert folder.name == "mnist" and facts_for(folder) == UNKNOWN


def test_a_protected_set_has_its_base_datasets_facts(tmp_path, digits_train):
    changed = digits_train.images.copy()
    changed[:, 0, 0] ^= 1
    protected = digits_train.replace(changed, name="lsp-run", meta={})
    for base, want in (("digits", DATASETS["digits"].facts), ("cifar-10", DATASETS["cifar10"].facts),
                       (f"imagefolder:{tmp_path}", UNKNOWN)):
        out = save_dataset(tmp_path / f"p-{len(base)}", protected, {"base": {"name": base}})
        loaded = load_data(str(out), "train")
        # A path is recorded relative to the set itself (data/refs.py): tmp_path is its parent.
        assert loaded.meta["manifest"]["base"]["name"] == base.replace(str(tmp_path), "..")
        assert loaded.name == "lsp-run"
        assert facts_for(loaded) == want


# ---------------------------------------------------------------------------------------------
# The resolver

def test_search_order_data_root_then_env_then_system_then_cache(tmp_path, monkeypatch):
    places = {k: tmp_path / k for k in ("arg", "env", "system", "xdg-cache/unlearnable/data")}
    for i, (k, d) in enumerate(places.items()):
        write_idx_dataset(d / "mnist", np.random.default_rng(10 + i))
    _patch_source(monkeypatch, "mnist", system_dirs=(str(places["system"] / "mnist"),))
    monkeypatch.setenv("UNLEARNABLE_DATA", os.pathsep.join([str(tmp_path / "nothing"), str(places["env"])]))

    def found() -> str:
        return load_data("mnist", "test", data_root=arg).meta["source"]["path"]

    arg = places["arg"]
    assert found() == str(places["arg"] / "mnist")
    arg = None
    assert found() == str(places["env"] / "mnist")
    monkeypatch.delenv("UNLEARNABLE_DATA")
    assert found() == str(places["system"] / "mnist")
    _patch_source(monkeypatch, "mnist", system_dirs=())
    assert found() == str(places["xdg-cache/unlearnable/data"] / "mnist")


def test_not_found_says_where_it_looked_and_what_to_install(tmp_path, monkeypatch):
    _patch_source(monkeypatch, "fashion-mnist", system_dirs=(str(tmp_path / "usr-share"),))
    with pytest.raises(UnlearnableError) as e:
        load_data("fashion-mnist", "train", data_root=tmp_path / "mine")
    msg = str(e.value)
    assert "'fashion-mnist' not found" in msg and str(tmp_path / "mine") in msg and "usr-share" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--download fashion-mnist" in msg
    with pytest.raises(UnlearnableError, match="unknown dataset 'imagenet'.*cifar10"):
        load_data("imagenet")
    with pytest.raises(DataError, match="no such directory"):
        load_data(str(tmp_path / "missing") + os.sep)


def test_a_folder_named_like_a_dataset_does_not_shadow_the_name(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "root" / "mnist", np.random.default_rng(0))
    (tmp_path / "cwd" / "mnist").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert len(load_data("mnist", "train", data_root=tmp_path / "root")) == 12


# ---------------------------------------------------------------------------------------------
# Downloads, offline: file:// URLs to files written here

@pytest.mark.parametrize("name", sorted({s.name for s in DATASETS.values() if s.downloads}))
def test_registered_downloads_are_official_urls_with_sha256(name):
    for dl in DATASETS[name].downloads:
        assert len(dl.sha256) == 64 and int(dl.sha256, 16) >= 0
        assert not dl.md5 or len(dl.md5) == 32
        for url in (dl.url, *dl.mirrors):
            assert url.startswith(("https://", "http://")) and url.rsplit("/", 1)[1] == dl.filename


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _served_mnist(tmp_path, monkeypatch, corrupt: str | None = None, **kw) -> Path:
    """Write the four MNIST .gz files under tmp/served and point the mnist downloads at them."""
    served = tmp_path / "served"
    write_idx_dataset(served, np.random.default_rng(7))
    dls = []
    for f in sorted(served.iterdir()):
        sha = _sha(f)
        if f.name == corrupt:
            sha = "0" * 64
        dls.append(Download(f.as_uri(), sha, f.name, **kw))
    _patch_source(monkeypatch, "mnist", downloads=tuple(dls), system_dirs=())
    return served


def test_download_verifies_and_the_result_loads(tmp_path, monkeypatch):
    _served_mnist(tmp_path, monkeypatch)
    root = tmp_path / "data"
    where = download("mnist", root, progress=False)
    assert where == root / "mnist" and sorted(p.name for p in root.iterdir()) == ["mnist"]
    ds = load_data("mnist", "train", data_root=root)
    assert len(ds) == 12 and ds.meta["source"]["path"] == str(root / "mnist")
    assert download("mnist", root, progress=False) == where  # already there and verified: no fetch


def test_a_killed_downloads_staging_folder_goes_with_the_next_download(tmp_path, monkeypatch):
    _served_mnist(tmp_path, monkeypatch)
    root = tmp_path / "data"
    # What a download killed mid-way leaves: its staging folder, named for a process now gone.
    left = root / f".mnist.{2 ** 22 + 17}@{host_tag()}.k1lled_x.tmp"
    (left / "unpacked").mkdir(parents=True)
    (left / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
    download("mnist", root, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["mnist"]


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    _served_mnist(tmp_path, monkeypatch, corrupt="t10k-labels-idx1-ubyte.gz")
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: SHA-256 mismatch .*nothing kept"):
        download("mnist", root, progress=False)
    assert list(root.iterdir()) == []
    assert main(["datasets", "--download", "mnist", "--data-root", str(root)]) == 2
    assert list(root.iterdir()) == []


def test_md5_is_checked_too_and_mirrors_are_tried(tmp_path, monkeypatch):
    served = _served_mnist(tmp_path, monkeypatch, md5="0" * 32)
    with pytest.raises(DataError, match="MD5 mismatch"):
        download("mnist", tmp_path / "a", progress=False)
    dls = [Download((tmp_path / "gone" / f.name).as_uri(), _sha(f), f.name,
                    md5=hashlib.md5(f.read_bytes()).hexdigest(), mirrors=(f.as_uri(),))
           for f in sorted(served.iterdir())]
    _patch_source(monkeypatch, "mnist", downloads=tuple(dls))
    assert len(load_data("mnist", "test", data_root=download("mnist", tmp_path / "b", progress=False))) == 5
    _patch_source(monkeypatch, "mnist", downloads=(dataclasses.replace(dls[0], mirrors=()),))
    with pytest.raises(UnlearnableError, match="download of .* failed"):
        download("mnist", tmp_path / "c", progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_archive_download_extracts_where_the_loader_looks(tmp_path, monkeypatch):
    src = tmp_path / "src" / "cifar-10-batches-py"
    written = write_cifar10(src, np.random.default_rng(8))
    archive = tmp_path / "cifar-10-python.tar.gz"
    _tar(archive, {f"cifar-10-batches-py/{f.name}": f.read_bytes() for f in sorted(src.iterdir())})
    _patch_source(monkeypatch, "cifar10",
                  downloads=(Download(archive.as_uri(), _sha(archive), archive.name, extract=True),))
    root = tmp_path / "data"
    assert main(["datasets", "--download", "cifar10", "--data-root", str(root)]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert np.array_equal(load_data("cifar10", "test", data_root=root).images, written["test"][0])


@pytest.mark.parametrize("member", ["../escape", "/abs/escape"])
def test_archive_with_an_unsafe_path_is_refused(tmp_path, monkeypatch, member):
    archive = tmp_path / "cifar-10-python.tar.gz"
    _tar(archive, {"cifar-10-batches-py/data_batch_1": b"x", member: b"boom"})
    _patch_source(monkeypatch, "cifar10",
                  downloads=(Download(archive.as_uri(), _sha(archive), archive.name, extract=True),))
    root = tmp_path / "data"
    with pytest.raises(DataError, match="unsafe path"):
        download("cifar10", root, progress=False)
    assert list(root.iterdir()) == [] and not (tmp_path / "escape").exists()


# ---------------------------------------------------------------------------------------------
# `unlearnable datasets`

def test_datasets_command_lists_found_and_missing(tmp_path, monkeypatch, capsys):
    write_idx_dataset(tmp_path / "mnist", np.random.default_rng(0))
    _patch_source(monkeypatch, "fashion-mnist", system_dirs=())
    assert main(["datasets", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(lines) == {s.name for s in DATASETS.values()}
    assert "found" in lines["mnist"] and str(tmp_path / "mnist") in lines["mnist"]
    assert "embedded" in lines["digits"]
    assert "missing" in lines["cifar10"] and "--download cifar10" in lines["cifar10"]
    assert "apt-get install dataset-fashion-mnist" in lines["fashion-mnist"]
    assert "4 missing" in out


def test_locate_finds_nothing_for_an_empty_root(tmp_path, monkeypatch):
    _patch_source(monkeypatch, "svhn", system_dirs=())
    assert locate(DATASETS["svhn"], tmp_path) is None
