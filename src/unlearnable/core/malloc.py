"""Keep glibc's allocator from handing a training step's buffers back to the kernel.

A CPU training step allocates and frees the same few activation buffers (megabytes each) over
and over, from torch's OpenMP threads as well as the main one. With glibc's defaults those frees
trim the heaps or unmap the blocks, so the next step maps the pages again and the kernel zeroes
them: a fresh `unlearnable train` of 60,000 Fashion-MNIST images took 2-8 million page faults and
9-25 s of system time out of 38-57 s (measured by hand; `benchmarks/malloc.py` repeats it). Fixing both
thresholds (blocks under 32 MiB come from the heap, and a heap keeps up to 2 GiB of free top)
makes the faults 0.12 million and the same training 25-36 s, with the same weights: the
allocator's policy changes where memory comes from, never what is computed.

The command (`unlearnable ...`), the runner's worker processes and the benchmarks call
`tune_malloc()` once at start; a program that imports the library can call it too.
UNLEARNABLE_MALLOC=system keeps glibc's defaults. Elsewhere than Linux with glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest accepted value (half its 64 MiB heap size)
TRIM_THRESHOLD = 2**31 - 1  # an int: the most mallopt takes
ENV = "UNLEARNABLE_MALLOC"

_applied: bool | None = None


def tune_malloc() -> bool:
    """Fix glibc's trim and mmap thresholds for this process (once); True when they are set."""
    global _applied
    if _applied is not None:
        return _applied
    want = os.environ.get(ENV, "").strip().lower()
    if want not in ("", "tuned", "system"):
        log.warning("%s=%s: expected 'tuned' or 'system'; keeping glibc's defaults", ENV, want)
        want = "system"
    if want == "system" or not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        _applied = False
        return _applied
    try:
        libc = ctypes.CDLL("libc.so.6")
        # Setting either disables glibc's sliding thresholds; both are needed (one alone faults more).
        _applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        _applied = False
    log.debug("malloc thresholds %s", "fixed" if _applied else "left as they are")
    return _applied
