"""Job specs and job kinds: the one mechanism by which audits and grids compute, store and reuse.

A job spec is a JSON object that says everything that determines the job's result and nothing
else: `kind` plus the kind's fields. Its key is the sha256 of its canonical JSON, so the same
experiment asked for by an audit, a demo row and a grid is one job and runs once. Keys that begin
with `_` are *hints* (where to find data already on disk, a display name): they travel with the
spec but are not part of its identity.

This module, the store, the scheduler and the executors are generic: they know job specs,
kinds and results, not what a kind computes. The domain's kinds (training, attacks, DFR, ...)
register themselves from `unlearnable.kinds`, whose `data.py` says how a spec names its data.
Job kinds live in `JOBS` with their run function, dependencies and cost (`register_job`);
`run_job(spec, ctx, deps)` runs one, `expand(specs)` lists every job specs need.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.device import resolve_device
from ..core.hashing import canonical_json, digest_json
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
    return canonical_json(identity_of(spec))


def job_key(spec: Spec) -> str:
    """sha256 hex of the spec's canonical JSON: the job's identity in a result store."""
    return digest_json(identity_of(spec))


def method_of(spec: Spec) -> str:
    """A short label for file names and tables: the `method` a spec, or the data spec it names
    (`data`, or its training run's), says its data comes from, "clean" for clean data, else ""."""
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
    _device: torch.device | None = field(default=None, init=False, repr=False, compare=False)

    def dir_of(self, spec: Spec) -> Path:
        """Where job `spec` keeps its artifacts."""
        return self.place(spec) if self.place is not None else job_dir(self.out_root, spec)

    @property
    def torch_device(self) -> torch.device:
        """`device` resolved on this machine (once: a Ray worker resolves "auto" on its own node)."""
        if self._device is None:
            self._device = resolve_device(self.device)
        return self._device


RunFn = Callable[[Spec, JobContext, dict[str, Any]], dict[str, Any]]


def _no_deps(spec: Spec) -> list[Spec]:
    return []


def _no_passes(spec: Spec, n_train: int, n_test: int) -> float:
    return 0.0


@dataclass(frozen=True)
class JobKind:
    """How to run one kind of job. run(spec, ctx, deps) -> JSON-able result, where deps maps each
    dependency's key to its result; deps(spec) -> the jobs that must finish first; passes(spec,
    n_train, n_test) -> training sample-passes, the cost model's unit; intact(spec, dir) ->
    whether a finished job's artifacts can still be read (None: nothing to check), which a
    `restart` asks before it trusts a job finished earlier."""

    name: str
    run: RunFn
    deps: Callable[[Spec], list[Spec]] = _no_deps
    passes: Callable[[Spec, int, int], float] = _no_passes
    title: str = ""  # what progress lines call a job of this kind
    intact: Callable[[Spec, Path], bool] | None = None


JOBS: dict[str, JobKind] = {}


def register_job(name: str, run: RunFn, deps: Callable[[Spec], list[Spec]] | None = None,
                 passes: Callable[[Spec, int, int], float] | None = None, title: str = "",
                 intact: Callable[[Spec, Path], bool] | None = None) -> JobKind:
    """Register job kind `name` (see `JobKind`); the kinds of the domain register themselves from
    `unlearnable.kinds` when the package is imported."""
    kind = JobKind(name, run, deps or _no_deps, passes or _no_passes, title or name, intact)
    JOBS[name] = kind
    return kind


def get_kind(name: str) -> JobKind:
    """The registered job kind `name`, or a one-line error naming the known ones."""
    return lookup(JOBS, name, "job kind")


def dependencies(spec: Spec) -> list[Spec]:
    """The jobs that must finish before `spec`, as its kind says (training before DFR, the
    protected set before its training)."""
    return list(get_kind(spec["kind"]).deps(spec))


def expand(specs: list[Spec], known: dict[str, Any] | None = None) -> list[Spec]:
    """Every job `specs` need, each once, dependencies before their dependents; jobs whose
    results are `known` (finished in another store) are not expanded."""
    known = known or {}
    seen: dict[str, Spec] = {}

    def add(spec: Spec) -> None:
        key = job_key(spec)
        if key in known or key in seen:
            return
        for d in dependencies(spec):
            add(d)
        seen[key] = spec

    for s in specs:
        add(s)
    return list(seen.values())


def run_job(spec: Spec, ctx: JobContext, deps: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one job; return its result (JSON-able)."""
    return get_kind(spec["kind"]).run(spec, ctx, dict(deps or {}))
