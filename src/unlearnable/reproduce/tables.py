"""Render a grid's results as the paper lays them out: Markdown, CSV, JSON, an HTML section, Fig. 2.

`table_data(layout, results)` turns a grid layout (from the store) and its jobs' results into
`(headers, rows)` of strings; the paper's CIFAR-10 ResNet-18 numbers (/work/shared/PAPER.md, from
the paper's Tables 1, 2, 3 and 6) are added as columns when the dataset is CIFAR-10. Cells that
have not finished show "–" (pending) or "failed".
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

from ..auditor.steps import get_step
from ..core.text import for_html, for_md
from ..poisons import POISONS
from ..viz.html import figure as figure_html, page, table
from ..viz.plots import pyplot, save_figure
from .grid import TABLES
from .leaderboard import leaderboard_data

PAPER_TABLE1 = {"random-init": 35.97, "ue": 39.56, "ap": 69.99, "ar": 58.73, "ntga": 57.12, "rem": 41.02,
                "lsp": 43.31, "ops-em": 38.98, "ops": 47.70, "ue-cw": 34.09, "regions": 48.09,
                "random-noise": 66.79}
# Table 2: every poison's perturbations ~100 % linearly separable except AR; the clean row is the images.
PAPER_TABLE2 = {"clean": "53.88", "ar": "39.58", **{k: "~100" for k in
                ("ue", "ap", "ntga", "rem", "lsp", "ops-em", "ops", "ue-cw", "regions", "random-noise")}}
PAPER_TABLE6 = {"clean": "53.94", "ue": "100", "ap": "62.40", "ar": "53.97", "ntga": "31.48", "rem": "77.21",
                **{k: "100" for k in ("lsp", "ops-em", "ops", "ue-cw", "regions", "random-noise")}}
PAPER_TABLE3 = {  # none / adversarial training / orthogonal projection
    "clean": (94.37, 87.16, 90.16), "ue": (24.56, 85.64, 65.17), "ap": (7.96, 85.32, 14.74),
    "ar": (13.77, 84.09, 13.03), "ntga": (40.78, 84.85, 82.21), "rem": (26.86, 87.07, 25.83),
    "lsp": (25.75, 86.18, 87.99), "ops-em": (20.11, 12.22, 39.43), "ops": (15.35, 11.77, 87.94),
    "ue-cw": (14.49, 85.56, 89.98), "regions": (10.32, 85.74, 86.87), "random-noise": (10.03, 86.36, 90.37),
}


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage with `digits` decimals, or an en dash when pending."""
    return "–" if x is None else f"{100 * x:.{digits}f}"


def paper_row(method: str) -> str:
    """The paper's name for a row (the poison registry's `paper_name`; "clean" is "clean")."""
    return POISONS[method].paper_name if method in POISONS else method


def _paper(table: dict[str, Any], row: str) -> str:
    v = table.get(paper_row(row))
    return "–" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def _is_cifar10(layout: dict[str, Any]) -> bool:
    return str(layout.get("dataset", "")).lower() in ("cifar10", "cifar-10")


