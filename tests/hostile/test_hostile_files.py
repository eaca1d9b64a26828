"""Hostile files: every reader refuses in one line, creates and deletes nothing, and never
allocates or inflates more than a file's checked header declares.

The memory cases run in a child process that reports how far its peak RSS grew over the run;
each bomb there would take 1 GiB if it were inflated or decoded, the bound asserted is 400 MB.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from unlearnable import DataError, ImageSet, save_dataset
from unlearnable.core.files import read_json
from unlearnable.cli import main
from unlearnable.data import fetch, resolve, restricted_load

from helpers import error_line, refused, snapshot, write_png

GIB_MIB = 1024  # a bomb: 1 GiB when inflated
GROWTH_BOUND_MB = 400


# ---------------------------------------------------------------------------------------------
# Helpers

@pytest.fixture
def base(tmp_path) -> Path:
    """A clean base set of 6 random RGB 4x4 images, 2 classes, in the project format."""
    rng = np.random.default_rng(0)
    ds = ImageSet(rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8), np.arange(6) % 2, ["a", "b"], "b")
    return save_dataset(tmp_path / "base", ds, {"method": "clean"})


def deflated_zeros(prefix: bytes, mib: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, size, CRC-32) of `prefix` followed by `mib` MiB of zeros, made in
    milliseconds: after a full flush a block of zeros compresses to the same bytes every time."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    assert block == c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    data = head + block * (mib + 1) + c.flush()  # the assert's block is one more
    crc, zero = zlib.crc32(prefix), bytes(1 << 20)
    for _ in range(mib + 1):
        crc = zlib.crc32(zero, crc)
    return data, len(prefix) + (mib + 1 << 20), crc


def write_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """A zip of already deflated members (name, raw deflate data, inflated size, CRC-32)."""
    out, central = bytearray(), bytearray()
    for name, data, size, crc in members:
        n = name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), size,
                               len(n), 0, 0, 0, 0, 0, len(out)) + n
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, len(n), 0) + n + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int]:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return name, c.compress(data) + c.flush(), len(data), zlib.crc32(data)


CHILD = r"""
import contextlib, io, json, resource, sys
limit = 3 << 30  # a safety net only: a regression fails here instead of eating the machine
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from unlearnable.cli import build_parser, main
build_parser()  # every command module imported before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = main(sys.argv[1:])
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"rc": rc, "stderr": err.getvalue(), "grew_mb": grew}))
"""


def in_child(root: Path, args: list[str]) -> dict:
    """Run the CLI in a fresh process; its exit code, stderr and peak-RSS growth in MB."""
    before = snapshot(root)
    env = {**os.environ, "UNLEARNABLE_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["grew_mb"] < GROWTH_BOUND_MB, out
    out["unchanged"] = snapshot(root) == before
    return out


def one_line_error(out: dict, *names: str) -> str:
    """A child process's outcome (`in_child`): exit 2, one error line naming `names`, nothing changed."""
    assert out["rc"] == 2, out
    line = error_line(out["stderr"], *names)
    assert out["unchanged"]
    return line


# ---------------------------------------------------------------------------------------------
# Archives: npz members, torch zip records

@pytest.mark.parametrize("members, expect", [
    ([("images", b"not an array")], "member 'images'): not a .npy array"),
    ([("images.npy", npy_bytes(np.zeros((6, 4, 4, 3), np.uint8))), ("images", b"x")], "appears twice"),
    ([("images.npy", npy_header((10 ** 6, 10 ** 6, 4, 3)))], "more than the"),
    ([("images.npy", npy_header((6, 4, 4, 3)) + bytes(10))], "archive says"),
    ([("images.npy", b"\x93NUMPY\x01\x00\xff\xff" + b" " * 100)], "not a valid .npy file"),
])
def test_npz_members_are_checked_from_the_directory_and_header(tmp_path, base, capsys, members, expect):
    write_zip(tmp_path / "p.npz", [stored(n, d) for n, d in members])
    refused(capsys, ["import", "npz", str(tmp_path / "p.npz"), "--base", str(base),
                               "--out", str(tmp_path / "out")], "p.npz", expect, unchanged=tmp_path)


