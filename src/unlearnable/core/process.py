"""Facts about processes that locks and leftover files record: who is alive, which host, how
long to wait between two looks."""

from __future__ import annotations

import os
import re
import socket


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def host_tag() -> str:
    """This machine's name as it may stand in a file name (letters, digits, '-'; at most 16)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:16] or "host"


def wait_interval(n: int, first: float = 0.2, most: float = 5.0) -> float:
    """The `n`-th sleep of a poll: doubling from `first`, never longer than `most` seconds."""
    return min(first * 2 ** min(n, 30), most)
