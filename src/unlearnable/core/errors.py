"""The errors every layer raises, and how a message is kept to one line.

`UnlearnableError` is what the command reports as one line (no traceback) with exit code 2;
`DataError` is one that names the file at fault. Library messages can be paragraphs (torch's,
scipy's), so `one_line` folds and cuts whatever reaches the user.
"""

from __future__ import annotations

import os


class UnlearnableError(Exception):
    """An error the CLI reports as one line (no traceback) with a non-zero exit."""


class DataError(UnlearnableError):
    """A data file is missing, corrupted, of the wrong shape or untrusted. Names the file."""

    def __init__(self, path: str | os.PathLike[str], problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def one_line(e: BaseException | str, limit: int = 200) -> str:
    """An exception's text on one line, cut to `limit` characters (library messages can be
    paragraphs, and the CLI promises one line)."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
