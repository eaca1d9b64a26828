"""Run jobs: in process (`local`), side by side in local processes, or as Ray tasks (`ray`);
drivers alone write the store.

    summary = run_jobs(specs, store, JobContext(out_root), executor="local")   # an audit, a demo
    summary = run_grid(grid, store, out_root, executor="ray", address=None)  # a grid (a local Ray)
    summary = run_grid(grid, store, out_root, artifacts="s3://bucket/t3", executor="ray", address="HOST:6379")

Only jobs that are not `done` run (and `failed` ones only with `retry_failed`); a job left
`running` by a killed driver runs again (its training resumes from the last epoch checkpoint).
A job whose dependency failed is not started (`blocked`).

Several drivers may work on one store at once (two `reproduce` runs on one --db; audits that
share the cache): each job runs in the driver that claims it (`ResultStore.claim`), exactly once.
A driver that reaches a job, or a dependency, that another live driver is running goes on with
other jobs and polls (sleeps of at most `POLL_MOST` seconds) until it is finished, then uses its
result; it never runs it a second time and never records anything on it.

Every job runs with a pinned thread count (`JobContext.threads`, recorded in its `versions`):
a grid pins 1, so the local executor, a pool of local workers and Ray give the same numbers.
Artifacts live behind one storage (`storage.py`): a directory (shared by the nodes, on a
cluster) or an fsspec URL, from which each job copies its inputs and to which it copies its
outputs, so nodes need no shared mount. Ray: see `ray_executor.py`; local processes: `pool.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UnlearnableError
from ..core.provenance import versions
from ..core.process import wait_interval
from ..core.malloc import tune_malloc
from .jobs import JobContext, Spec, dependencies, get_kind, job_dir, job_key, run_job
from .storage import open_storage, relocate, staged
from .store import ResultStore

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
POLL_MOST = 5.0  # seconds: the longest sleep between two looks at jobs other drivers run


@dataclass
class GridSummary:
    total: int = 0  # jobs in the grid (dependencies included)
    cached: int = 0  # done before this run, or by another driver while this one waited
    ran: list[str] = field(default_factory=list)  # keys completed now
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # not started: a dependency failed
    skipped_failed: list[str] = field(default_factory=list)  # failed earlier, no --retry-failed
    seconds: float = 0.0
    elsewhere: list[str] = field(default_factory=list)  # finished by another driver during this run


def _execute(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    """Run one job and package the outcome; never raises (the driver records failures). The job
    runs with `ctx.threads` threads (recorded in `versions`), in a scratch directory filled from
    and copied back to `ctx.storage` when that is a URL."""
    t0 = time.perf_counter()
    host = socket.gethostname()
    try:
        with pinned_threads(ctx.threads) as threads:
            if ctx.storage is not None and ctx.storage.remote:
                result = _run_staged(spec, ctx, deps)
            else:
                result = run_job(spec, ctx, deps)
        return {"ok": True, "result": result, "seconds": time.perf_counter() - t0, "host": host,
                "versions": {**versions(), "torch_threads": threads}}
    except Exception as e:  # noqa: BLE001 - any failure of a cell is recorded, not fatal to the grid
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0, "host": host}


def _rel(spec: Spec) -> str:
    return job_dir("", spec).as_posix()


def _run_staged(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    """`run_job` in a scratch directory holding the job's own and its dependencies' artifacts."""
    if ctx.place is not None:
        raise UnlearnableError("artifacts at a URL need the default job layout (no `place`)")
    own = _rel(spec)
    with staged(ctx.storage, [own, *(_rel(d) for d in dependencies(spec))], own) as scratch:
        result = run_job(spec, dataclasses.replace(ctx, out_root=scratch, cache={}), deps)
        return relocate(result, str(scratch), ctx.storage.url)


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Run with `threads` torch intra-op threads and BLAS/OpenMP threads (None: as they are);
    yields the torch thread count in effect. The previous settings come back afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads is None:
        yield before
        return
    try:
        from threadpoolctl import threadpool_limits
        limits: Any = threadpool_limits(limits=threads)
    except ImportError:  # scikit-learn brings it; without it only torch is pinned
        limits = contextlib.nullcontext()
    torch.set_num_threads(threads)
    try:
        with limits:
            yield threads
    finally:
        torch.set_num_threads(before)


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


def _retryable(store: ResultStore, todo: list[Spec]) -> dict[str, int]:
    """key -> attempts of each failed job in `todo`: retried only if no driver retried it since."""
    out = {}
    for spec in todo:
        row = store.get(job_key(spec))
        if row is not None and row["status"] == "failed":
            out[row["key"]] = row["attempts"]
    return out


def discard_artifacts(spec: Spec, ctx: JobContext) -> None:
    """Remove what an unfinished job left in its directory (checkpoints, metrics, partial
    outputs), so that it starts over; only ever inside `ctx.out_root` (or its storage)."""
    if ctx.storage is not None and ctx.storage.remote:
        log.info("restart: discarding the unfinished %s in %s/%s", spec["kind"], ctx.storage.url, _rel(spec))
        ctx.storage.remove(_rel(spec))
        return
    d = Path(ctx.dir_of(spec)).resolve()
    root = Path(ctx.out_root).resolve()
    if d != root and root in d.parents and d.is_dir():
        log.info("restart: discarding the unfinished %s in %s", spec["kind"], d)
        shutil.rmtree(d)


class _Scheduler:
    """Which of `todo` this driver runs next. Each look reads the store again: a job another
    driver finished is used, one it runs is waited for, one whose dependency failed is blocked,
    and one that is free is claimed (atomically: of two drivers, one wins)."""

    def __init__(self, todo: list[Spec], store: ResultStore, ctx: JobContext, known: dict[str, Any],
                 summary: GridSummary, retry: dict[str, int], restart: bool):
        self.pending = list(todo)
        self.store, self.ctx, self.known, self.summary = store, ctx, known, summary
        self.retry, self.restart = retry, restart
        self.polls = 0
        self.said: set[str] = set()

    def _drop(self, spec: Spec, into: list[str] | None) -> None:
        self.pending.remove(spec)
        if into is not None:
            into.append(job_key(spec))

    def _wait_note(self, spec: Spec, row: dict[str, Any], why: str) -> None:
        key = job_key(spec)
        if key not in self.said:
            self.said.add(key)
            owner = row.get("owner") or ""
            who = owner.partition("@")[2] or "another driver"
            log.info("waiting for %s (%s), %s in %s (%s)", get_kind(spec["kind"]).title, key[:12], why,
                     self.store.path, who)

    def _free(self, row: dict[str, Any]) -> bool:
        """Whether this driver may take the job in `row`."""
        if row["status"] == "pending":
            return True
        if row["status"] == "failed":
            return self.retry.get(row["key"]) == row["attempts"]
        if row["status"] == "running":
            # This store's own claim on a job still pending here: left by a run that was
            # interrupted (Ctrl-C) in this process, not one running now.
            return row.get("owner") == self.store.owner or not self.store.owner_alive(row.get("owner"))
        return False

    def next(self, spec: Spec, mine: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """("go", dependency results) when this driver claimed `spec` and should run it now;
        ("wait", None) when it, or a dependency, is being run elsewhere; ("gone", None) when it
        left `pending` (finished or failed elsewhere, or blocked). `mine`: key -> Ray object ref
        of jobs this driver submitted that have not finished; dependents may use those refs."""
        key = job_key(spec)
        row = self.store.get(key)
        if row is None:  # registered by plan(); a store emptied under us is not ours to refill
            self._drop(spec, self.summary.failed)
            return "gone", None
        if row["status"] == "done":
            self.summary.cached += 1
            self._drop(spec, self.summary.elsewhere)
            return "gone", None
        if not self._free(row):
            if row["status"] == "failed":  # failed in another driver while this one waited
                self._drop(spec, self.summary.failed)
                return "gone", None
            self._wait_note(spec, row, "which another process is running")
            return "wait", None
        deps: dict[str, Any] = {}
        for d in dependencies(spec):
            dk = job_key(d)
            if dk in self.known:
                deps[dk] = self.known[dk]
                continue
            if dk in self.summary.blocked or dk in self.summary.failed:
                # Its dependency will not run in this pass (it failed, or needs one that did):
                # neither can this, however many levels up the failure lies.
                self._drop(spec, self.summary.blocked)
                return "gone", None
            drow = self.store.get(dk)
            if drow is not None and drow["status"] == "done":
                deps[dk] = drow["result"]
            elif drow is None or (drow["status"] == "failed" and self.retry.get(dk) != drow["attempts"]):
                self._drop(spec, self.summary.blocked)
                return "gone", None
            elif dk in mine:
                deps[dk] = mine[dk]
            else:
                if d not in self.pending and self._free(drow):
                    self.pending.insert(self.pending.index(spec), d)  # nobody else will run it
                self._wait_note(spec, drow, "whose dependency is not finished")
                return "wait", None
        if not self.store.claim(key, row):
            return "wait", None  # another driver took it between the look and the claim
        if row["status"] == "running":
            log.info("taking over %s (%s): the process that was running it is gone", spec["kind"], key[:12])
        if self.restart:
            discard_artifacts(spec, self.ctx)
        self._drop(spec, None)
        return "go", deps

    def idle(self, progressed: bool) -> float:
        """Seconds to wait before the next look when nothing could be done (0 after progress)."""
        if progressed:
            self.polls = 0
            return 0.0
        self.polls += 1
        return wait_interval(self.polls - 1, most=POLL_MOST)


def _record(store: ResultStore, key: str, out: dict[str, Any], summary: GridSummary) -> None:
    if out["ok"]:
        mine = store.finish(key, out["result"], out["seconds"], out["host"], out["versions"])
    else:
        mine = store.fail(key, out["error"], out["traceback"], out["seconds"], out["host"])
    if not mine:
        # Another driver took the job over (this one looked gone): its record stands.
        log.warning("job %s was taken over by another process; its outcome here is not recorded", key[:12])
        summary.elsewhere.append(key)
    elif out["ok"]:
        summary.ran.append(key)
    else:
        summary.failed.append(key)


def run_jobs(specs: list[Spec], store: ResultStore, ctx: JobContext, executor: str = "local",
             address: str | None = None, retry_failed: bool = False, known: dict[str, Any] | None = None,
             on_start: Callable[[Spec, int, int], None] | None = None,
             on_done: Callable[[str, dict[str, Any]], None] | None = None,
             ray_init: dict[str, Any] | None = None, restart: bool = False, workers: int = 1) -> GridSummary:
    """Run every job of `specs` (and their dependencies) that `store` has not finished.

    known: key -> result of jobs finished elsewhere (the shared cache) that these depend on.
    on_start(spec, i, n) before each job runs locally; on_done(key, outcome) after each is
    recorded (progress lines; tests use it to interrupt a run mid-way). restart: a job this
    driver takes over starts from nothing (`discard_artifacts`) instead of resuming.
    workers: with the local executor, how many independent jobs run side by side (each in its
    own process, with `ctx.threads` threads, 1 when unset); 1 runs them here, one after another.
    """
    if executor not in EXECUTORS:
        raise UnlearnableError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UnlearnableError(f"workers must be an integer >= 1, got {workers!r}")
    t0 = time.perf_counter()
    known = dict(known or {})
    todo, summary = plan(expand(specs, known), store, retry_failed)
    if ctx.storage is None or not ctx.storage.remote:
        ctx.out_root = Path(ctx.out_root).resolve()
    sched = _Scheduler(todo, store, ctx, known, summary, _retryable(store, todo) if retry_failed else {}, restart)
    if executor == "ray":
        from .ray_executor import run_ray

        run_ray(sched, ctx, address, on_done, ray_init or {})
    elif workers > 1 and len(todo) > 1:
        from .pool import run_pool

        run_pool(sched, ctx, workers, on_start, on_done)
    else:
        _run_local(sched, ctx, on_start, on_done)
    summary.seconds = time.perf_counter() - t0
    return summary


GRID_THREADS = 1  # threads per grid job unless asked otherwise: the same table on every executor


def run_grid(grid: Any, store: ResultStore, out_root: str | os.PathLike[str], executor: str = "local",
             address: str | None = None, device: str = "auto", progress: bool | None = None,
             data_root: str | None = None, retry_failed: bool = False,
             on_done: Callable[[str, dict[str, Any]], None] | None = None,
             ray_init: dict[str, Any] | None = None, artifacts: str | None = None,
             threads: int = GRID_THREADS, workers: int = 1) -> GridSummary:
    """Run every job of a reproduction grid that the store has not finished; record the grid.

    artifacts: where job artifacts live (a directory or an fsspec URL; default `out_root`).
    threads: each job's pinned thread count (recorded with its result). workers: local jobs
    side by side (see `run_jobs`)."""
    store.save_grid(grid.grid_id, grid.layout())
    storage = open_storage(artifacts if artifacts is not None else out_root)
    root = Path(storage.url) if not storage.remote else Path(out_root)
    ctx = JobContext(root, device, progress, data_root, storage=storage, threads=threads)
    return run_jobs([c.spec for c in grid.cells], store, ctx, executor, address, retry_failed,
                    on_done=on_done, ray_init=ray_init, workers=workers)


def _run_local(sched: _Scheduler, ctx: JobContext, on_start: Callable[[Spec, int, int], None] | None,
               on_done: Callable[[str, dict[str, Any]], None] | None) -> None:
    n, i = len(sched.pending), 0
    while sched.pending:
        progressed = False
        for spec in list(sched.pending):  # expand() order: dependencies first
            if spec not in sched.pending:
                continue
            what, deps = sched.next(spec, {})
            if what == "wait":
                continue
            progressed = True
            if what != "go":
                continue
            i += 1
            if on_start is not None:
                on_start(spec, i, max(n, i))
            key = job_key(spec)
            out = _execute(spec, ctx, deps or {})
            _record(sched.store, key, out, sched.summary)
            if on_done is not None:
                on_done(key, out)
        time.sleep(sched.idle(progressed))


def portable(ctx: JobContext) -> dict[str, Any]:
    """What another process needs to rebuild `ctx` (a Ray task, a pool worker): plain values."""
    if ctx.place is not None:
        raise UnlearnableError("jobs with their own layout (`place`) run only in this process")
    return {"root": str(ctx.out_root), "storage": ctx.storage.url if ctx.storage is not None else None,
            "device": ctx.device, "data_root": ctx.data_root, "threads": ctx.threads}


def from_portable(d: dict[str, Any]) -> JobContext:
    storage = open_storage(d["storage"]) if d.get("storage") else None
    return JobContext(Path(d["root"]), d["device"], False, d["data_root"], storage=storage,
                      threads=d["threads"])


def execute_elsewhere(spec: Spec, where: dict[str, Any], *deps: dict[str, Any]) -> dict[str, Any]:
    """A job in another process (a Ray worker, a pool worker). `deps` are the dependencies'
    outcomes, each with its key; a failed one fails this job without running it."""
    tune_malloc()  # a worker process is a fresh one: the command's allocator settings
    bad = [d for d in deps if not d.get("ok")]
    if bad:
        return {"ok": False, "error": f"a dependency failed: {bad[0]['error']}", "traceback": "",
                "seconds": 0.0, "host": socket.gethostname(), "key": job_key(spec)}
    out = _execute(spec, from_portable(where), {d["key"]: d["result"] for d in deps})
    out["key"] = job_key(spec)
    return out
