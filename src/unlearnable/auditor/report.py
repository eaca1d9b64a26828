"""Render audit results as a self-contained HTML page, Markdown and a one-screen text table.

Every number shown comes from the results dict (what `results.json` holds); figures are PNG
files next to it, embedded as base64 so the HTML opens offline as one file. The page carries a
tiny script that records in `<body data-figures>` how many figures decoded, which the browser
test reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..attacks import ordered
from ..core.text import for_html, for_md, for_term
from ..viz.html import figure, page, table

ATTACK_TITLES = {"none": "none (standard training)", "adv-train": "adversarial training",
                 "ortho-proj": "orthogonal projection", "mean-sub": "class-mean subtraction"}
VERDICT_COLOURS = {"broken": "#c0392b", "ineffective": "#922b21", "leaks features": "#d68910", "holds": "#1e8449",
                   "inconclusive": "#7f8c8d", "incomplete": "#7f8c8d", "upper bound": "#2e86c1"}


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage with `digits` decimals, or an en dash for none."""
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _tag(v: str) -> str:
    # "broken (borderline)" keeps broken's colour
    return f'<span class="tag" style="background:{VERDICT_COLOURS.get(v.split(" (")[0], "#555")}">{for_html(v)}</span>'


def interval_cell(v: dict[str, Any]) -> str:
    """An accuracy's 95 % interval as the tables show it, with the spread over seeds (mean ± std,
    the number of seeds) or over standard training's last epochs where there is one."""
    iv = v.get("interval")
    text = "–" if not iv else f"[{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"
    if v.get("seed_std") is not None:
        text += f" ± {100 * v['seed_std']:.1f} over {len(v.get('seeds') or [])} seeds"
    elif v.get("epoch_spread") is not None:
        text += f" (epochs ± {100 * v['epoch_spread']:.1f})"
    return text


def verdict_title(v: dict[str, Any]) -> str:
    """The verdict's word, flagged when its decisive comparison is within the intervals."""
    overall = v.get("overall", "incomplete")
    return f"{overall} (borderline)" if v.get("borderline") else overall


def _clean_interval(v: dict[str, Any]) -> str:
    iv = v.get("clean_interval")
    return "" if not iv else f"(95% interval [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]%)"


ATTACK_HEADERS = ["attack", "clean test", "transformed test", "result", "95% interval", "of clean", "verdict"]


def attack_rows(res: dict[str, Any]) -> list[list[str]]:
    """The verdict table's rows (`ATTACK_HEADERS`): each attack's accuracy, its interval, its
    fraction of clean and its verdict."""
    per = res.get("verdict", {}).get("per_attack", {})
    rows = []
    for name in ordered(per):
        v = per[name]
        rows.append([ATTACK_TITLES.get(name, name), pct(v["test_accuracy"]),
                     pct(v.get("test_accuracy_transformed_test")), pct(v["accuracy"]), interval_cell(v),
                     pct(v["recovered_fraction"], 0), v["verdict"]])
    return rows


def window_row(res: dict[str, Any]) -> list[str] | None:
    """DFR's window, as the report's first table shows it: random networks / protected-trained /
    clean-trained, and the fraction of the window recovered."""
    w = res.get("verdict", {}).get("dfr")
    if not w:
        return None
    spread = w.get("random_spread")
    rnd = pct(w["random"]) + ("" if spread is None else f" ± {100 * spread:.1f}")
    n_inits = len(w.get("random_inits") or []) or 1
    return [f"{rnd} ({n_inits} init{'s' if n_inits > 1 else ''})", pct(w["max"]), pct(w.get("clean_trained")),
            pct(w.get("recovered_fraction"), 0), f"{w['gain_points']:+.1f}", w.get("procedure", "paper")]


WINDOW_HEADERS = ["random networks", "protected-trained", "clean-trained", "window recovered", "gain (points)",
                  "procedure"]


def detect_line(res: dict[str, Any]) -> str | None:
    """The `detect` step's decision in words, or None when it did not run."""
    d = res.get("detect")
    if not d or d.get("score") is None:
        return None
    if "protected" in d and d["protected"] is None:  # the data could not support a decision
        return (f"cannot judge: {d.get('cannot_judge') or 'the data cannot support a decision'} (score "
                f"{d['score']:.2f}, not weighed; unlearnable detect, docs/detect.md)")
    fpr = d.get("fpr_target")
    at = f" at {100 * fpr:.0f}% false positives" if isinstance(fpr, (int, float)) else ""
    return (f"{'yes' if d.get('protected') else 'no'}: score {d['score']:.2f} against the threshold "
            f"{d.get('threshold', float('nan')):.2f}{at} (unlearnable detect, docs/detect.md)")


