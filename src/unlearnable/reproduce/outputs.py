"""Rendered outputs of a grid: markdown, CSV, HTML (+ the Fig. 2 plot) from the result store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.files import atomic_file
from ..runner.store import ResultStore
from .leaderboard import leaderboard_csv, leaderboard_html
from .tables import caption, html_page, plot_fig2, settings_note, table_data, to_csv, to_html_section, to_markdown


def grid_jobs(layout: dict[str, Any], store: ResultStore) -> dict[str, dict[str, Any]]:
    """key -> store row for every cell of a grid layout (and the leaderboard's crafting jobs)."""
    keys = [c["key"] for c in layout["cells"]] + [k for by_seed in (layout.get("crafting") or {}).values()
                                                   for k in by_seed.values()]
    return {k: j for k in keys if (j := store.get(k)) is not None}


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
    note = settings_note(layout, jobs)
    if note is not None:
        md += f"\n{note}\n"
    if fig is not None:
        md += f"\n![DFR accuracy over epochs]({fig.name})\n"
    if layout["table"] == "leaderboard":  # a line per cell and one colour-scaled page
        csv_text, html = leaderboard_csv(layout, jobs), leaderboard_html(layout, jobs, title)
    else:
        csv_text, html = to_csv(headers, rows), html_page([to_html_section(headers, rows, title, fig, note)], title)
    for kind, text in (("md", md), ("csv", csv_text), ("html", html)):
        with atomic_file(paths[kind], "w") as f:
            f.write(text)
    return paths
