"""The leaderboard: every poison against every attack of a level's panel, over seeds, with the
compute each cell cost (`unlearnable reproduce leaderboard`).

    unlearnable reproduce leaderboard --dataset fashion-mnist --level quick --subset 20000 --seeds 3

`summarize(layout, jobs)` reduces the grid's cells (row, column, seed) to one entry per
(row, column): the accuracies per seed, their mean, sample std and 95 % t interval, the mean
seconds per job (each job at one pinned torch thread, so its wall time is its CPU time on an
idle machine), and per row the worst case (the attack whose mean is highest: for a protector
the defence to fear) and per column the mean over the poison rows. `leaderboard_data` renders
it as table strings (Markdown, CSV); `leaderboard_html` as one self-contained page whose cells
are coloured by the fraction of the clean reference they recover.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ..attacks import ATTACKS, best_accuracy
from ..core.stats import mean_interval
from ..core.text import for_html
from ..viz.html import page, table

BROKEN = 0.8  # the audit's default line (verdict.Thresholds.broken_fraction): a cell at or above it is bold


def _done(jobs: dict[str, dict[str, Any]], key: str | None) -> dict[str, Any] | None:
    j = jobs.get(key) if key else None
    return j if j is not None and j["status"] == "done" else None


def summarize(layout: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The leaderboard's numbers from a grid layout and its jobs (key -> store row)."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for c in layout["cells"]:
        e = cells.setdefault((c["row"], c["col"]), {"acc": [], "seconds": [], "failed": 0, "pending": 0})
        j = jobs.get(c["key"])
        if j is not None and j["status"] == "done":
            e["acc"].append(best_accuracy(j["result"]))
            e["seconds"].append(j.get("seconds") or 0.0)
        elif j is not None and j["status"] == "failed":
            e["failed"] += 1
        else:
            e["pending"] += 1
    for e in cells.values():
        if e["acc"]:
            e["mean"], e["std"], iv = mean_interval(e["acc"])
            e["interval"] = None if iv is None else (max(0.0, iv[0]), min(1.0, iv[1]))
            e["seconds_mean"] = sum(e["seconds"]) / len(e["seconds"])
    rows, cols = layout["rows"], layout["cols"]
    clean = cells.get(("clean", "none"), {}).get("mean")
    crafting: dict[str, float] = {}
    for m, by_seed in (layout.get("crafting") or {}).items():
        secs = [j.get("seconds") or 0.0 for k in by_seed.values() if (j := _done(jobs, k))]
        if secs:
            crafting[m] = sum(secs) / len(secs)
    worst: dict[str, tuple[str, float] | None] = {}
    for m in rows:
        cand = [(a, cells[(m, a)]["mean"]) for a in cols
                if (m, a) in cells and "mean" in cells[(m, a)] and not _oracle(a)]
        worst[m] = max(cand, key=lambda t: t[1]) if cand else None
    per_attack: dict[str, float | None] = {}
    for a in cols:
        vals = [cells[(m, a)]["mean"] for m in rows if m != "clean" and "mean" in cells.get((m, a), {})]
        per_attack[a] = sum(vals) / len(vals) if vals else None
    return {"cells": cells, "clean": clean, "worst": worst, "per_attack": per_attack, "crafting": crafting,
            "seeds": layout.get("seeds") or [layout.get("seed", 0)]}


def _oracle(attack: str) -> bool:
    return attack in ATTACKS and ATTACKS[attack].oracle


def _cell_text(e: dict[str, Any] | None) -> str:
    if e is None:
        return "n/a"
    if not e["acc"]:
        return "failed" if e["failed"] else "–"
    text = f"{100 * e['mean']:.1f}" + (f" ± {100 * e['std']:.1f}" if e["std"] is not None else "")
    if e["pending"] or e["failed"]:
        text += f" ({len(e['acc'])} of {len(e['acc']) + e['pending'] + e['failed']} seeds)"
    return text


def _col_title(a: str) -> str:
    return a + (" (oracle)" if _oracle(a) else "")


def leaderboard_data(layout: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of strings: a row per training set, mean ± std over seeds (%) per
    attack, the worst case and the crafting seconds; then the mean per attack over the poisons
    and the mean seconds per job of each column."""
    s = summarize(layout, jobs)
    cols = layout["cols"]
    headers = ["training data", *(_col_title(a) for a in cols), "worst case (attack)", "crafting (s)"]
    out: list[list[str]] = []
    for m in layout["rows"]:
        w = s["worst"][m]
        craft = s["crafting"].get(m)
        out.append([m, *(_cell_text(s["cells"].get((m, a))) for a in cols),
                    f"{100 * w[1]:.1f} ({w[0]})" if w else "–", "–" if craft is None else _secs(craft)])
    out.append(["mean over poisons", *("–" if (v := s["per_attack"][a]) is None else f"{100 * v:.1f}" for a in cols),
                "", ""])
    out.append(["seconds per job (mean)", *_seconds_row(s, cols), "", ""])
    return headers, out


