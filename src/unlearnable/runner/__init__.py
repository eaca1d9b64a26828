"""The one job runner: job specs keyed by content, a SQLite result store, local, pool and Ray
executors. Generic: it knows specs, kinds and results, never what a kind computes (the domain's
kinds register themselves from `unlearnable.kinds`).

    jobs.py          specs, keys, JobContext, the JOBS registry, expand
    store.py         ResultStore: the one place finished results are reused from
    storage.py       where artifacts live: a directory or an fsspec URL
    scheduler.py     which job a driver runs next; supersede, repair, record
    execute.py       one job anywhere: pinned threads, staged artifacts, its outcome
    executors.py     run_jobs: local, side by side (pool.py) or on Ray (ray_executor.py)

Audits, the demo and the reproduction grids all compute through `run_jobs`.
"""

from .executors import EXECUTORS, run_jobs
from .jobs import (
    JOBS, JobContext, JobKind, Spec, canonical, dependencies, expand, get_kind, job_dir, job_key, register_job,
    run_job,
)
from .scheduler import GridSummary
from .store import ResultStore

__all__ = ["EXECUTORS", "run_jobs", "JOBS", "JobContext", "JobKind", "Spec", "canonical", "dependencies", "expand",
           "get_kind", "job_dir", "job_key", "register_job", "run_job", "GridSummary", "ResultStore"]
