"""What every registry shares: a name -> entry dict, and one way to look a name up."""

from __future__ import annotations

from typing import TypeVar

from .errors import UnlearnableError

T = TypeVar("T")


def lookup(registry: dict[str, T], name: str, what: str, also: str = "") -> T:
    """`registry[name]`, or a one-line error naming what is known (`also`: other accepted forms)."""
    if name not in registry:
        known = ", ".join(sorted(registry)) + (f", {also}" if also else "")
        raise UnlearnableError(f"unknown {what} {name!r} (known: {known})")
    return registry[name]


def lookup_all(registry: dict[str, T], names: list[str] | tuple[str, ...], what: str) -> list[T]:
    """Every `names` entry, or one line naming all the unknown ones at once."""
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise UnlearnableError(f"unknown {what} {', '.join(map(repr, unknown))} (known: {', '.join(sorted(registry))})")
    return [registry[n] for n in names]
