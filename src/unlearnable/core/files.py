"""Files: atomic writes, JSON, finished directories put in place, and what killed writes leave.

Every artifact this package writes goes through `atomic_file` or `atomic_dir`: a crash or Ctrl-C
leaves either the old artifact or the new one, never half of one. A directory made elsewhere
(a download, a protected set a job made) is moved into place by `put_in_place`, the one rule
for what happens when something is already there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, UnlearnableError, one_line
from .process import host_tag, pid_alive
from .safe import read_bounded

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; rename it over `path` only on success.

    The temporary's name records the writing process (`temp_prefix`), so that the next write
    to `path` removes what a killed one left behind (`remove_stale`).
    """
    path = Path(path)
    # The rename would fail on a directory, and would replace a device or FIFO (as root, /dev/null)
    # rather than write into it.
    if path.is_dir():
        raise UnlearnableError(f"{path}: is a directory, not a file (name a file to write)")
    if path.exists() and not path.is_file():
        raise UnlearnableError(f"{path}: is not a regular file (a device, FIFO or socket); name a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if e.filename is not None:
            raise
        raise named(e, path) from e
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically (numpy numbers and arrays, paths as plain
    values)."""
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# Manifests, run.json and results.json are kilobytes; a larger "JSON file" is not one of ours.
MAX_JSON_BYTES = 64 << 20


def read_json(path: str | os.PathLike[str], object_only: bool = True) -> Any:
    """The value of a JSON file (a regular file of at most MAX_JSON_BYTES).

    Every JSON file this package writes holds an object, and its readers call `.get` on it, so
    any other top-level value is a `DataError` unless `object_only=False`.
    """
    raw = read_bounded(path, MAX_JSON_BYTES)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError) as e:  # bad UTF-8, a 5,000-digit number, nesting 10^5 deep
        raise DataError(path, f"not valid JSON ({one_line(e)})") from None
    if object_only and not isinstance(value, dict):
        raise DataError(path, f"expected a JSON object {{...}}, got {json_type(value)}")
    return value


def json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words (for messages about a wrongly typed field)."""
    for kind, name in ((bool, "true/false"), (dict, "an object"), (list, "an array"),
                       (str, "a string"), ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` when the block succeeds.

    An existing `path` is refused unless `overwrite`, and one that is not a directory always (a
    file named as an output directory is a mistake, not something to replace). With `overwrite`
    the old directory is moved aside only once the new one is complete, and removed once the new
    one is in place. The temporary and the old copy are siblings named by `temp_prefix`, so the
    next write to `path` removes what a killed write left behind (`remove_stale`).
    """
    path = Path(path)
    check_out_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
        put_in_place(tmp, path, REPLACE if overwrite else None)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename is not None:
            raise
        raise named(e, path) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    remove_stale(path)  # an old copy kept while `path` was missing is now superseded


def named(e: OSError, path: Path) -> OSError:
    """A filename-less `e` as it should reach the user: naming the file it was writing. A short write (numpy's
    "N requested and M written") says nothing of a file or a cause; the disk is full."""
    text = str(e)
    if "requested and" in text and "written" in text:
        return OSError(errno.ENOSPC, f"no space left on device ({text} bytes)", str(path))
    return OSError(e.errno, e.strerror or text, str(path))


def write_failed(e: BaseException, path: str | os.PathLike[str]) -> OSError:
    """What a writer that hides the OS's error (torch's "unexpected pos 24704 vs 24600", "file
    write failed") means, naming `path`: no space left when the disk holding it is (nearly) full,
    else an I/O error. Call it while the partial file is still there: its blocks are the space."""
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    code = errno.ENOSPC if free is not None and free < (1 << 20) else errno.EIO
    return OSError(code, f"{os.strerror(code)} ({one_line(e, 120)})", str(path))


def check_out_dir(path: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Refuse to write directory `path` where something is: anything unless `overwrite`, and
    always a file (named as an output directory by mistake, not something to replace). Writers
    that work long before `atomic_dir` call this first, so a refusal costs nothing."""
    path = Path(path)
    refuse_dangling(path)
    if path.exists() and not path.is_dir():
        raise UnlearnableError(f"{path}: exists and is not a directory (choose another --out)")
    if path.exists() and not overwrite:
        raise UnlearnableError(f"{path}: already exists (choose another --out or pass --overwrite)")


def refuse_dangling(path: str | os.PathLike[str], option: str = "--out") -> None:
    """Refuse a directory to write that is a symbolic link to nothing (it can be neither made nor
    written through: one line saying so, before anything is created)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UnlearnableError(f"{path}: is a symbolic link to {os.readlink(path)}, which does not exist; "
                               f"make that directory or choose another {option}")


def REPLACE(path: Path) -> bool:
    """`put_in_place`'s `keep` that replaces whatever stands at the path."""
    return False


def put_in_place(tmp: str | os.PathLike[str], path: str | os.PathLike[str],
                 keep: Callable[[Path], bool] | None = None) -> bool:
    """Move the finished directory `tmp` to `path`; True when `tmp` is what now stands there.

    Onto nothing (or an empty directory) it is a rename. Where something is there already,
    `keep(path)` decides: True keeps what is there (a loadable copy another process made) and
    removes `tmp`; False replaces it, moving the old one aside until `tmp` is in place, then
    removing it (an `--overwrite`, a download). Without `keep`, what is there is another
    process's write: refused with a one-line error, and `tmp` is left to the caller.
    """
    tmp, path = Path(tmp), Path(path)
    if not os.path.lexists(path) or keep is None:
        try:
            os.replace(tmp, path)  # onto nothing, or an empty directory made meanwhile
            return True
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            if keep is None:
                raise UnlearnableError(f"{path}: was written by another process meanwhile "
                                       "(choose another --out or pass --overwrite)") from None
    if keep(path):
        log.info("%s: made by another process meanwhile; using that copy", path)
        _remove(tmp)
        return False
    old = path.with_name(f"{temp_prefix(path)}{os.urandom(4).hex()}.old")  # a name remove_stale knows
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)
    return True


# A temporary or old copy older than this is abandoned whoever made it: no single write of this
# package takes a day (an export of ImageNet-sized data takes minutes).
STALE_AFTER_S = 24 * 3600


def temp_prefix(path: Path) -> str:
    """`.NAME.PID@HOST.`: how the temporaries and old copies of `path` begin. Recording the
    writer lets `remove_stale` tell a killed write's leftovers from a live one's."""
    return f".{path.name}.{os.getpid()}@{host_tag()}."


def _stale_names(name: str) -> re.Pattern[str]:
    # PID@HOST. is absent from the names earlier versions gave (.NAME.XXXXXXXX.tmp, .NAME.old-PID).
    return re.compile(rf"\.{re.escape(name)}\.(?:(\d+)@([A-Za-z0-9-]+)\.)?"
                      r"(?:[a-z0-9_]{8}\.tmp|[0-9a-f]{8}\.old|old-\d+)")


def remove_stale(path: str | os.PathLike[str]) -> None:
    """Remove the temporaries and old copies of `path` that interrupted writes left beside it.

    One is stale when its name records a process of this machine that no longer runs, or when it
    is older than STALE_AFTER_S (a process of another machine sharing the file system, a name
    from an earlier version, a reused PID). An old copy is kept while `path` itself is missing:
    it is then the only copy (a kill fell between the two renames of an overwrite).
    """
    path = Path(path)
    pattern, host, now = _stale_names(path.name), host_tag(), time.time()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for e in entries:
        m = pattern.fullmatch(e.name)
        if not m:
            continue
        try:
            age = now - e.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = int(m.group(1)) if m.group(1) else None
        dead = pid is not None and m.group(2) == host and pid != os.getpid() and not pid_alive(pid)
        if not (dead or age > STALE_AFTER_S):
            continue
        if not e.name.endswith(".tmp") and not os.path.lexists(path):
            log.warning(
                "%s: missing, but an interrupted overwrite left its previous version in %s", path, e.path)
            continue
        log.info("removing %s (left by an interrupted write)", e.path)
        _remove(Path(e.path))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def within(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether `path`, resolved (symlinks followed), lies inside directory `root` (resolved too):
    the test every path read from a file (a store's row, a result, a manifest) passes before it
    is opened."""
    r, p = Path(root).resolve(), Path(path).resolve()
    return r in p.parents


def refuse_overlap(out: str | os.PathLike[str], reads: list[tuple[str, str | os.PathLike[str] | None]],
                   option: str = "--out", file: bool = False) -> None:
    """Refuse an output that is, holds or lies inside a path the same command reads, (what, path)
    in `reads`: so that `--overwrite` never deletes an input and a write never adds to one.

    Paths are compared resolved (symlinks, `..`). A `file` output may sit at the top of an
    input directory (DATA/separability.json) unless it is one of the files a dataset is made of.
    """
    o = Path(out).resolve()
    for what, p in reads:
        if p is None:
            continue
        r = Path(p).resolve()
        if o == r:
            rel = "is"
        elif o in r.parents:
            rel = "holds"
        elif r in o.parents and not (file and o.parent == r and o.name != "manifest.json" and o.suffix != ".npy"):
            rel = "lies inside"
        else:
            continue
        raise UnlearnableError(f"{option} {out}: {rel} {what} {p}, which this command reads; "
                               f"choose another {option}")
