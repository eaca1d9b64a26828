"""Run jobs: in process (`local`) or as Ray tasks (`ray`); drivers alone write the store.

    summary = run_jobs(specs, store, JobContext(out_root), executor="local")   # an audit, a demo
    summary = run_grid(grid, store, out_root, executor="ray", address=None)  # a grid (a local Ray)

Only jobs that are not `done` run (and `failed` ones only with `retry_failed`); a job left
`running` by a killed driver runs again (its training resumes from the last epoch checkpoint).
A job whose dependency failed is not started (`blocked`).

Several drivers may work on one store at once (two `reproduce` runs on one --db; audits that
share the cache): each job runs in the driver that claims it (`ResultStore.claim`), exactly once.
A driver that reaches a job, or a dependency, that another live driver is running goes on with
other jobs and polls (sleeps of at most `POLL_MOST` seconds) until it is finished, then uses its
result; it never runs it a second time and never records anything on it.

Ray: each job is a `ray.remote` task (`num_gpus=1` when CUDA is used, `num_cpus=1` otherwise);
a dependent job gets its dependencies' object refs as arguments, so Ray starts it only after
they finished, and the driver records results as they arrive (`ray.wait`). Workers write
artifacts under `out_root` (a shared filesystem on a cluster; a worker that cannot see a
dependency's files regenerates them from the spec, which is deterministic).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import UnlearnableError, versions
from .._lock import wait_interval
from .jobs import JobContext, Spec, dependencies, get_kind, job_key, run_job
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
    outputs), so that it starts over; only ever inside `ctx.out_root`."""
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
             ray_init: dict[str, Any] | None = None, restart: bool = False) -> GridSummary:
    """Run every job of `specs` (and their dependencies) that `store` has not finished.

    known: key -> result of jobs finished elsewhere (the shared cache) that these depend on.
    on_start(spec, i, n) before each job runs locally; on_done(key, outcome) after each is
    recorded (progress lines; tests use it to interrupt a run mid-way). restart: a job this
    driver takes over starts from nothing (`discard_artifacts`) instead of resuming.
    """
    if executor not in EXECUTORS:
        raise UnlearnableError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    t0 = time.perf_counter()
    known = dict(known or {})
    todo, summary = plan(expand(specs, known), store, retry_failed)
    ctx.out_root = Path(ctx.out_root).resolve()
    sched = _Scheduler(todo, store, ctx, known, summary, _retryable(store, todo) if retry_failed else {}, restart)
    if executor == "local":
        _run_local(sched, ctx, on_start, on_done)
    else:
        _run_ray(sched, ctx, address, on_done, ray_init or {})
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


def _run_ray(sched: _Scheduler, ctx: JobContext, address: str | None,
             on_done: Callable[[str, dict[str, Any]], None] | None, ray_init: dict[str, Any]) -> None:
    try:
        import ray
    except ImportError:
        raise UnlearnableError("the ray executor needs Ray: pip install 'unlearnable[ray]'") from None
    if not sched.pending:
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
        mine: dict[str, Any] = {}  # key -> ref of a job submitted here and not yet recorded
        pending: dict[Any, str] = {}
        while sched.pending or pending:
            progressed = False
            for spec in list(sched.pending):  # dependencies first, so their refs exist for dependents
                if spec not in sched.pending:
                    continue
                what, deps = sched.next(spec, mine)
                progressed = progressed or what != "wait"
                if what != "go":
                    continue
                key = job_key(spec)
                args = [v if dk in mine else {"ok": True, "key": dk, "result": v} for dk, v in (deps or {}).items()]
                mine[key] = remote.remote(spec, str(ctx.out_root), ctx.device, ctx.data_root, *args)
                pending[mine[key]] = key
            wait_s = sched.idle(progressed) if sched.pending else None
            if not pending:
                time.sleep(wait_s or 0.0)
                continue
            done, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            for ref in done:
                key = pending.pop(ref)
                out = ray.get(ref)
                _record(sched.store, key, out, sched.summary)
                mine.pop(key, None)
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
