"""Advisory locks on files (`fcntl.flock`), so two processes never work in one place at once.

    with dir_lock(out, "audit"):          # a second audit of `out` is refused at once
        ...
    lock = FileLock(path); lock.acquire()  # blocking; lock.release()
    is_held(path)                          # does a live process hold it?
    with out_lock(out, root):              # one writer per output path, nothing made beside it

The kernel drops a flock when its holder dies (killed, crashed, machine rebooted), so a lock
file left behind never blocks anyone: the lock files themselves are left in place (removing one
while another process waits on it would let two in). Each holder writes who it is (pid, host,
start time) into the file so that a refused process can say who is in the way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UnlearnableError
from .provenance import now_iso

log = logging.getLogger(__name__)

LOCK_NAME = ".unlearnable.lock"


class LockHeld(UnlearnableError):
    """Another live process holds the lock."""


def _busy(e: OSError) -> bool:
    return e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def describe(holder: dict[str, Any] | None) -> str:
    """Who holds a lock, in words (pid, host, since when), from what its holder wrote."""
    if not holder:
        return "another process"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"


class FileLock:
    """An exclusive flock on `path` (created when missing), held until `release` or process exit."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, blocking: bool = True, what: str | None = None) -> bool:
        """Take the lock. Non-blocking: False when another process holds it. Blocking: wait,
        saying once (at INFO) who holds it, naming `what` it guards."""
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if not _busy(e):
                    raise
                if not blocking:
                    os.close(fd)
                    return False
                log.info("waiting for %s: %s is using it", what or self.path, describe(self.holder()))
                fcntl.flock(fd, fcntl.LOCK_EX)
            info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode() + b"\n", 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no stale holder for the next reader to report
            os.close(fd)  # closing the last descriptor drops the flock

    def holder(self) -> dict[str, Any] | None:
        """Who wrote the lock file last (pid, host, started), or None."""
        try:
            text = self.path.read_text()
            return json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_held(path: str | os.PathLike[str]) -> bool:
    """Whether a live process holds the flock on `path` (a missing file: no one). Creates nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as e:
        if _busy(e):
            return True
        raise
    finally:
        os.close(fd)  # also drops the shared lock taken just to look


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike[str], what: str, option: str = "--out") -> Iterator[FileLock]:
    """Hold `directory`'s lock for the block; refuse at once (one line, naming the directory
    and the holder) when another process holds it. `directory` must exist."""
    lock = FileLock(Path(directory) / LOCK_NAME)
    try:
        held = lock.acquire(blocking=False)
    except OSError as e:
        raise UnlearnableError(f"{directory}: cannot lock this directory ({e.strerror}); "
                               f"choose another {option}") from None
    if not held:
        raise LockHeld(f"{directory}: another {what} is using this directory ({describe(lock.holder())}); "
                       f"wait for it to finish or choose another {option}")
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def out_lock(out: str | os.PathLike[str], root: str | os.PathLike[str], option: str = "--out") -> Iterator[FileLock]:
    """Hold the lock of output path `out` (resolved, symlinks followed) for the block; refuse at
    once, in one line naming `out` and the holder, when another process writes it.

    The lock file lies under `root`/locks (the shared cache), named by a hash of the resolved
    path: a command writing a dataset, a run or a report takes it before its first write, and a
    command that is refused or fails has created nothing beside the user's files (a lock inside
    OUT would outlive a training that failed before its first epoch; one beside OUT would be
    left in the user's directory). `audit` and `demo` lock OUT itself (`dir_lock`): a directory
    they own and resume, where its lock tells anyone who looks that it is in use."""
    target = str(Path(out).resolve())
    name = hashlib.sha256(target.encode()).hexdigest()[:32]
    lock = FileLock(Path(root) / "locks" / f"{name}.lock")
    try:
        held = lock.acquire(blocking=False)
    except OSError as e:
        raise UnlearnableError(f"{root}: cannot make the lock of {out} there ({e.strerror}); "
                               "set UNLEARNABLE_CACHE to a writable directory") from None
    if not held:
        raise LockHeld(f"{out}: another process is writing it ({describe(lock.holder())}); "
                       f"wait for it to finish or choose another {option}")
    try:
        yield lock
    finally:
        lock.release()