def sep_cell(s: dict[str, Any]) -> str:
    """A separability result, read against its clean-image baseline."""
    own = pct(s.get("train_accuracy_mean"))
    if s.get("informative") is False:
        return f"{own} (uninformative: clean images reach {pct(s['baseline']['train_accuracy_mean'])} at this N)"
    return own


def render_audit_html(res: dict[str, Any], base: Path) -> str:
    """One audit: verdict first, then the evidence."""
    base = Path(base)
    ds = res.get("dataset", {})
    v = res.get("verdict", {})
    overall = v.get("overall", "incomplete")
    parts = [f"<h1>Does <code>{for_html(ds.get('name', '?'))}</code> protect?</h1>",
             f'<p class="muted">{for_html(_describe(ds))}</p>',
             *(f'<p class="muted">Note: {for_html(n)}</p>' for n in ds.get("notes", [])),
             f'<div class="verdict" style="background:{VERDICT_COLOURS.get(overall, "#555")}">'
             f"Verdict: <b>{for_html(verdict_title(v))}</b> — {for_html(v.get('reason', ''))}</div>"]
    det = detect_line(res)
    if det:
        parts.append(f"<p><b>Detectable</b> (would a data collector notice, without the clean images?): "
                     f"{for_html(det)}</p>")
    wrow = window_row(res)
    if wrow:
        parts.append("<h2>What the network learned: DFR's window</h2>")
        parts.append("<p>Clean test accuracy of a linear head fitted on clean images over the features of random "
                     "networks, of the network trained on the protected set, and of the network trained on the "
                     "clean images. The fraction of that window the protected-trained features recover is what "
                     "the verdict weighs (it means the same on every dataset).</p>")
        parts.append(table(WINDOW_HEADERS, [[for_html(c) for c in wrow]], "window-table"))
    rows = [[for_html(c) for c in r[:-1]] + [_tag(r[-1])] for r in attack_rows(res)]
    parts.append("<h2>Attacks (clean test accuracy)</h2>")
    parts.append(f"<p>Reference: the same recipe trained on the clean images reaches "
                 f"<b>{pct(v.get('clean_accuracy'))}</b> {for_html(_clean_interval(v))}. “Transformed test” is "
                 f"the accuracy when the attacker also transforms its own test inputs; the better of the two is "
                 f"the attack's result. Intervals: 95 %, the test set's ({v.get('n_test') or '?'} images) Wilson "
                 f"interval, widened by the spread over seeds and, for standard training, over its last "
                 f"epochs.</p>")
    parts.append(table(ATTACK_HEADERS, rows, "verdict-table"))
    parts.append("<h2>What the network still learns: DFR (the paper's Fig. 2)</h2>")
    dfr = res.get("dfr")
    if dfr:
        parts.append(table(
            ["max DFR accuracy", "at epoch", "min DFR loss", "at epoch", "random init", "gain"],
            [[pct(dfr.get("max_dfr_accuracy")), str(dfr.get("max_dfr_epoch")),
              f"{dfr.get('min_dfr_loss', float('nan')):.3f}", str(dfr.get("min_dfr_epoch")),
              pct(dfr.get("random", dfr.get("random_init_dfr_accuracy"))),
              "–" if v.get("dfr_gain_points") is None else f"{v['dfr_gain_points']:+.1f} points"]]))
    parts.append(figure(base, res.get("figures", {}).get("dfr"), "DFR accuracy per epoch vs standard training"))
    parts.append("<h2>Learned linear weights (the paper's Fig. 3)</h2>")
    parts.append(figure(base, res.get("figures", {}).get("weights"),
                      "rows of the linear model W, one per class (min-max scaled)"))
    known = {"dfr", "weights", "samples", "separability"}
    for name, rel in res.get("figures", {}).items():
        if name not in known:  # pictures other steps and attacks leave (their registry entries say)
            parts.append(f"<h2>{for_html(name.replace('_', ' '))}</h2>")
            parts.append(figure(base, rel, name))
    parts.append("<h2>Samples</h2>")
    parts.append(figure(base, res.get("figures", {}).get("samples"),
                      "per class: clean, protected, perturbation (amplified), recovered by projection"))
    sep = res.get("separability", {})
    if sep:
        parts.append("<h2>Linear separability (the paper's Tables 2 and 6)</h2>")
        srows = [[for_html(k), for_html(sep_cell(s)), pct(s.get("train_accuracy_std"), 2),
                  pct((s.get("baseline") or {}).get("train_accuracy_mean")), str(s.get("n", "–")),
                  str(s.get("settings", {}).get("repeats", 1)), for_html(_opt(s))]
                 for k, s in sep.items()]
        parts.append(table(["of", "train accuracy (mean)", "std", "clean images (baseline)", "N", "runs",
                             "optimiser"], srows))
        parts.append(figure(base, res.get("figures", {}).get("separability"), "linear separability"))
    parts.append(_provenance_html(res))
    return page(f"unlearnable audit: {ds.get('name', '')}", "".join(parts))


