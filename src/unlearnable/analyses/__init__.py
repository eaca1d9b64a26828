"""Audits: measure what a protected dataset still leaks. One registry, `AUDITS`.

An audit is a function with its own inputs (a run directory for DFR, a dataset for
separability); the registry records what each one takes and where it comes from, so the CLI and
the full report can list and dispatch them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AuditInfo:
    name: str
    fn: Callable[..., dict[str, Any]]
    target: str  # "run" (a training run directory) or "data" (a dataset)
    summary: str
    paper: str = ""


AUDITS: dict[str, AuditInfo] = {}


def register_audit(name: str, target: str, summary: str, paper: str = ""):
    def deco(fn: Callable[..., dict[str, Any]]):
        AUDITS[name] = AuditInfo(name, fn, target, summary, paper)
        return fn
    return deco


from . import dfr, separability  # noqa: E402,F401  (register)
from .dfr import dfr_curve, dfr_features, dfr_head  # noqa: E402
from .separability import separability as separability_score  # noqa: E402
from .separability import separability_of  # noqa: E402

__all__ = ["AUDITS", "AuditInfo", "register_audit", "dfr_curve", "dfr_features", "dfr_head",
           "separability_score", "separability_of"]
