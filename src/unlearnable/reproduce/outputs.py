"""Rendered outputs of a grid: markdown, CSV, HTML (+ the Fig. 2 plot) from the result store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.files import atomic_file
from ..runner.store import ResultStore
from .tables import caption, html_page, plot_fig2, settings_note, table_data, to_csv, to_html_section, to_markdown


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
    note = settings_note(layout, jobs)
    if note is not None:
        md += f"\n{note}\n"
    if fig is not None:
        md += f"\n![DFR accuracy over epochs]({fig.name})\n"
    for kind, text in (("md", md), ("csv", to_csv(headers, rows)),
                       ("html", html_page([to_html_section(headers, rows, title, fig, note)], title))):
        with atomic_file(paths[kind], "w") as f:
            f.write(text)
    return paths