def test_npz_member_that_is_not_wanted_is_never_inflated(tmp_path, base):
    images = np.random.default_rng(1).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    data, size, crc = deflated_zeros(npy_header((GIB_MIB + 1 << 20,)), GIB_MIB)
    write_zip(tmp_path / "p.npz", [stored("images.npy", npy_bytes(images)), ("junk.npy", data, size, crc)])
    r = subprocess.run([sys.executable, "-c", CHILD, "import", "npz", str(tmp_path / "p.npz"), "--base",
                        str(base), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0, out
    assert out["grew_mb"] < GROWTH_BOUND_MB, out
    assert np.array_equal(np.load(tmp_path / "out" / "images.npy"), images)


def test_npz_member_inflating_past_its_header_is_refused_in_bounded_memory(tmp_path, base):
    # The directory and the header agree on 1 GiB of float64 images; the base allows far less.
    data, size, crc = deflated_zeros(npy_header((GIB_MIB << 17,), "<f8"), GIB_MIB)
    write_zip(tmp_path / "p.npz", [("images.npy", data, size, crc)])
    out = in_child(tmp_path, ["import", "npz", str(tmp_path / "p.npz"), "--base", str(base),
                              "--out", str(tmp_path / "out")])
    one_line_error(out, "p.npz", "more than the")


def test_torch_file_whose_records_inflate_too_far_is_refused_before_torch_reads_it(tmp_path, base, capsys):
    data, size, crc = deflated_zeros(b"", 64)
    write_zip(tmp_path / "perturbation.pt", [stored("a/data.pkl", b"\x80\x02}q\x00."), ("a/data/0", data, size, crc)])
    refused(capsys, ["import", "ue-pt", str(tmp_path / "perturbation.pt"), "--base", str(base),
                               "--out", str(tmp_path / "out")], "perturbation.pt", "its contents would take", unchanged=tmp_path)


# ---------------------------------------------------------------------------------------------
# .npy headers

def _images_npy(d: Path, raw: bytes) -> None:
    os.chmod(d / "images.npy", 0o644)
    (d / "images.npy").write_bytes(raw)


@pytest.mark.parametrize("raw, expect", [
    (npy_header((10 ** 6, 10 ** 6, 4, 3)), "more than the"),  # numpy tried 10.9 TiB
    (npy_header((6, 4, 4, 3)), "truncated: the .npy header declares 288 bytes of data, the file holds 0"),
    (npy_header((6, 4, 4, 3), "<f8") + bytes(6 * 48 * 8), "dtype float64, expected uint8"),
    (npy_header((6, -4, 4, 3)), "negative dimension"),
    (npy_header((6,), "|O"), "holds Python objects"),
    (b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 31), "a header of"),
])
def test_npy_header_is_checked_before_anything_is_allocated(tmp_path, base, capsys, raw, expect):
    _images_npy(base, raw)
    refused(capsys, ["export", str(base), "--out", str(tmp_path / "out")], "images.npy", expect, unchanged=tmp_path)


def test_released_npy_arrays_are_bounded_by_the_base_set(tmp_path, base, capsys):
    d = tmp_path / "ntga"
    d.mkdir()
    (d / "x_train.npy").write_bytes(npy_header((6, 4, 4, 3 * 10 ** 6), "<f4"))
    np.save(d / "y_train.npy", np.eye(2, dtype=np.float32)[np.arange(6) % 2])
    refused(capsys, ["import", "ntga-npy", str(d), "--base", str(base), "--out", str(tmp_path / "o")], "x_train.npy", "more than the", unchanged=tmp_path)
    (d / "perturbation.npy").write_bytes(npy_header((2 ** 40, 4, 4, 3), "<f8"))
    refused(capsys, ["import", "ops-npy", str(d / "perturbation.npy"), "--base", str(base),
                               "--out", str(tmp_path / "o")], "perturbation.npy", "more than the", unchanged=tmp_path)


# ---------------------------------------------------------------------------------------------
# Manifests

@pytest.mark.parametrize("field, value, expect", [
    ("base", "cifar10", "field 'base' must be an object"),
    ("base", None, "field 'base' must be an object"),
    ("base", {"name": 5}, "field 'base.name' must be a string"),
    ("base", {"name": "x", "num_samples": "9"}, "field 'base.num_samples' must be an integer"),
    ("base", {"name": "./x\u0000y"}, "field 'base.name' holds a NUL"),
    ("arrays", [1], "field 'arrays' must be an object"),
    ("arrays", {"images.npy": "abc"}, "field 'arrays.images.npy' must be an object"),
    ("arrays", {"images.npy": {"shape": "big"}}, "field 'arrays.images.npy.shape' must be an array"),
    ("classes", [1, 2], "field 'classes' must be an array of strings"),
    ("seed", "1", "field 'seed' must be an integer"),
    ("seed", True, "field 'seed' must be an integer"),
    ("seed", -1, "field 'seed' must not be negative"),
    ("fraction", 2.5, "field 'fraction' must be in [0, 1]"),
    ("params", [], "field 'params' must be an object"),
    ("name", {"a": 1}, "field 'name' must be a string"),
    ("format_version", "1", "field 'format_version' must be an integer"),
    ("timing", {"generate_seconds": "x"}, "field 'timing.generate_seconds' must be a number"),
])
def test_manifest_fields_of_the_wrong_type_are_refused(tmp_path, base, capsys, field, value, expect):
    f = base / "manifest.json"
    man = json.loads(f.read_text())
    man[field] = value
    os.chmod(f, 0o644)
    f.write_text(json.dumps(man))
    refused(capsys, ["export", str(base), "--out", str(tmp_path / "out")], "manifest.json", expect, unchanged=tmp_path)


def _rebase(d: Path, name: str) -> None:
    f = d / "manifest.json"
    man = json.loads(f.read_text())
    man["base"] = {"name": name}
    os.chmod(f, 0o644)
    f.write_text(json.dumps(man))


def test_a_base_chain_that_loops_is_refused(tmp_path, base, capsys):
    # A base path in a manifest is relative to the manifest (data/refs.py).
    _rebase(base, ".")
    refused(capsys, ["export", str(base), "--out", str(tmp_path / "out")], "manifest.json", "names itself", unchanged=tmp_path)
    other = save_dataset(tmp_path / "other", ImageSet(np.zeros((2, 4, 4, 3), np.uint8), np.arange(2), ["a", "b"]),
                         {"method": "clean"})
    _rebase(base, "../other")
    _rebase(other, "./.././base")  # the same directory, spelled otherwise
    refused(capsys, ["train", str(base), "--out", str(tmp_path / "run"), "--epochs", "1"], "manifest.json", "loop in the base chain", unchanged=tmp_path)
    with pytest.raises(DataError, match="loop in the base chain"):
        resolve.load_data(other, "test")


# ---------------------------------------------------------------------------------------------
# JSON files read as objects

@pytest.mark.parametrize("raw, expect", [
    (b"[1, 2]", "expected a JSON object {...}, got an array"),
    (b'"results"', "got a string"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON"),
    (b'{"a": "\xff"}', "not valid JSON"),
])
def test_json_that_is_not_an_object_is_refused(tmp_path, capsys, raw, expect):
    out = tmp_path / "audit"
    out.mkdir()
    (out / "results.json").write_bytes(raw)
    refused(capsys, ["audit", "digits", "--out", str(out), "--level", "tiny"], "results.json", expect, unchanged=tmp_path)
    if raw == b"[1, 2]":  # a reader that asks for any JSON value gets it
        assert read_json(out / "results.json", object_only=False) == [1, 2]


# ---------------------------------------------------------------------------------------------
# Images: names, content, size before decoding

def test_png_names_beyond_any_index_are_refused(tmp_path, base, capsys):
    for i in range(6):
        write_png(tmp_path / "p" / "data" / f"{i}.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "p" / "data" / "0.png").rename(tmp_path / "p" / "data" / ("9" * 25 + ".png"))
    refused(capsys, ["import", "png-folder", str(tmp_path / "p"), "--base", str(base), "--out",
                               str(tmp_path / "out"), "--param", "subset=true"], "9" * 25, "outside the base set", unchanged=tmp_path)


def test_image_format_is_judged_by_content(tmp_path, base, capsys):
    rng = np.random.default_rng(2)
    for i in range(6):
        write_png(tmp_path / "p" / "data" / f"{i}.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    write_png(tmp_path / "p" / "data" / "3.png", np.zeros((4, 4, 3), np.uint8), "JPEG")
    refused(capsys, ["import", "png-folder", str(tmp_path / "p"), "--base", str(base),
                               "--out", str(tmp_path / "out")], "3.png", "is a JPEG image, not a PNG", unchanged=tmp_path)
    # An image folder promises images, not PNGs: a JPEG named .png is read as the JPEG it is,
    # a GIF (a format it does not read) is refused whatever its name.
    folder = tmp_path / "folder" / "train"
    write_png(folder / "a" / "0.png", np.zeros((4, 4, 3), np.uint8), "JPEG")
    write_png(folder / "b" / "0.png", np.zeros((4, 4, 3), np.uint8))
    capsys.readouterr()
    assert main(["export", f"imagefolder:{folder.parent}", "--format", "npz", "--out", str(tmp_path / "e")]) == 0
    write_png(folder / "b" / "1.jpg", np.zeros((4, 4, 3), np.uint8), "GIF")
    refused(capsys, ["export", f"imagefolder:{folder.parent}", "--out", str(tmp_path / "e2")], "1.jpg", "is a GIF image, not a PNG or JPEG or BMP image", unchanged=tmp_path)


def _png_bomb(path: Path, w: int, h: int) -> None:
    """A valid RGB PNG of w x h black pixels (w*h*3 bytes decoded) in a few hundred KB."""
    row = 1 + 3 * w
    data, size, _ = deflated_zeros(b"", row * h // (1 << 20))
    # The zlib stream: header, the raw deflate stream (whose zeros cover every row), Adler-32.
    adler = 1
    zero = bytes(1 << 20)
    for _ in range(size >> 20):
        adler = zlib.adler32(zero, adler)
    idat = b"\x78\xda" + data + struct.pack(">I", adler)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h_rows = size // row
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h_rows, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("where", ["png-folder", "imagefolder"])
def test_png_size_is_checked_before_decoding(tmp_path, base, where):
    if where == "png-folder":
        for i in range(1, 6):
            write_png(tmp_path / "p" / "data" / f"{i}.png", np.zeros((4, 4, 3), np.uint8))
        _png_bomb(tmp_path / "p" / "data" / "0.png", 12000, 12000)
        args = ["import", "png-folder", str(tmp_path / "p"), "--base", str(base), "--out", str(tmp_path / "out")]
        expect = "pixels, the base set's are 4x4"
    else:
        _png_bomb(tmp_path / "f" / "train" / "a" / "0.png", 12000, 12000)
        args = ["export", f"imagefolder:{tmp_path / 'f'}", "--out", str(tmp_path / "out")]
        expect = "more than the 16777216 an image may have"
    one_line_error(in_child(tmp_path, args), "0.png", expect)


def test_pil_decompression_bomb_is_a_one_line_refusal(tmp_path, capsys):
    write_png(tmp_path / "f" / "train" / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
    raw = (tmp_path / "f" / "train" / "a" / "0.png").read_bytes()
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    raw = raw[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + raw[33:]
    (tmp_path / "f" / "train" / "a" / "0.png").write_bytes(raw)
    line = refused(capsys, ["export", f"imagefolder:{tmp_path / 'f'}", "--out", str(tmp_path / "out")], "0.png", unchanged=tmp_path)
    assert "unreadable image" in line and "decompression bomb" in line


# ---------------------------------------------------------------------------------------------
# Compressed clean-dataset files: gzipped IDX, compressed MAT variables

def _mnist_root(tmp_path: Path, image_file: bytes) -> Path:
    d = tmp_path / "root" / "mnist"
    d.mkdir(parents=True)
    (d / "train-images-idx3-ubyte.gz").write_bytes(image_file)
    labels = b"\x00\x00\x08\x01" + struct.pack(">I", 2) + bytes(2)
    (d / "train-labels-idx1-ubyte").write_bytes(labels)
    return tmp_path / "root"


def _gzip(raw_deflate: bytes, size: int, crc: int) -> bytes:
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + raw_deflate + struct.pack("<II", crc, size & 0xFFFFFFFF)


@pytest.mark.parametrize("dims, expect", [
    ((2, 28, 28), "IDX header says shape (2, 28, 28) (1568 bytes) but the file holds more"),
    ((100_000, 100_000, 100), "more than the"),
])
def test_gzipped_idx_header_is_checked_before_the_body_is_inflated(tmp_path, dims, expect):
    head = b"\x00\x00\x08\x03" + struct.pack(">3I", *dims)
    root = _mnist_root(tmp_path, _gzip(*deflated_zeros(head, GIB_MIB)))
    out = in_child(tmp_path, ["export", "mnist", "--data-root", str(root), "--out", str(tmp_path / "out")])
    one_line_error(out, "train-images-idx3-ubyte.gz", expect)


def test_gzipped_idx_with_a_bad_magic_number_is_refused_before_inflating(tmp_path, capsys):
    root = _mnist_root(tmp_path, _gzip(*deflated_zeros(b"\x00\x00\x99\x03", 64)))
    refused(capsys, ["export", "mnist", "--data-root", str(root), "--out", str(tmp_path / "out")], "train-images-idx3-ubyte.gz", "bad magic number", unchanged=tmp_path)


def _mat_bomb(path: Path) -> None:
    """A MAT v5 file whose compressed 'X' declares (32, 32, 3, 1) uint8 but holds a 1 GiB element."""
    import scipy.io

    n = GIB_MIB << 20
    inner = (struct.pack("<II", 6, 8) + struct.pack("<II", 9, 0)  # array flags: uint8
             + struct.pack("<II", 5, 16) + struct.pack("<4i", 32, 32, 3, 1)  # dimensions
             + struct.pack("<HH", 1, 1) + b"X\0\0\0"  # name, a small element
             + struct.pack("<II", 2, n))  # the data: n bytes of uint8
    prefix = struct.pack("<II", 14, len(inner) + n) + inner
    data, size, _ = deflated_zeros(prefix, GIB_MIB - 1)
    adler = zlib.adler32(prefix)
    zero = bytes(1 << 20)
    for _ in range(GIB_MIB):
        adler = zlib.adler32(zero, adler)
    z = b"\x78\xda" + data + struct.pack(">I", adler)
    y = io.BytesIO()
    scipy.io.savemat(y, {"y": np.array([[1]], np.uint8)})
    header = b"MATLAB 5.0 MAT-file, hostile".ljust(116) + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + struct.pack("<II", 15, len(z)) + z + y.getvalue()[128:])


def test_compressed_mat_variable_is_bounded_by_its_declared_shape(tmp_path):
    _mat_bomb(tmp_path / "root" / "svhn" / "train_32x32.mat")
    out = in_child(tmp_path, ["export", "svhn", "--data-root", str(tmp_path / "root"), "--out", str(tmp_path / "o")])
    one_line_error(out, "train_32x32.mat", "a compressed variable would take")


# ---------------------------------------------------------------------------------------------
# Odd files: FIFOs, devices, directories where a file should be

def _alarm(signum, frame):
    raise TimeoutError("a reader blocked on an odd file")


def _make_odd(path: Path, kind: str) -> None:
    if path.exists():
        os.chmod(path, 0o644)
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


def _cifar_root(tmp_path: Path) -> Path:
    d = tmp_path / "root" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    return d


@pytest.mark.parametrize("kind, says", [("fifo", "a FIFO (named pipe)"), ("devzero", "a character device"),
                                        ("dir", "a directory")])
@pytest.mark.parametrize("target", ["images.npy", "labels.npy", "cifar-batch", "ntga-labels", "results.json"])
def test_odd_files_are_refused_without_blocking(tmp_path, base, capsys, kind, says, target):
    if target == "images.npy":
        odd, args = base / "images.npy", ["export", str(base), "--out", str(tmp_path / "out")]
    elif target == "labels.npy":
        odd = base / "labels.npy"
        args = ["export", str(base), "--out", str(tmp_path / "out")]
    elif target == "cifar-batch":
        odd = _cifar_root(tmp_path) / "data_batch_3"
        args = ["export", "cifar10", "--data-root", str(tmp_path / "root"), "--out", str(tmp_path / "out")]
    elif target == "ntga-labels":
        d = tmp_path / "ntga"
        d.mkdir()
        np.save(d / "x_train.npy", np.zeros((6, 4, 4, 3), np.float32))
        odd = d / "y_train.npy"
        args = ["import", "ntga-npy", str(d / "x_train.npy"), "--base", str(base), "--out", str(tmp_path / "out")]
    else:
        (tmp_path / "audit").mkdir()
        odd = tmp_path / "audit" / "results.json"
        args = ["audit", "digits", "--out", str(tmp_path / "audit"), "--level", "tiny"]
    _make_odd(odd, kind)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        refused(capsys, args, odd.name, f"is {says}, not a regular file", unchanged=tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------------
# Pickles, downloads and their archives

def test_pickle_cannot_make_numpy_allocate(tmp_path, base, capsys):
    class Alloc:
        def __init__(self, fn, args):
            self.fn, self.args = fn, args

        def __reduce__(self):
            return self.fn, self.args

    from numpy._core.multiarray import _reconstruct

    for obj, expect in [(Alloc(_reconstruct, (np.ndarray, (10 ** 6, 10 ** 6), b"b")), "_reconstruct of shape"),
                        (Alloc(np.ndarray, ((10 ** 6, 10 ** 6),)), "direct call of numpy.ndarray")]:
        with pytest.raises(DataError, match=expect):
            restricted_load(pickle.dumps(obj, protocol=2), "x.pkl")
        (tmp_path / "rem.pkl").write_bytes(pickle.dumps(obj, protocol=2))
        refused(capsys, ["import", "rem-pkl", str(tmp_path / "rem.pkl"), "--base", str(base),
                                   "--out", str(tmp_path / "out")], "rem.pkl", expect, unchanged=tmp_path)


def test_download_and_unpacking_are_bounded(tmp_path, monkeypatch):
    from unlearnable.data.sources import Download

    src = tmp_path / "big.tar"
    with tarfile.open(src, "w") as tar:
        info = tarfile.TarInfo("top/data")
        info.size = 4096
        tar.addfile(info, io.BytesIO(bytes(4096)))
    monkeypatch.setattr(fetch, "MAX_EXTRACT_BYTES", 1000)
    with pytest.raises(DataError, match="big.tar: unpacking it would take 4.0 KiB, more than"):
        fetch._safe_extract(src, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()
    monkeypatch.setattr(fetch, "MAX_DOWNLOAD_BYTES", 1000)
    stage = tmp_path / "stage"
    stage.mkdir()
    dl = Download(src.as_uri(), "0" * 64, "big.tar")
    with pytest.raises(Exception, match="sent more than"):
        fetch._fetch(dl, stage, fetch.get_source("cifar10"), progress=False)
    assert list(stage.iterdir()) == []
