"""Typed parameters from `--param key=value` strings, for poisons and attacks alike.

Each method declares a dataclass of parameters whose defaults are the original paper's; the CLI
gives strings, converted here by the field's annotation. Floats accept fractions ("8/255") since
that is how the field writes perturbation bounds.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, TypeVar

from .errors import UnlearnableError

T = TypeVar("T")


def parse_number(text: str, kind: type) -> Any:
    """An int or float from text; floats may be fractions ("8/255"). A one-line error otherwise."""
    t = text.strip()
    try:
        if kind is int:
            return int(t)
        if "/" in t:
            num, den = t.split("/", 1)
            return float(num) / float(den)
        return float(t)
    except (ValueError, ZeroDivisionError):
        raise UnlearnableError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def _convert(text: str, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        non_none = [a for a in args if a is not type(None)]
        if text.lower() in {"none", "null", ""} and type(None) in args:
            return None
        return _convert(text, non_none[0], name)
    if origin is tuple:
        inner = args[0] if args else str
        return tuple(_convert(p, inner, name) for p in text.split(",") if p.strip())
    if tp is bool:
        low = text.lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off"}:
            return False
        raise UnlearnableError(f"parameter {name}: expected true/false, got {text!r}")
    if tp in (int, float):
        try:
            value = parse_number(text, tp)
        except UnlearnableError as e:
            raise UnlearnableError(f"parameter {name}: {e}") from None
        # No parameter means anything at nan or inf, and a nan passes every range check
        # (nan > 1 is False) to surface hours later as a nan loss or a wrong verdict.
        if not math.isfinite(value):
            raise UnlearnableError(f"parameter {name}: expected a finite number, got {text!r}")
        return value
    return text


def from_params(cls: type[T], params: dict[str, str] | None, **fixed: Any) -> T:
    """An instance of dataclass `cls` from string params; unknown keys are a clear error."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kw: dict[str, Any] = dict(fixed)
    for k, v in (params or {}).items():
        if k not in fields:
            raise UnlearnableError(
                f"unknown parameter {k!r} for {cls.__name__} (known: {', '.join(sorted(fields))})")
        kw[k] = _convert(v, hints[k], k) if isinstance(v, str) else v
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise UnlearnableError(f"{cls.__name__}: {e}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A parameters dataclass as a JSON-able dict (tuples as lists): what manifests and job specs
    record."""
    d = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
