"""`unlearnable results [--table TABLE]`: list the result store's jobs, or export a reproduced table.

    unlearnable results                                  # every job: status, kind, headline number
    unlearnable results --table table3 --format csv --out table3.csv
    unlearnable results --table table1 --dataset cifar10 --db runs/cluster.sqlite
    unlearnable results --format json --out all.json     # every job with spec, result, timings
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..core.errors import UnlearnableError
from ..core.files import atomic_file, refuse_overlap
from ..reproduce import TABLES, ResultStore, grid_jobs, table_data, to_csv, to_markdown
from ..reproduce.tables import caption, settings_note
from .common import out_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable results` sub-command to the parser."""
    p = sub.add_parser("results", help="list and export the result store (tables, CSV, JSON)",
                       description="List the jobs of the result store, or render the grids of --table.")
    p.add_argument("--db", default="runs/results.sqlite", type=out_file,
                   help="result store (default runs/results.sqlite)")
    p.add_argument("--table", choices=list(TABLES), default=None, help="render this table's grids")
    p.add_argument("--dataset", default=None, help="only grids of this dataset (with --table)")
    p.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format")
    p.add_argument("--out", default=None, type=out_file, help="write to FILE instead of standard output")
    p.set_defaults(func=run)


def headline(job: dict[str, Any]) -> str:
    """A job's one number for the listing (max DFR, best or final test accuracy, separability),
    or its error."""
    r = job.get("result") or {}
    for k, fmt in (("max_dfr_accuracy", "max DFR {:.2%}"), ("test_accuracy_best", "best {:.2%}"),
                   ("test_accuracy", "test {:.2%}"), ("train_accuracy_mean", "separability {:.2%}")):
        if r.get(k) is not None:
            return fmt.format(r[k])
    return job.get("error") or ""


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable results` with the parsed arguments; the exit code."""
    if args.out:
        refuse_overlap(args.out, [("the result store", args.db)], file=True)
    with ResultStore(args.db, create=False) as store:
        if args.table:
            grids = [g for g in store.grids(args.table) if args.dataset in (None, g["dataset"])]
            if not grids:
                raise UnlearnableError(f"{args.db}: no {args.table} grid recorded"
                                       + (f" for {args.dataset}" if args.dataset else ""))
            parts = []
            for g in grids:
                layout = g["layout"]
                jobs = grid_jobs(layout, store)
                headers, rows = table_data(layout, jobs)
                note = settings_note(layout, jobs)
                if args.format == "json":
                    parts.append({"caption": caption(layout), "layout": layout, "headers": headers, "rows": rows,
                                  "note": note, "jobs": jobs})
                elif args.format == "csv":
                    parts.append(f"# {caption(layout)}\n" + (f"# {note}\n" if note else "") + to_csv(headers, rows))
                else:
                    parts.append(to_markdown(headers, rows, caption(layout)) + (f"\n{note}\n" if note else ""))
            text = json.dumps(parts, indent=2) + "\n" if args.format == "json" else "\n".join(parts)
        else:
            jobs = store.jobs()
            if args.format == "json":
                text = json.dumps(jobs, indent=2) + "\n"
            else:
                headers = ["key", "status", "kind", "method", "detail", "seconds", "host", "finished", "headline"]
                rows = []
                for j in jobs:
                    s = j["spec"]
                    data = s.get("data") or s.get("run", {}).get("data") or s
                    detail = s.get("attack") or s.get("of") or s.get("arch") or s.get("run", {}).get("arch", "")
                    rows.append([j["key"][:12], j["status"], j["kind"], data.get("method", ""), detail,
                                 "" if j["seconds"] is None else f"{j['seconds']:.1f}", j["host"] or "",
                                 j["finished"] or "", headline(j)])
                text = to_csv(headers, rows) if args.format == "csv" else _plain(headers, rows)
                counts = store.counts()
                if args.format == "table":
                    text += "\n" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "\n"
    if args.out:
        with atomic_file(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _plain(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headers, *rows]) + "\n"