def table_data(layout: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of strings for a grid. `jobs`: key -> store row (status, result)."""
    t = layout["table"]
    if t == "leaderboard":
        return leaderboard_data(layout, jobs)
    cell = {(c["row"], c["col"]): jobs.get(c["key"]) for c in layout["cells"]}
    paper = _is_cifar10(layout)

    def res(row: str, col: str) -> dict[str, Any] | None:
        j = cell.get((row, col))
        return j["result"] if j and j["status"] == "done" else None

    def missing(row: str, col: str) -> str:
        j = cell.get((row, col))
        return "failed" if j and j["status"] == "failed" else "–"

    def val(row: str, col: str, f) -> str:
        r = res(row, col)
        return missing(row, col) if r is None else f(r)

    rows: list[list[str]] = []
    if t in ("table1", "fig2"):
        headers = ["training data", "max DFR acc (%)", "epoch", "min DFR loss", "epoch",
                   "gain over random init (pts)", "standard test acc (%)"]
        if paper:
            headers.append("paper max DFR acc (CIFAR-10 RN-18)")
        inits = [r for m in layout["rows"] if (r := res(m, "dfr"))]
        init = inits[0] if inits else None
        rows.append(["random init", pct(init["random_init_dfr_accuracy"]) if init else "–", "0",
                     f"{init['random_init_dfr_loss']:.4f}" if init else "–", "0", "", ""]
                    + ([_paper(PAPER_TABLE1, "random-init")] if paper else []))
        for m in layout["rows"]:
            r = res(m, "dfr")
            vals = [pct(r["max_dfr_accuracy"]), str(r["max_dfr_epoch"]), f"{r['min_dfr_loss']:.4f}",
                    str(r["min_dfr_epoch"]), f"{100 * r['gain_over_random_init']:+.2f}",
                    pct(r["final_standard_test_accuracy"])] if r else [missing(m, "dfr")] + [""] * 5
            rows.append([m] + vals + ([_paper(PAPER_TABLE1, m)] if paper else []))
    elif t == "table4":
        headers = ["training data"] + [f"{a} max DFR acc (%)" for a in layout["cols"]]
        inits = {a: next((r for m in layout["rows"] if (r := res(m, a))), None) for a in layout["cols"]}
        rows.append(["random init"] + [pct(inits[a]["random_init_dfr_accuracy"]) if inits[a] else "–"
                                       for a in layout["cols"]])
        for m in layout["rows"]:
            rows.append([m] + [val(m, a, lambda r: pct(r["max_dfr_accuracy"])) for a in layout["cols"]])
    elif t in ("table2", "table6"):
        col = layout["cols"][0]
        what = "perturbations" if t == "table2" else "images"
        headers = ["training data", f"linear separability of the {what}: train acc (%)"]
        if paper:
            headers.append("paper (CIFAR-10)")
        for m in layout["rows"]:
            if t == "table2":
                v = val(m, col, lambda r: pct(r["train_accuracy_mean"]) + (" (images)" if r.get("of") == "images" else ""))
            else:
                v = val(m, col, lambda r: f"{pct(r['train_accuracy_mean'])} ± {pct(r['train_accuracy_std'])}")
            rows.append([m, v] + ([_paper(PAPER_TABLE2 if t == "table2" else PAPER_TABLE6, m)] if paper else []))
    elif t == "steps":
        infos = {c: get_step(c) for c in layout["cols"]}
        headers = ["training data"] + [infos[c].title for c in layout["cols"]]
        for m in layout["rows"]:
            rows.append([m] + [val(m, c, infos[c].headline) if (m, c) in cell else "n/a" for c in layout["cols"]])
    else:  # table3
        headers = ["training data", "none (%)", "adversarial training (%)", "orthogonal projection (%)",
                   "ortho-proj, plain / projected test (%)"]
        if paper:
            headers += ["paper none", "paper adv. training", "paper ortho-proj"]
        for m in layout["rows"]:
            def op_best(r: dict[str, Any]) -> str:
                return pct(max(v for v in (r.get("test_accuracy"), r.get("test_accuracy_transformed_test"))
                               if v is not None))

            def op_both(r: dict[str, Any]) -> str:
                return f"{pct(r.get('test_accuracy'))} / {pct(r.get('test_accuracy_transformed_test'))}"

            row = [m, val(m, "none", lambda r: pct(r["test_accuracy"])),
                   val(m, "adv-train", lambda r: pct(r["test_accuracy"])),
                   val(m, "ortho-proj", op_best), val(m, "ortho-proj", op_both)]
            if paper:
                p = PAPER_TABLE3.get(paper_row(m))
                row += [f"{v:.2f}" for v in p] if p else ["–"] * 3
            rows.append(row)
    return headers, rows


# What a job records that changes its last digits without changing the job (so the store reuses
# a cell computed under another): cells computed under different values cannot be compared digit for digit.
DIGIT_SETTINGS = ("torch", "numpy", "torch_threads", "cpu_capability", "mkl_cbwr")


def settings_note(layout: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> str | None:
    """A line saying which of `DIGIT_SETTINGS` the finished cells of a grid disagree on, with how
    many cells had each value; None when they agree (or fewer than two cells finished)."""
    done = [j.get("versions") or {} for c in layout["cells"] if (j := jobs.get(c["key"])) and j["status"] == "done"]
    seen = {name: Counter(str(v.get(name, "unrecorded")) for v in done) for name in DIGIT_SETTINGS}
    mixed = {name: vals for name, vals in seen.items() if len(vals) > 1}
    if not mixed:
        return None
    which = "; ".join(f"{name} " + ", ".join(f"{val} ({n} cells)" for val, n in sorted(vals.items()))
                      for name, vals in mixed.items())
    return (f"note: the cells were computed under different {which}: numbers can differ in their "
            "last digits from one such setting to the other (docs/reproduce.md); rerun them on one "
            "kind of machine with one --threads to compare digit for digit")


def caption(layout: dict[str, Any]) -> str:
    """A grid's caption: the table's title, the dataset, subset, architectures, level and seed."""
    sub = f", subset {layout['subset']}" if layout.get("subset") else ""
    seeds = layout.get("seeds")
    seed = f"seeds {', '.join(map(str, seeds))}" if seeds else f"seed {layout['seed']}"
    return (f"{TABLES[layout['table']]} — {layout['dataset']}{sub}, {', '.join(layout['archs'])}, "
            f"level {layout.get('level', layout.get('budget'))}, {seed}")


def to_markdown(headers: list[str], rows: list[list[str]], title: str = "") -> str:
    """A table as Markdown, under an optional title."""
    lines = [f"### {for_md(title, 400)}", ""] if title else []
    lines.append("| " + " | ".join(for_md(h) for h in headers) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(for_md(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(headers: list[str], rows: list[list[str]]) -> str:
    """A table as CSV text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    w.writerows(rows)
    return buf.getvalue()


def to_html_section(headers: list[str], rows: list[list[str]], title: str, figure: Path | None = None,
                    note: str | None = None) -> str:
    """A self-contained `<section>` (the figure inlined as base64), made with the shared page
    helpers (`viz.html`) the audit's report uses too; `note` (`settings_note`) under the table."""
    esc = [[for_html(c) for c in r] for r in rows]
    fig = figure_html(figure.parent, figure.name, "DFR accuracy over epochs") if figure is not None else ""
    below = f"<p>{for_html(note)}</p>" if note else ""
    return (f"<section><h2>{for_html(title)}</h2>{table([for_html(h) for h in headers], esc)}{below}"
            f"{fig}</section>")


def html_page(sections: list[str], title: str) -> str:
    """A self-contained page of table sections (`to_html_section`)."""
    return page(title, f"<h1>{for_html(title)}</h1>" + "".join(sections))


def plot_fig2(layout: dict[str, Any], jobs: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Fig. 2: DFR test accuracy over epochs, one line per training set, random init dashed."""
    plt = pyplot()
    curves = {}
    init = None
    for c in layout["cells"]:
        j = jobs.get(c["key"])
        if j and j["status"] == "done":
            r = j["result"]
            curves[c["row"]] = r["curve"]
            init = r["random_init_dfr_accuracy"]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves.items():
        ax.plot([p["epoch"] for p in curve], [100 * p["dfr_accuracy"] for p in curve], marker="o", ms=3, label=name)
    if init is not None:
        ax.axhline(100 * init, ls="--", c="grey", label="random init")
    ax.set_xlabel("epoch")
    ax.set_ylabel("DFR test accuracy (%)")
    ax.set_title(f"DFR over training — {layout['dataset']}, {layout['archs'][0]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, tight=False)
