"""How an artifact records what made it: the versions of everything that can change a result,
and the time in one format (UTC, ISO 8601, seconds).

    versions()   # {"unlearnable": "0.1.0", "python": ..., "torch": ..., "numpy": ..., ...}
    now_iso()    # "2026-12-07T00:37:36+00:00"
"""

from __future__ import annotations

import importlib
import platform
from datetime import datetime, timezone
from importlib import metadata

import numpy as np

from .version import __version__


def _version(dist: str, module: str) -> str:
    """An installed distribution's version; for one importable without metadata (a source build
    on PYTHONPATH), its module's `__version__`."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))


def versions() -> dict[str, str]:
    """Versions of everything that can change a result, recorded in every manifest. Read from the
    installed distributions' metadata, so recording them imports neither torch nor scikit-learn."""
    return {
        "unlearnable": __version__,
        "python": platform.python_version(),
        "torch": _version("torch", "torch"),
        "numpy": np.__version__,
        "scikit-learn": _version("scikit-learn", "sklearn"),
        "platform": platform.platform(),
    }


def now_iso() -> str:
    """The time now, UTC, ISO 8601 to the second (what every artifact records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