def _opt(s: dict[str, Any]) -> str:
    o = s.get("optimizer") or {}
    if not o:
        return ""
    return (f"L-BFGS lr {o.get('lr')}, {o.get('steps')} steps x max_iter {o.get('max_iter')}"
            + (", early stop" if o.get("early_stop") else ""))


def _describe(ds: dict[str, Any]) -> str:
    bits = [f"{ds.get('num_samples', '?')} images {ds.get('shape', '')}",
            f"{ds.get('num_classes', '?')} classes"]
    if ds.get("method"):
        bits.append(f"method {ds['method']} ({ds.get('kind', '?')})")
    if ds.get("base"):
        bits.append(f"base {ds['base']}")
    return ", ".join(bits)


def _provenance_html(res: dict[str, Any]) -> str:
    cfg = res.get("config", {})
    steps = res.get("steps", {})
    heads = {a["name"]: a for a in res.get("analyses", [])}
    srows = [[for_html(heads.get(n, {}).get("title") or n), for_html(s.get("status", "?")),
              for_html(heads.get(n, {}).get("headline", "")),
              "shared" if s.get("shared") else f"{s.get('seconds') or 0:.1f} s",
              for_html(s.get("reason", ""))] for n, s in steps.items()]
    vers = res.get("versions", {})
    return ("<h2>How this was made</h2>"
            f"<p>Architecture <code>{for_html(str(cfg.get('arch')))}</code>, level "
            f"<code>{for_html(str(cfg.get('level', cfg.get('budget'))))}</code>, seed {cfg.get('seed')}; recipe "
            f"<code>{for_html(str(cfg.get('recipe')))}</code>.</p>"
            + table(["step", "status", "result", "time", "note"], srows)
            + f'<p class="muted">{for_html(", ".join(f"{k} {v}" for k, v in vers.items()))}</p>')


def render_audit_md(res: dict[str, Any]) -> str:
    """The audit's report as Markdown (report.md): the verdict, the tables, the figures' files.
    Every string from the record passes through `for_md` (one line, escaped): a dataset's
    manifest cannot add a line, a link or markup, so the one verdict line is the verdict's."""
    ds = res.get("dataset", {})
    v = res.get("verdict", {})
    lines = [f"# Does “{for_md(ds.get('name', '?'))}” protect?", "", for_md(_describe(ds), 400), "",
             f"**Verdict: {for_md(verdict_title(v))}** — {for_md(v.get('reason', ''), 1000)}", "",
             f"Clean-trained reference: {pct(v.get('clean_accuracy'))} {_clean_interval(v)}", "",
             _md_row(ATTACK_HEADERS), "|---|---:|---:|---:|---|---:|---|"]
    lines += [_md_row(r) for r in attack_rows(res)]
    det = detect_line(res)
    if det:
        lines += ["", f"Detectable without the clean images: {for_md(det, 400)}"]
    wrow = window_row(res)
    if wrow:
        lines += ["", "DFR's window:", "", _md_row(WINDOW_HEADERS), "|" + "---|" * len(WINDOW_HEADERS), _md_row(wrow)]
    dfr = res.get("dfr")
    if dfr:
        lines += ["", f"DFR: max {pct(dfr.get('max_dfr_accuracy'))} at epoch {for_md(dfr.get('max_dfr_epoch'))}"]
    if res.get("separability"):  # after a blank line: a line right under a table is one of its rows
        lines += ["", *(f"- Separability of {for_md(k)}: {for_md(sep_cell(s), 400)}"
                        for k, s in res["separability"].items())]
    if res.get("analyses"):
        lines += ["", "| step | status | result | note |", "|---|---|---|---|"]
        lines += [_md_row([a["title"], a["status"], a["headline"], a.get("reason", "")], 400)
                  for a in res["analyses"]]
    for name, rel in res.get("figures", {}).items():
        if rel:
            lines += ["", f"![{for_md(name)}]({_md_link(rel)})"]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[Any], limit: int = 120) -> str:
    return "| " + " | ".join(for_md(c, limit) for c in cells) + " |"


