"""Job specs and job kinds: the one mechanism by which audits and grids compute, store and reuse.

A job spec is a JSON object that says everything that determines the job's result and nothing
else: `kind` plus the kind's fields. Its key is the sha256 of its canonical JSON, so the same
experiment asked for by an audit, a demo row and a grid is one job and runs once. Keys that begin
with `_` are *hints* (where to find data already on disk, a display name): they travel with the
spec but are not part of its identity.

Data inside a spec is identified by content (`unlearnable.data.identity.content_id`):

    {"content": "sha256:...", "_path": "/abs/runs/lsp"}                    a dataset directory
    {"content": "sha256:...", "clean": "fashion-mnist", "_base_of": path}  the clean images behind one
    {"content": "sha256:...", "clean": "digits", "_subset": 120, "_seed": 0}  a seeded subset of a base
    {"method": "regions", "params": {}, "dataset": "digits", "subset": 120, "seed": 0, "level": "tiny"}
                                                                           a poison made from its spec

The last form is made by a `poison` job first (it is deterministic: same spec, same bytes); a
loaded set is checked against the `content` it claims. Job kinds live in `JOBS` with their run
function, dependencies and cost (`register_job`); `run_job(spec, ctx, deps)` runs one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.registry import lookup

Spec = dict[str, Any]


def identity_of(spec: Any) -> Any:
    """The spec without its hints (keys starting with `_`), recursively."""
    if isinstance(spec, dict):
        return {k: identity_of(v) for k, v in spec.items() if not str(k).startswith("_")}
    if isinstance(spec, list):
        return [identity_of(v) for v in spec]
    return spec


def canonical(spec: Spec) -> str:
    """The canonical JSON text of a spec's identity (sorted keys, no whitespace, ASCII)."""
    return json.dumps(identity_of(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def job_key(spec: Spec) -> str:
    """sha256 hex of the spec's canonical JSON: the job's identity in a result store."""
    return hashlib.sha256(canonical(spec).encode()).hexdigest()


def method_of(spec: Spec) -> str:
    """A short label for file names and tables (the row's method, or "clean")."""
    if spec.get("method"):
        return str(spec["method"])
    for d in (spec.get("data") or {}, (spec.get("run") or {}).get("data") or {}):  # data specs
        if d.get("method"):
            return str(d["method"])
        if d.get("clean"):
            return "clean"
    return ""


def job_dir(out_root: str | os.PathLike[str], spec: Spec) -> Path:
    """Where a job keeps its artifacts by default: `OUT/jobs/<kind>-<method>-<key[:16]>`."""
    return Path(out_root) / "jobs" / f"{spec['kind']}-{method_of(spec)}-{job_key(spec)[:16]}"


@dataclass
class JobContext:
    """Where and how jobs run: none of it is part of a job's identity.

    place(spec) -> the job's artifact directory (default `job_dir(out_root, spec)`): the audit
    maps its jobs onto its own layout (train-protected/, attacks/NAME/).
    storage: where artifacts live when that is not `out_root` itself (`storage.open_storage`,
    an fsspec URL): each job then runs in a scratch `out_root` filled from and copied back to it.
    threads: torch (and BLAS) threads each job runs with, recorded with its result; None keeps
    the process's setting. Numbers depend on it (sums split over threads round differently), so
    a grid pins it to get the same table from any executor on any machine."""

    out_root: Path
    device: str = "auto"
    progress: bool | None = False
    data_root: str | None = None
    place: Callable[[Spec], Path] | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # loaded data by content, within one process
    storage: Any = None
    threads: int | None = None

    def dir_of(self, spec: Spec) -> Path:
        return self.place(spec) if self.place is not None else job_dir(self.out_root, spec)


@dataclass(frozen=True)
class JobKind:
    """How to run one kind of job. run(spec, ctx, deps) -> JSON-able result, where deps maps each
    dependency's key to its result; deps(spec) -> the jobs that must finish first; passes(spec,
    n_train, n_test) -> training sample-passes, the cost model's unit."""

    name: str
    run: Callable[[Spec, JobContext, dict[str, Any]], dict[str, Any]]
    deps: Callable[[Spec], list[Spec]] = lambda spec: []
    passes: Callable[[Spec, int, int], float] = lambda spec, n_train, n_test: 0.0
    title: str = ""  # what progress lines call a job of this kind


JOBS: dict[str, JobKind] = {}


def register_job(name: str, run: Callable[[Spec, JobContext, dict[str, Any]], dict[str, Any]],
                 deps: Callable[[Spec], list[Spec]] | None = None,
                 passes: Callable[[Spec, int, int], float] | None = None, title: str = "") -> JobKind:
    kind = JobKind(name, run, deps or (lambda spec: []), passes or (lambda spec, n, t: 0.0), title or name)
    JOBS[name] = kind
    return kind


def get_kind(name: str) -> JobKind:
    # The built-in kinds are registered when the package is imported (unlearnable/__init__.py).
    return lookup(JOBS, name, "job kind")


def poison_spec_of(data: Spec) -> Spec:
    return {"kind": "poison", **data}


def dependencies(spec: Spec) -> list[Spec]:
    """The jobs that must finish before `spec`: a poison made from its spec before its uses, plus
    what the kind itself needs (training before DFR)."""
    deps: list[Spec] = []
    data = spec.get("data")
    if isinstance(data, dict) and data.get("method") and data.get("method") != "clean":
        deps.append(poison_spec_of(data))
    return deps + list(get_kind(spec["kind"]).deps(spec))


def run_job(spec: Spec, ctx: JobContext, deps: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one job; return its result (JSON-able). Finished artifacts in its directory are reused."""
    return get_kind(spec["kind"]).run(spec, ctx, dict(deps or {}))
