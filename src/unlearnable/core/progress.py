"""Progress bars: one rule for when they show, one way to make them.

A long loop (training, crafting, DFR over checkpoints, a download) shows a tqdm bar on stderr
when `progress` is True, or when it is None (the default everywhere) and stderr is a terminal;
the CLI's `--no-progress` passes False. Library code never prints otherwise: messages go through
`logging`.

    with bar(total=steps, desc="train", progress=None) as b:
        b.update(1)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_enabled(progress: bool | None) -> bool:
    """Whether a bar shows: `progress` when given, else whether stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else bool(progress)


def bar(iterable: Iterable[Any] | None = None, *, total: int | float | None = None, desc: str = "",
        progress: bool | None = None, initial: int = 0, **kw: Any) -> tqdm:
    """A tqdm bar on stderr that leaves no line behind; hidden unless `progress_enabled(progress)`."""
    return tqdm(iterable, total=total, initial=initial, desc=desc, disable=not progress_enabled(progress),
                leave=False, dynamic_ncols=True, **kw)
