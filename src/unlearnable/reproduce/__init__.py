"""Reproduce the paper's tables as resumable experiment grids over a SQLite result store.

    from unlearnable.reproduce import build_grid, ResultStore, run_grid, write_outputs
    grid = build_grid("table3", "digits", budget="tiny", methods=["random-noise", "regions"])
    with ResultStore("runs/results.sqlite") as store:
        summary = run_grid(grid, store, "runs/reproduce", executor="local")   # or "ray"
        paths = write_outputs(grid.layout(), store, "runs/reproduce")      # .md, .csv, .html

Each cell is a job spec (plain JSON) keyed by its sha256; finished jobs are never recomputed, a
killed grid resumes where it stopped, and the same spec in two tables runs once. The paper:
Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?", NeurIPS 2023,
https://arxiv.org/abs/2305.19254 (Tables 1, 2, 3, 4, 6 and Fig. 2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._io import atomic_file
from .executors import EXECUTORS, GridSummary, run_grid
from .grid import TABLES, Cell, Grid, build_grid, default_methods
from .jobs import canonical, job_dir, job_key, run_job
from .store import ResultStore
from .tables import caption, html_page, plot_fig2, table_data, to_csv, to_html_section, to_markdown


def grid_jobs(layout: dict[str, Any], store: ResultStore) -> dict[str, dict[str, Any]]:
    """key -> store row for every cell of a grid layout."""
    return {c["key"]: j for c in layout["cells"] if (j := store.get(c["key"])) is not None}


def write_outputs(layout: dict[str, Any], store: ResultStore, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write `<table>-<dataset>.md/.csv/.html` (+ `.png` for fig2) under `out`; return the paths."""
    out = Path(out)
    jobs = grid_jobs(layout, store)
    headers, rows = table_data(layout, jobs)
    title = caption(layout)
    stem = f"{layout['table']}-{Path(str(layout['dataset'])).name}"
    if len(layout.get("archs", [])) > 1 or layout["archs"] != ["convnet"]:
        stem += "-" + "-".join(layout["archs"])
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "html": out / f"{stem}.html"}
    fig = plot_fig2(layout, jobs, out / f"{stem}.png") if layout["table"] == "fig2" else None
    if fig is not None:
        paths["png"] = fig
    md = to_markdown(headers, rows, title)
    if fig is not None:
        md += f"\n![DFR accuracy over epochs]({fig.name})\n"
    for kind, text in (("md", md), ("csv", to_csv(headers, rows)),
                       ("html", html_page([to_html_section(headers, rows, title, fig)], title))):
        with atomic_file(paths[kind], "w") as f:
            f.write(text)
    return paths


__all__ = ["EXECUTORS", "TABLES", "Cell", "Grid", "GridSummary", "ResultStore", "build_grid", "canonical",
           "default_methods", "grid_jobs", "job_dir", "job_key", "run_grid", "run_job", "table_data",
           "to_csv", "to_markdown", "write_outputs"]
