"""Local jobs side by side: independent jobs in `workers` processes, each with its pinned threads.

On a few cores, several one-thread jobs at once use the machine better than one job spread over
every core: a small model's step is too short to keep two threads busy (see docs/reproduce.md
for the measurement). Each worker is a fresh (spawned) process that imports the package and
runs jobs through the same `execute.execute` as the in-process executor, with the same pinned thread
count, so the numbers are those of `workers=1`. A job starts only when its dependencies are
recorded; the driver alone writes the store.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from .execute import execute_elsewhere, portable
from .jobs import JobContext, Spec, dependencies, job_key
from .scheduler import Scheduler, record


def run_pool(sched: Scheduler, ctx: JobContext, workers: int,
             on_start: Callable[[Spec, int, int], None] | None,
             on_done: Callable[[str, dict[str, Any]], None] | None) -> None:
    """Run the scheduler's jobs in `workers` spawned processes, each with its pinned threads, recording
    each outcome here."""
    where = {**portable(ctx), "threads": ctx.threads or 1}
    running: dict[Future, str] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        while sched.pending or running:
            busy = set(running.values())

            def waits(spec: Spec) -> bool:
                # A dependency running here is not finished: its dependent waits for the record
                # (the scheduler would take this driver's own claim for a stale one).
                return any(job_key(d) in busy for d in dependencies(spec))

            for spec, deps in sched.ready({}, on_start, blocked=waits, room=lambda: len(running) < workers):
                key = job_key(spec)
                args = [{"ok": True, "key": dk, "result": v} for dk, v in deps.items()]
                running[pool.submit(execute_elsewhere, spec, where, *args)] = key
                busy.add(key)
            progressed = sched.progressed
            if not running:
                time.sleep(sched.idle(progressed))
                continue
            wait_s = sched.idle(progressed) if sched.pending else None
            done, _ = wait(list(running), timeout=wait_s, return_when=FIRST_COMPLETED)
            for fut in done:
                key = running.pop(fut)
                try:
                    out = fut.result()
                except Exception as e:  # noqa: BLE001 - a worker process that died (killed, out of memory)
                    out = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": "",
                           "seconds": 0.0, "host": ""}
                record(sched.store, key, out, sched.summary)
                if on_done is not None:
                    on_done(key, out)
