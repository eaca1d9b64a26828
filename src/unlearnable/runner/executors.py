"""Run jobs: in process (`local`) or as Ray tasks (`ray`); the driver alone writes the store.

    summary = run_jobs(specs, store, JobContext(out_root), executor="local")   # an audit, a demo
    summary = run_grid(grid, store, out_root, executor="ray", address=None)  # a grid (a local Ray)

Only jobs that are not `done` run (and `failed` ones only with `retry_failed`); a job left
`running` by a killed driver runs again (its training resumes from the last epoch checkpoint).
A job whose dependency failed is not started (`blocked`).

Ray: each job is a `ray.remote` task (`num_gpus=1` when CUDA is used, `num_cpus=1` otherwise);
a dependent job gets its dependencies' object refs as arguments, so Ray starts it only after
they finished, and the driver records results as they arrive (`ray.wait`). Workers write
artifacts under `out_root` (a shared filesystem on a cluster; a worker that cannot see a
dependency's files regenerates them from the spec, which is deterministic).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import UnlearnableError, versions
from .jobs import JobContext, Spec, dependencies, job_key, run_job
from .store import ResultStore

EXECUTORS = ("local", "ray")


@dataclass
class GridSummary:
    total: int = 0  # jobs in the grid (dependencies included)
    cached: int = 0  # already done before this run
    ran: list[str] = field(default_factory=list)  # keys completed now
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # not started: a dependency failed
    skipped_failed: list[str] = field(default_factory=list)  # failed earlier, no --retry-failed
    seconds: float = 0.0


def _execute(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    """Run one job and package the outcome; never raises (the driver records failures)."""
    t0 = time.perf_counter()
    host = socket.gethostname()
    try:
        result = run_job(spec, ctx, deps)
        return {"ok": True, "result": result, "seconds": time.perf_counter() - t0, "host": host,
                "versions": versions()}
    except Exception as e:  # noqa: BLE001 - any failure of a cell is recorded, not fatal to the grid
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0, "host": host}


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


def plan(jobs: list[Spec], store: ResultStore, retry_failed: bool = False) -> tuple[list[Spec], GridSummary]:
    """Register the jobs in the store; return those to run now (dependencies first)."""
    summary = GridSummary()
    todo: list[Spec] = []
    for spec in jobs:
        key = store.add(spec)
        summary.total += 1
        st = store.status(key)
        if st == "done":
            summary.cached += 1
        elif st == "failed" and not retry_failed:
            summary.skipped_failed.append(key)
        else:
            todo.append(spec)
    return todo, summary


def _record(store: ResultStore, key: str, out: dict[str, Any], summary: GridSummary) -> None:
    if out["ok"]:
        store.finish(key, out["result"], out["seconds"], out["host"], out["versions"])
        summary.ran.append(key)
    else:
        store.fail(key, out["error"], out["traceback"], out["seconds"], out["host"])
        summary.failed.append(key)


def run_jobs(specs: list[Spec], store: ResultStore, ctx: JobContext, executor: str = "local",
             address: str | None = None, retry_failed: bool = False, known: dict[str, Any] | None = None,
             on_start: Callable[[Spec, int, int], None] | None = None,
             on_done: Callable[[str, dict[str, Any]], None] | None = None,
             ray_init: dict[str, Any] | None = None) -> GridSummary:
    """Run every job of `specs` (and their dependencies) that `store` has not finished.

    known: key -> result of jobs finished elsewhere (the shared cache) that these depend on.
    on_start(spec, i, n) before each job runs locally; on_done(key, outcome) after each is
    recorded (progress lines; tests use it to interrupt a run mid-way).
    """
    if executor not in EXECUTORS:
        raise UnlearnableError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    t0 = time.perf_counter()
    known = dict(known or {})
    todo, summary = plan(expand(specs, known), store, retry_failed)
    ctx.out_root = Path(ctx.out_root).resolve()
    if executor == "local":
        _run_local(todo, store, ctx, known, summary, on_start, on_done)
    else:
        _run_ray(todo, store, ctx, known, address, summary, on_done, ray_init or {})
    summary.seconds = time.perf_counter() - t0
    return summary


def run_grid(grid: Any, store: ResultStore, out_root: str | os.PathLike[str], executor: str = "local",
             address: str | None = None, device: str = "auto", progress: bool | None = None,
             data_root: str | None = None, retry_failed: bool = False,
             on_done: Callable[[str, dict[str, Any]], None] | None = None,
             ray_init: dict[str, Any] | None = None) -> GridSummary:
    """Run every job of a reproduction grid that the store has not finished; record the grid."""
    store.save_grid(grid.grid_id, grid.layout())
    ctx = JobContext(Path(out_root), device, progress, data_root)
    return run_jobs([c.spec for c in grid.cells], store, ctx, executor, address, retry_failed,
                    on_done=on_done, ray_init=ray_init)


def _dep_results(spec: Spec, store: ResultStore, known: dict[str, Any]) -> dict[str, Any] | None:
    """key -> result of each dependency, or None when one is not done."""
    out = {}
    for d in dependencies(spec):
        k = job_key(d)
        if k in known:
            out[k] = known[k]
            continue
        row = store.get(k)
        if row is None or row["status"] != "done":
            return None
        out[k] = row["result"]
    return out


def _run_local(todo: list[Spec], store: ResultStore, ctx: JobContext, known: dict[str, Any],
               summary: GridSummary, on_start: Callable[[Spec, int, int], None] | None,
               on_done: Callable[[str, dict[str, Any]], None] | None) -> None:
    host = socket.gethostname()
    for i, spec in enumerate(todo, 1):  # expand() order: dependencies first
        key = job_key(spec)
        deps = _dep_results(spec, store, known)
        if deps is None:
            summary.blocked.append(key)
            continue
        if on_start is not None:
            on_start(spec, i, len(todo))
        store.start(key, host)
        out = _execute(spec, ctx, deps)
        _record(store, key, out, summary)
        if on_done is not None:
            on_done(key, out)


def _run_ray(todo: list[Spec], store: ResultStore, ctx: JobContext, known: dict[str, Any], address: str | None,
             summary: GridSummary, on_done: Callable[[str, dict[str, Any]], None] | None,
             ray_init: dict[str, Any]) -> None:
    try:
        import ray
    except ImportError:
        raise UnlearnableError("the ray executor needs Ray: pip install 'unlearnable[ray]'") from None
    if not todo:
        return
    started_here = not ray.is_initialized()
    if started_here:
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
        if address:
            kw["address"] = address
        else:
            kw["num_cpus"] = max(1, min(os.cpu_count() or 1, 2))
        # Workers import the package the driver runs; on a local instance make sure they find it.
        src = str(Path(__file__).resolve().parents[2])
        kw.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": os.pathsep.join(
            p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}})
        kw.update(ray_init)
        ray.init(**kw)
    try:
        import torch

        use_gpu = ctx.device.startswith("cuda") or (ctx.device == "auto" and torch.cuda.is_available())
        opts = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
        remote = ray.remote(**opts)(_ray_task)
        refs: dict[str, Any] = {}
        host = socket.gethostname()
        pending: dict[Any, str] = {}
        for spec in todo:  # dependencies first, so their refs exist when a dependent is submitted
            key = job_key(spec)
            dep_refs = []
            blocked = False
            for d in dependencies(spec):
                dk = job_key(d)
                if dk in refs:
                    dep_refs.append(refs[dk])
                elif dk in known:
                    dep_refs.append({"ok": True, "key": dk, "result": known[dk]})
                elif store.status(dk) == "done":
                    dep_refs.append({"ok": True, "key": dk, "result": store.get(dk)["result"]})
                else:
                    blocked = True
            if blocked:
                summary.blocked.append(key)
                continue
            store.start(key, host)
            refs[key] = remote.remote(spec, str(ctx.out_root), ctx.device, ctx.data_root, *dep_refs)
            pending[refs[key]] = key
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                key = pending.pop(ref)
                out = ray.get(ref)
                _record(store, key, out, summary)
                if on_done is not None:
                    on_done(key, out)
    finally:
        if started_here:
            ray.shutdown()


def _ray_task(spec: Spec, out_root: str, device: str, data_root: str | None, *deps: dict[str, Any]) -> dict[str, Any]:
    """A job on a Ray worker. `deps` are the dependencies' outcomes (object refs resolved by Ray,
    or results the driver already had), each with its key."""
    import torch

    bad = [d for d in deps if not d.get("ok")]
    if bad:
        return {"ok": False, "error": f"a dependency failed: {bad[0]['error']}", "traceback": "",
                "seconds": 0.0, "host": socket.gethostname()}
    # One thread per task: Ray packs one task per CPU, and more threads would oversubscribe.
    torch.set_num_threads(1)
    out = _execute(spec, JobContext(Path(out_root), device, False, data_root), {d["key"]: d["result"] for d in deps})
    out["key"] = job_key(spec)
    return out
