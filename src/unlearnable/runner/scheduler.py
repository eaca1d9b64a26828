"""Which job a driver runs next, and what it records: the scheduling every executor shares.

    todo, summary = plan(expand(specs), store)          # register the jobs, keep the unfinished
    sched = Scheduler(todo, store, ctx, known, summary, retry, restart)
    what, deps = sched.next(spec, mine)                  # "go" (claimed, deps' results), "wait", "gone"
    record(store, key, outcome, summary)                 # the driver alone writes the store

Before a run, `supersede` and `repair` bring the store and the artifacts in line with the jobs
asked for: a job recorded at the place a new job needs (the same attack with other settings)
gives way to it; a finished job whose artifacts no longer read (its kind's `intact` says) is
made pending again, under `restart`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core.errors import UnlearnableError
from ..core.files import within
from ..core.hashing import sha256_file
from ..core.process import wait_interval
from .jobs import JOBS, JobContext, Spec, dependencies, get_kind, job_dir, job_key
from .store import ResultStore

log = logging.getLogger(__name__)

POLL_MOST = 5.0  # seconds: the longest sleep between two looks at jobs other drivers run
CONFLICTS = ("supersede", "refuse")


@dataclass
class GridSummary:
    """What a run of `run_jobs` did: how many jobs, which ran, failed, were blocked or finished
    elsewhere, and how long it took."""
    total: int = 0  # jobs in the grid (dependencies included)
    cached: int = 0  # done before this run, or by another driver while this one waited
    ran: list[str] = field(default_factory=list)  # keys completed now
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # not started: a dependency failed
    skipped_failed: list[str] = field(default_factory=list)  # failed earlier, no --retry-failed
    seconds: float = 0.0
    elsewhere: list[str] = field(default_factory=list)  # finished by another driver during this run


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


def retryable(store: ResultStore, todo: list[Spec]) -> dict[str, int]:
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
        log.info("restart: discarding the unfinished %s in %s/%s", spec["kind"], ctx.storage.url, rel_dir(spec))
        ctx.storage.remove(rel_dir(spec))
        return
    d = Path(ctx.dir_of(spec)).resolve()
    root = Path(ctx.out_root).resolve()
    if d != root and root in d.parents and d.is_dir():
        log.info("restart: discarding the unfinished %s in %s", spec["kind"], d)
        shutil.rmtree(d)


def rel_dir(spec: Spec) -> str:
    """A job's directory relative to the artifacts' root (the default layout)."""
    return job_dir("", spec).as_posix()


def supersede(store: ResultStore, specs: list[Spec], ctx: JobContext, how: str = "supersede") -> None:
    """Jobs recorded in `store` at the place one of `specs` needs, with another identity (the same
    attack asked for now with other parameters or recipe, or on other data): with "supersede"
    their record and unfinished files give way; with "refuse", one that finished (or that a live
    driver runs) is a one-line error naming the place, and nothing changes, while one that failed
    or never finished gives way as with "supersede"."""
    if how not in CONFLICTS:
        raise UnlearnableError(f"conflicts must be one of {', '.join(CONFLICTS)}, got {how!r}")
    current = {job_key(s) for s in specs}
    places = {Path(ctx.dir_of(s)).resolve(): job_key(s) for s in specs}
    for row in store.jobs():
        if row["key"] in current or not isinstance(row.get("spec"), dict):
            continue
        try:
            d = Path(ctx.dir_of(row["spec"])).resolve()
        except (KeyError, TypeError, ValueError):
            continue
        if d not in places:
            continue
        live = row["status"] == "running" and store.owner_alive(row.get("owner"))
        if how == "refuse" and (row["status"] == "done" or live):
            what = JOBS[row["spec"]["kind"]].title if row["spec"].get("kind") in JOBS else "a job"
            raise UnlearnableError(f"{d}: holds {what} {_label(row['spec'])}made on other data or with other "
                                   "settings; use another --out")
        log.info("superseded: the earlier %s in %s (other settings) is replaced", row["spec"].get("kind"), d)
        if live:
            continue  # another driver's: leave it to the directory lock's owner
        now = store.get(places[d])
        if now is None or now["status"] != "done":  # the files there are the old job's
            discard_artifacts(row["spec"], ctx)
        store.delete(row["key"])


def _label(spec: Spec) -> str:
    name = spec.get("attack") or spec.get("method") or ""
    return f"{name!r} " if name else ""


def repair(store: ResultStore, specs: list[Spec], ctx: JobContext) -> None:
    """Under restart: a finished job whose artifacts no longer read (a checkpoint DFR will load,
    cut short) is made pending and its directory discarded, so it runs again."""
    for s in specs:
        kind = get_kind(s["kind"])
        row = store.get(job_key(s))
        if kind.intact is None or row is None or row["status"] != "done":
            continue
        if not kind.intact(s, Path(ctx.dir_of(s))):
            log.info("restart: the finished %s in %s no longer reads; it runs again", s["kind"], ctx.dir_of(s))
            if store.reset(job_key(s)):
                discard_artifacts(s, ctx)


def verify(store: ResultStore, specs: list[Spec], ctx: JobContext) -> None:
    """Finished jobs whose record or files changed since they were written (a result edited in
    the store, a checkpoint swapped or edited: checked against the checksums `finish` recorded)
    run again from nothing, each with a warning naming what changed. Files a job's
    dependents added to its directory later (a figure) are not its own and are not checked."""
    for s in specs:
        key = job_key(s)
        row = store.get(key)
        if row is None or row["status"] != "done":
            continue
        what = None
        if not store.result_intact(key):
            what = f"{store.path}: the recorded result of {s['kind']} job {key[:12]}"
        elif isinstance(row.get("files"), dict) and not (ctx.storage is not None and ctx.storage.remote):
            d = Path(ctx.dir_of(s))
            for rel, digest in row["files"].items():
                p = d / rel
                if not within(d, p) or not p.is_file() or sha256_file(p) != digest:
                    what = f"{p}"
                    break
        if what is None:
            continue
        log.warning("%s changed after its job finished (checksum); the %s runs again", what,
                    get_kind(s["kind"]).title)
        if store.reset(key):
            discard_artifacts(s, ctx)


class Scheduler:
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
        self.total, self.started = len(self.pending), 0
        self.progressed = False

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

    def take(self, spec: Spec, mine: dict[str, Any],
             on_start: Callable[[Spec, int, int], None] | None = None) -> tuple[str, dict[str, Any] | None]:
        """`next`, and for a job this driver is to run now, the progress callback `on_start(spec,
        i, n)` (the i-th job started here of about n)."""
        what, deps = self.next(spec, mine)
        if what == "go":
            self.started += 1
            if on_start is not None:
                on_start(spec, self.started, max(self.total, self.started))
        return what, deps

    def ready(self, mine: dict[str, Any], on_start: Callable[[Spec, int, int], None] | None = None,
              blocked: Callable[[Spec], bool] | None = None,
              room: Callable[[], bool] | None = None) -> Iterator[tuple[Spec, dict[str, Any]]]:
        """(spec, dependency results) of each pending job this driver claims now, dependencies
        first, as long as `room()` says another can start; `blocked(spec)` passes a job over for
        this look. Afterwards `progressed` says whether the look changed anything."""
        self.progressed = False
        for spec in list(self.pending):
            if room is not None and not room():
                break
            if spec not in self.pending or (blocked is not None and blocked(spec)):
                continue
            what, deps = self.take(spec, mine, on_start)
            self.progressed = self.progressed or what != "wait"
            if what == "go":
                yield spec, deps or {}

    def idle(self, progressed: bool) -> float:
        """Seconds to wait before the next look when nothing could be done (0 after progress)."""
        if progressed:
            self.polls = 0
            return 0.0
        self.polls += 1
        return wait_interval(self.polls - 1, most=POLL_MOST)


def record(store: ResultStore, key: str, out: dict[str, Any], summary: GridSummary) -> None:
    """Record a job's outcome in the store (this driver's claim only) and in the summary."""
    if out["ok"]:
        mine = store.finish(key, out["result"], out["seconds"], out["host"], out["versions"], out.get("files"))
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


