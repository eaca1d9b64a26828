"""Run jobs: in process (`local`), side by side in local processes, or as Ray tasks (`ray`);
drivers alone write the store.

    summary = run_jobs(specs, store, JobContext(out_root), executor="local")   # an audit, a demo
    summary = run_jobs(specs, store, ctx, executor="ray", address=None)        # a grid (a local Ray)

Only jobs that are not `done` run (and `failed` ones only with `retry_failed`); a job left
`running` by a killed driver runs again (its training resumes from the last epoch checkpoint).
A job whose dependency failed is not started (`blocked`). A finished job is never computed
again: the store is the one place results are reused from.

Several drivers may work on one store at once (two `reproduce` runs on one --db; audits that
share the cache): each job runs in the driver that claims it (`ResultStore.claim`), exactly once.
A driver that reaches a job, or a dependency, that another live driver is running goes on with
other jobs and polls (sleeps of at most `POLL_MOST` seconds) until it is finished, then uses its
result; it never runs it a second time and never records anything on it.

Every job runs with a pinned thread count (`JobContext.threads`, recorded in its `versions`):
a grid pins 1, so the local executor, a pool of local workers and Ray give the same numbers.
Artifacts live behind one storage (`storage.py`): a directory (shared by the nodes, on a
cluster) or an fsspec URL, from which each job copies its inputs and to which it copies its
outputs, so nodes need no shared mount. Ray: see `ray_executor.py`; local processes: `pool.py`;
the scheduling all three share: `scheduler.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import UnlearnableError
from .execute import execute
from .jobs import JobContext, Spec, expand, job_key
from .pool import run_pool
from .ray_executor import run_ray
from .scheduler import GridSummary, Scheduler, plan, record, repair, retryable, supersede, verify
from .store import ResultStore

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


def run_jobs(specs: list[Spec], store: ResultStore, ctx: JobContext, executor: str = "local",
             address: str | None = None, retry_failed: bool = False, known: dict[str, Any] | None = None,
             on_start: Callable[[Spec, int, int], None] | None = None,
             on_done: Callable[[str, dict[str, Any]], None] | None = None,
             ray_init: dict[str, Any] | None = None, restart: bool = False, workers: int = 1,
             conflicts: str | None = None, raise_errors: bool = False) -> GridSummary:
    """Run every job of `specs` (and their dependencies) that `store` has not finished.

    known: key -> result of jobs finished elsewhere (the shared cache) that these depend on.
    on_start(spec, i, n) before each job runs locally; on_done(key, outcome) after each is
    recorded (progress lines; tests use it to interrupt a run mid-way). restart: a job this
    driver takes over starts from nothing (`discard_artifacts`) instead of resuming.
    workers: with the local executor, how many independent jobs run side by side (each in its
    own process, with `ctx.threads` threads, 1 when unset); 1 runs them here, one after another.
    conflicts: what happens to a job recorded earlier at the place one of these needs, with
    another identity (`scheduler.supersede`): "supersede" (it gives way), "refuse" (a one-line
    error), None (places are not compared: the default layout keys every place by its job).
    Under `restart`, finished jobs whose artifacts no longer read run again (`scheduler.repair`).
    raise_errors: the first job that fails raises its error here, after its failure is recorded
    (what a library call that runs one job wants); the local executor only.
    """
    if executor not in EXECUTORS:
        raise UnlearnableError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UnlearnableError(f"workers must be an integer >= 1, got {workers!r}")
    if raise_errors and (executor != "local" or workers > 1):
        raise UnlearnableError("raise_errors: only the local executor, one job at a time, raises a job's error")
    t0 = time.perf_counter()
    known = dict(known or {})
    jobs = expand(specs, known)
    if ctx.storage is None or not ctx.storage.remote:
        ctx.out_root = Path(ctx.out_root).resolve()
    if conflicts is not None:
        supersede(store, jobs, ctx, conflicts)
    verify(store, jobs, ctx)
    if restart:
        repair(store, jobs, ctx)
    todo, summary = plan(jobs, store, retry_failed)
    sched = Scheduler(todo, store, ctx, known, summary, retryable(store, todo) if retry_failed else {}, restart)
    if executor == "ray":
        run_ray(sched, ctx, address, on_done, ray_init or {})
    elif workers > 1 and len(todo) > 1:
        run_pool(sched, ctx, workers, on_start, on_done)
    else:
        _run_local(sched, ctx, on_start, on_done, raise_errors)
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_local(sched: Scheduler, ctx: JobContext, on_start: Callable[[Spec, int, int], None] | None,
               on_done: Callable[[str, dict[str, Any]], None] | None, raise_errors: bool = False) -> None:
    while sched.pending:
        for spec, deps in sched.ready({}, on_start):
            key = job_key(spec)
            out = execute(spec, ctx, deps)
            exc = out.pop("exception", None)
            record(sched.store, key, out, sched.summary)
            if on_done is not None:
                on_done(key, out)
            if raise_errors and not out["ok"]:
                raise exc if exc is not None else UnlearnableError(out["error"])
        time.sleep(sched.idle(sched.progressed))