def _md_link(rel: Any) -> str:
    # Percent-encoded: a figure's file name cannot close the link or open another.
    return quote(str(rel), safe="/._-")


def comparison_rows(all_res: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the table comparing several audits (the demo): one row per set."""
    attacks = ordered(sorted({a for r in all_res for a in r.get("verdict", {}).get("per_attack", {})}))
    headers = ["protected set", "clean ref"] + [a for a in attacks] + ["DFR window", "verdict"]
    rows = []
    for r in all_res:
        v = r.get("verdict", {})
        per = v.get("per_attack", {})
        w = v.get("dfr") or {}
        g = v.get("dfr_gain_points")
        cell = "–" if g is None else (f"{g:+.1f}" if w.get("recovered_fraction") is None
                                      else f"{100 * w['recovered_fraction']:.0f}% ({g:+.1f})")
        rows.append([r.get("dataset", {}).get("name", "?"), pct(v.get("clean_accuracy"))]
                    + [pct(per[a]["accuracy"]) if a in per else "–" for a in attacks]
                    + [cell, verdict_title(v)])
    return headers, rows


def render_comparison_html(all_res: list[dict[str, Any]], base: Path, title: str,
                           links: list[str] | None = None) -> str:
    """The demo's one-page comparison of several audits, linking each audit's own report."""
    headers, rows = comparison_rows(all_res)
    hrows = [[for_html(c) for c in r[:-1]] + [_tag(r[-1])] for r in rows]
    if links:
        for r, link in zip(hrows, links):
            r[0] = f'<a href="{for_html(link)}">{r[0]}</a>'
    body = [f"<h1>{for_html(title)}</h1>",
            "<p>Each row is one protected dataset, audited with the same recipe. Cells are clean test "
            "accuracy after each attack (the better of plain and transformed test inputs); "
            "“clean ref” is the same recipe trained on the unprotected images.</p>",
            table([for_html(h) for h in headers], hrows, "verdict-table")]
    for r in all_res:
        ds = r.get("dataset", {})
        sub = Path(r.get("_dir", "."))
        body.append(f"<h2>{for_html(ds.get('name', '?'))}: {_tag(r.get('verdict', {}).get('overall', '?'))}</h2>"
                    f"<p>{for_html(r.get('verdict', {}).get('reason', ''))}</p>")
        figs = r.get("figures", {})
        for key, alt in (("samples", "clean / protected / perturbation / recovered"),
                         ("dfr", "DFR curve"), ("weights", "linear weights")):
            if figs.get(key):
                body.append(figure(Path(base) / sub, figs[key], f"{ds.get('name', '')}: {alt}", 520))
    if all_res:
        body.append(_provenance_html(all_res[0]))
    return page(title, "".join(body))


def render_comparison_md(all_res: list[dict[str, Any]], title: str) -> str:
    """The comparison of several audits as Markdown (the demo's report.md)."""
    headers, rows = comparison_rows(all_res)
    out = [f"# {for_md(title)}", "", _md_row(headers), "|" + "---|" * len(headers)]
    out += [_md_row(r) for r in rows]
    return "\n".join(out) + "\n"


def summary_text(all_res: list[dict[str, Any]]) -> str:
    """A fixed-width table for the terminal."""
    headers, rows = comparison_rows(all_res)
    headers = [for_term(h) for h in headers]  # a set's name, an attack's, may hold escape sequences
    rows = [[for_term(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*headers), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)
