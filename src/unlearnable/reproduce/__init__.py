"""Reproduce the paper's tables as resumable experiment grids over a SQLite result store.

    from unlearnable.reproduce import build_grid, ResultStore, run_grid, write_outputs
    grid = build_grid("table3", "digits", level="tiny", methods=["random-noise", "regions"])
    with ResultStore("runs/results.sqlite") as store:
        summary = run_grid(grid, store, "runs/reproduce", executor="local")   # or "ray"
        paths = write_outputs(grid.layout(), store, "runs/reproduce")      # .md, .csv, .html

Each cell is a job spec (plain JSON) keyed by its sha256; finished jobs are never recomputed, a
killed grid resumes where it stopped, and the same spec in two tables runs once. The paper:
Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?", NeurIPS 2023,
https://arxiv.org/abs/2305.19254 (Tables 1, 2, 3, 4, 6 and Fig. 2).
"""

from ..runner import EXECUTORS, GridSummary, ResultStore, canonical, job_dir, job_key, run_job
from .grid import TABLES, Cell, Grid, build_grid, default_methods, run_grid
from .outputs import grid_jobs, write_outputs
from .tables import table_data, to_csv, to_markdown

__all__ = ["EXECUTORS", "TABLES", "Cell", "Grid", "GridSummary", "ResultStore", "build_grid", "canonical",
           "default_methods", "grid_jobs", "job_dir", "job_key", "run_grid", "run_job", "table_data",
           "to_csv", "to_markdown", "write_outputs"]
