"""Checks every reader of an untrusted file goes through before it reads a body or allocates.

Datasets and poisons come from the internet. A file may be a FIFO that never ends, a link to
/dev/zero, an .npy header that claims terabytes, a zip member that inflates a thousandfold, or
a JPEG named .png. The functions here look only at what a file declares (its stat, its header,
the zip directory) and refuse with a one-line `DataError` naming the file before the body is
read; the body is then read with the declared size as a hard bound.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from PIL import Image

from .errors import DataError, one_line

# No array, pickle or IDX body this package reads comes near this (CIFAR-10 as float64 is 1.2 GB);
# a header that declares more is refused before anything is allocated.
DEFAULT_MAX_BYTES = 8 << 30
# Images of image folders: 4096 x 4096 is far above any dataset here and 48 MiB decoded (RGB).
MAX_IMAGE_PIXELS = 1 << 24
# The most an .npy header may take (numpy's own parser refuses over 10,000 characters).
_MAX_NPY_HEADER = 1 << 16
_CHUNK = 16 << 20

_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket")]


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def regular_file_size(path: str | os.PathLike[str]) -> int:
    """The size of `path`, refused unless it is (after symlinks) a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read ({one_line(e.strerror or e)})") from None
    except ValueError as e:  # a NUL in the name
        raise DataError(path, f"cannot read ({one_line(e)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(path, f"is {_kind(st.st_mode)}, not a regular file")
    return st.st_size


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """`path` opened for binary reading; a FIFO, device, socket or directory is refused.

    Checked twice: by stat before opening (opening some devices has effects), and on the open
    descriptor (the path may have been swapped in between). O_NONBLOCK keeps a FIFO that has no
    writer from blocking the open itself.
    """
    regular_file_size(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read ({one_line(e.strerror or e)})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise DataError(path, f"is {_kind(st.st_mode)}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def check_bytes(path: str | os.PathLike[str], nbytes: int, max_bytes: int, what: str) -> None:
    """Refuse (a one-line DataError naming the file) what would take more than `max_bytes`."""
    if nbytes > max_bytes:
        raise DataError(path, f"{what} would take {_size_text(nbytes)}, more than the "
                              f"{_size_text(max_bytes)} this reader accepts; refused")


def read_bounded(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The whole of a regular file no larger than `max_bytes`."""
    with open_regular(path) as f:
        check_bytes(path, os.fstat(f.fileno()).st_size, max_bytes, "the file")
        data = f.read(max_bytes + 1)  # a file that grows meanwhile still stops here
    check_bytes(path, len(data), max_bytes, "the file")
    return data


def readinto_exact(stream: IO[bytes], buf: np.ndarray, path: str | os.PathLike[str], what: str) -> None:
    """Fill the contiguous array `buf` from `stream`, in chunks (a zip or gzip stream would
    otherwise make a second, temporary copy of the whole body)."""
    mv = memoryview(buf.reshape(-1).view(np.uint8))
    pos = 0
    while pos < len(mv):
        n = stream.readinto(mv[pos:pos + _CHUNK])
        if not n:
            raise DataError(path, f"truncated: {what} declares {len(mv)} bytes, the file holds {pos}")
        pos += n


def require_end(stream: IO[bytes], path: str | os.PathLike[str], what: str) -> None:
    """Refuse a stream that holds more data than its header (`what`) declares."""
    if stream.read(1):
        raise DataError(path, f"holds more data than {what} declares")


# ---------------------------------------------------------------------------------------------
# .npy and .npz

@dataclass(frozen=True)
class NpyHeader:
    """What an .npy header declares: dtype, shape, memory order, and where the data starts."""
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    offset: int  # bytes before the data

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n


def read_npy_header(stream: IO[bytes], path: str | os.PathLike[str],
                    max_bytes: int = DEFAULT_MAX_BYTES) -> NpyHeader:
    """Parse an .npy header from `stream` (left at the first data byte) and check what it
    declares: no Python objects, no negative dimension, at most `max_bytes` of data."""
    try:
        magic = stream.read(8)
        if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
            raise DataError(path, "not a valid .npy file (no .npy magic string)")
        version = (magic[6], magic[7])
        if version not in {(1, 0), (2, 0)}:
            raise DataError(path, f"not a supported .npy file (format version {version[0]}.{version[1]})")
        fmt = "<H" if version == (1, 0) else "<I"
        raw_len = stream.read(struct.calcsize(fmt))
        if len(raw_len) < struct.calcsize(fmt):
            raise DataError(path, "not a valid .npy file (truncated header)")
        hlen = struct.unpack(fmt, raw_len)[0]
        if hlen > _MAX_NPY_HEADER:
            raise DataError(path, f"not a valid .npy file (a header of {hlen} bytes)")
        header = stream.read(hlen)
        if len(header) < hlen:
            raise DataError(path, "not a valid .npy file (truncated header)")
        parse = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = parse(io.BytesIO(raw_len + header))
    except DataError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError, SyntaxError) as e:
        raise DataError(path, f"not a valid .npy file ({one_line(e)})") from None
    if dtype.hasobject:
        raise DataError(path, "holds Python objects (a pickle); refused")
    if any(d < 0 for d in shape):
        raise DataError(path, f"not a valid .npy file (negative dimension in shape {shape})")
    h = NpyHeader(dtype, tuple(int(d) for d in shape), bool(fortran), 8 + len(raw_len) + hlen)
    check_bytes(path, h.nbytes, max_bytes, f"its {dtype} array of shape {h.shape}")
    return h


def _read_npy_body(stream: IO[bytes], h: NpyHeader, path: str | os.PathLike[str]) -> np.ndarray:
    count = h.nbytes // h.dtype.itemsize if h.dtype.itemsize else 0
    if h.nbytes == 0:
        return np.zeros(h.shape, h.dtype)
    flat = np.empty(count, h.dtype)
    readinto_exact(stream, flat, path, "the .npy header")
    return flat.reshape(h.shape, order="F" if h.fortran else "C")


def read_npy(path: str | os.PathLike[str], mmap: bool = False, max_bytes: int = DEFAULT_MAX_BYTES,
             check: Callable[[NpyHeader], None] | None = None) -> np.ndarray:
    """An .npy array from a regular file, header checked before anything is allocated; with
    `mmap`, mapped read-only instead of read. `check(header)` may refuse what the caller knows
    is wrong (dtype, shape) before the data is read."""
    with open_regular(path) as f:
        h = read_npy_header(f, path, max_bytes)
        if check is not None:
            check(h)
        have = os.fstat(f.fileno()).st_size - h.offset
        if have < h.nbytes:
            raise DataError(path, f"truncated: the .npy header declares {h.nbytes} bytes of data, "
                                  f"the file holds {have}")
        if mmap and h.nbytes:
            # Mapped from the descriptor already checked, not by name again.
            return np.memmap(f, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape,
                             order="F" if h.fortran else "C")
        return _read_npy_body(f, h, path)


def read_npz(path: str | os.PathLike[str], names: Iterable[str],
             max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays `names` (those present) of an .npz archive, and the names of all its members.

    Only the zip directory is read for the others: a member that is not wanted is never
    inflated. A wanted member's sizes (from the directory) and .npy header are checked before
    its body is read, and the body must be exactly the size its header declares.
    """
    wanted = list(names)
    try:
        with open_regular(path) as f, zipfile.ZipFile(f) as z:
            members: dict[str, zipfile.ZipInfo] = {}
            for info in z.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in members:
                    raise DataError(path, f"member {key!r} appears twice in the archive")
                members[key] = info
            total = 0
            out: dict[str, np.ndarray] = {}
            for key in wanted:
                info = members.get(key)
                if info is None:
                    continue
                where = f"{path} (member {info.filename!r})"  # a name may hold a newline
                if not info.filename.endswith(".npy"):
                    raise DataError(where, "not a .npy array")
                if info.flag_bits & 0x1:
                    raise DataError(where, "encrypted; refused")
                total += info.file_size
                check_bytes(where, total, max_bytes + len(wanted) * _MAX_NPY_HEADER, "the wanted members")
                with z.open(info) as m:
                    h = read_npy_header(m, where, max_bytes)
                    if h.offset + h.nbytes != info.file_size:
                        raise DataError(where, f"the .npy header declares {h.nbytes} bytes of data, "
                                               f"the archive says {info.file_size - h.offset}")
                    out[key] = _read_npy_body(m, h, where)
                    require_end(m, where, "the .npy header")
            return out, list(members)
    except DataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError,
            OSError, ValueError, zlib.error) as e:
        raise DataError(path, f"not a valid .npz file ({one_line(e)})") from None


# ---------------------------------------------------------------------------------------------
# Images: what a file holds by its first bytes, and its size from its header before decoding

_SIGNATURES = [(b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"),
               (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
               (b"%!PS", "PostScript"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000")]


def image_format(head: bytes) -> str | None:
    """The image format `head` (a file's first 16 bytes) starts, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)


def open_image(path: str | os.PathLike[str], formats: tuple[str, ...], what: str = "image",
               check: Callable[[tuple[int, int], str], None] | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """The decoded PIL image in `path`, whose format by content (not by name) is one of `formats`.

    Its size and mode come from its header first: more than `max_pixels` pixels is refused, and
    `check((width, height), mode)` may refuse it, before anything is decoded. Only the plugins
    of `formats` ever parse the file. Any decoding failure is a one-line `DataError`.
    """
    return _open_image(path, formats, what, None if check is None else lambda im: check(im.size, im.mode),
                       max_pixels)


def _open_image(path: str | os.PathLike[str], formats: tuple[str, ...], what: str,
                inspect: Callable[[Any], None] | None, max_pixels: int) -> Any:
    """`open_image`, with `inspect(im)` seeing the opened, not yet decoded, PIL image."""
    with open_regular(path) as f:
        fmt = image_format(f.read(16))
        f.seek(0)
        if fmt not in formats:
            named = f"is a {fmt} image, not" if fmt else "not"
            raise DataError(path, f"{named} a {' or '.join(formats)} image (judged by its content)")
        try:
            with warnings.catch_warnings():
                # PIL warns above 89M pixels (and refuses above twice that); the checks below
                # are stricter and name the reason, so its warning is not wanted.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(f, formats=list(formats))
                w, h = im.size
                if inspect is not None:
                    inspect(im)
                if w * h > max_pixels:
                    raise DataError(path, f"{w}x{h} pixels, more than the {max_pixels} an image may have here")
                im.load()
        except DataError:
            raise
        except Exception as e:  # PIL raises a zoo of types (OSError, SyntaxError, struct.error, ...)
            raise DataError(path, f"unreadable {what} ({one_line(e)})") from None
        return im


# What each mode a decoder may give becomes (the one rule of `decode_image`): read as it is,
# expanded (palette, 1-bit), an alpha channel checked and dropped, or a JPEG colour space converted.
_EXPANDED = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB"}
_ALPHA = {"LA", "RGBA"}
_READ = {"L", "RGB"} | _ALPHA | set(_EXPANDED)
_WIDE = {"I": "32-bit integer", "F": "32-bit floating-point"}


def _wide(im: Any) -> str | None:
    """What a sample of `im` holds when it is more than 8 bits ("16-bit"), else None."""
    if im.mode.startswith("I;16"):
        return "16-bit"
    if im.mode in _WIDE:
        return _WIDE[im.mode]
    # PIL reads a 16-bit colour or grey+alpha PNG as 8-bit RGB(A), keeping each sample's high
    # byte: only the raw mode of its decoder (RGB;16B, LA;16B, ...) says what the file holds.
    if im.format == "PNG":
        for tile in im.tile:
            args = tile[3]
            raw = args[0] if isinstance(args, tuple) and args else args
            if isinstance(raw, str) and ";16" in raw:
                return "16-bit"
    return None


def header_channels(mode: str) -> int:
    """The channels `decode_image` gives an image of PIL `mode` at most (a palette may be grey)."""
    return 1 if mode in ("1", "L", "LA") else 3


def decode_image(path: str | os.PathLike[str], formats: tuple[str, ...], what: str = "image",
                 check: Callable[[tuple[int, int], str], None] | None = None,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """The image in `path` as uint8 (H, W, C), C 1 (grey) or 3 (colour): the one rule by which
    every image folder and PNG release is read (`open_image`'s checks first).

    The datasets compared here are 8-bit grey or RGB, so an image is read only where that is
    what it holds, and refused (a one-line `DataError`) where any reading would change it:

    - grey stays 1 channel, RGB 3; 1-bit images become grey 0/255, palette images their RGB
      colours (a grey palette gives three equal channels: the caller decides what that is);
    - more than 8 bits a sample (16-bit grey or colour PNGs, 32-bit integer or float modes) is
      refused, never scaled, clipped or cut to its high byte;
    - an alpha channel (RGBA, LA, a palette's or a key colour's transparency) must be 255
      everywhere and is then dropped; a transparent pixel is refused, since the colour stored
      under it is not what anyone sees;
    - CMYK and YCbCr (JPEG colour spaces; CMYK JPEGs are common from print workflows) are
      converted to RGB by PIL's formulas, without colour management: the result may differ from
      what a colour-managed viewer shows, as it does in every PIL-based loader; other modes are
      refused.

    `check((width, height), mode)` may refuse an image from its header, before it is decoded.
    """
    def inspect(im: Any) -> None:
        wide = _wide(im)
        if wide:
            raise DataError(path, f"{wide} image: only 8-bit images are read (PIL mode {im.mode})")
        if im.mode not in _READ:
            raise DataError(path, f"PIL mode {im.mode} is not a grey or colour mode this package reads")
        if check is not None:
            check(im.size, im.mode)

    im = _open_image(path, formats, what, inspect, max_pixels)
    if "transparency" in im.info and im.mode in ("1", "L", "RGB", "P"):
        # A key colour or palette transparency is an alpha channel in another form.
        im = im.convert("LA" if im.mode in ("1", "L") else "RGBA")
    elif im.mode in _EXPANDED:
        im = im.convert(_EXPANDED[im.mode])
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[..., None]
    if im.mode in _ALPHA:
        clear = int((a[..., -1] != 255).sum())
        if clear:
            raise DataError(path, f"has transparent pixels ({clear} of {a.shape[0] * a.shape[1]}): "
                                  "only opaque images are read")
        a = a[..., :-1]
    return np.ascontiguousarray(a)
