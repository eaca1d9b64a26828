"""The one job runner: job specs keyed by content, a SQLite result store, local and Ray executors.

Audits, the demo and the reproduction grids all compute through `run_jobs`; see `jobs.py`.
"""

from .executors import EXECUTORS, GridSummary, expand, run_grid, run_jobs
from .jobs import JOBS, JobContext, JobKind, Spec, canonical, get_kind, job_dir, job_key, register_job, run_job
from .store import ResultStore

__all__ = ["EXECUTORS", "GridSummary", "expand", "run_grid", "run_jobs", "JOBS", "JobContext", "JobKind", "Spec",
           "canonical", "get_kind", "job_dir", "job_key", "register_job", "run_job", "ResultStore"]