def _seconds_row(s: dict[str, Any], cols: list[str]) -> list[str]:
    """Each column's mean seconds per job, over its rows and seeds."""
    secs = []
    for a in cols:
        vals = [e["seconds_mean"] for (m, c), e in s["cells"].items() if c == a and "seconds_mean" in e]
        secs.append(_secs(sum(vals) / len(vals)) if vals else "–")
    return secs


def _secs(x: float) -> str:
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def leaderboard_csv(layout: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> str:
    """One line per (training set, attack): every seed's accuracy, mean, std, the interval and
    the mean seconds per job, for a reader's own analysis."""
    s = summarize(layout, jobs)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["training_data", "attack", "seeds_done", "accuracy_per_seed", "mean", "std", "ci95_low", "ci95_high",
                "seconds_per_job", "failed", "pending", "worst_case"])
    for m in layout["rows"]:
        for a in layout["cols"]:
            e = s["cells"].get((m, a))
            if e is None:
                continue
            iv = e.get("interval")
            w.writerow([m, a, len(e["acc"]), " ".join(f"{v:.4f}" for v in e["acc"]),
                        "" if "mean" not in e else f"{e['mean']:.4f}",
                        "" if e.get("std") is None else f"{e['std']:.4f}",
                        "" if iv is None else f"{iv[0]:.4f}", "" if iv is None else f"{iv[1]:.4f}",
                        "" if "seconds_mean" not in e else f"{e['seconds_mean']:.1f}", e["failed"], e["pending"],
                        int(bool(s["worst"][m]) and s["worst"][m][0] == a)])
    return buf.getvalue()


def _colour(frac: float | None) -> str:
    """A cell's background by the fraction of the clean reference it recovers: red (the
    protection holds) through yellow to green (broken at the audit's line)."""
    if frac is None:
        return "#eee"
    hue = 120 * max(0.0, min(frac / BROKEN, 1.0))
    return f"hsl({hue:.0f},70%,{78 if frac < BROKEN else 70}%)"


def leaderboard_html(layout: dict[str, Any], jobs: dict[str, dict[str, Any]], title: str) -> str:
    """One self-contained page: the colour-scaled table (a cell's title gives every seed and its
    seconds), the mean per attack, and how to read it."""
    s = summarize(layout, jobs)
    cols, clean = layout["cols"], s["clean"]
    headers = ["training data", *(for_html(_col_title(a)) for a in cols), "worst case"]
    rows: list[list[str]] = []
    for m in layout["rows"]:
        cells = []
        for a in cols:
            e = s["cells"].get((m, a))
            frac = e["mean"] / clean if e is not None and "mean" in e and clean else None
            tip = "" if e is None else (" ".join(f"{100 * v:.1f}" for v in e["acc"])
                                        + (f"; {e['seconds_mean']:.0f} s per job" if "seconds_mean" in e else ""))
            text = for_html(_cell_text(e))
            if frac is not None and frac >= BROKEN and a != "none":
                text = f"<b>{text}</b>"
            cells.append(f'<span class="lb" title="{for_html(tip)}" style="background:{_colour(frac)}">{text}</span>')
        w = s["worst"][m]
        rows.append([for_html(m), *cells, "–" if not w else for_html(f"{100 * w[1]:.1f} ({w[0]})")])
    rows.append(["<i>mean over poisons</i>",
                 *("–" if (v := s["per_attack"][a]) is None else f"<i>{100 * v:.1f}</i>" for a in cols), ""])
    rows.append(["<i>seconds per job</i>", *(f"<i>{v}</i>" for v in _seconds_row(s, cols)), ""])
    n = len(s["seeds"])
    intro = (f"<p>Clean test accuracy (%) of the network each attack trains, mean ± std over {n} seed"
             f"{'s' if n != 1 else ''} ({', '.join(map(str, s['seeds']))}; each seed its own subset, poison "
             f"and initialization). Colour: the fraction of the clean reference "
             f"({'–' if clean is None else f'{100 * clean:.1f}'} %) recovered, red where the protection holds, "
             f"green (bold) from {100 * BROKEN:.0f} %, where the audit calls it broken. Hover a cell for each "
             f"seed and the seconds per job (one torch thread). The worst case ignores oracles.</p>")
    style = "<style>.lb{display:block;padding:.15em .4em;border-radius:3px} td{padding:.15em}</style>"
    body = (f"{style}<h1>{for_html(title)}</h1>{intro}"
            f"{table(headers, rows, 'leaderboard')}")
    return page(title, body)
