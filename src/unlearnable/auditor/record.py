"""The audit's record: results.json assembled from the step results, each where its registry
entry says (`StepInfo.record`), the figures the entries name, the verdict from the steps that
weigh, and the reports rendered from it.

    record = finish(out, record, inputs, cfg, row, place, specs)  # writes results.json, report.html, .md
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..attacks import ATTACKS
from ..core.files import atomic_file, within, write_json
from ..core.provenance import versions
from ..runner.jobs import Spec
from .config import AuditConfig
from .figures import samples_figure, separability_figure
from .inputs import AuditInputs
from .report import render_audit_html, render_audit_md
from .steps import Row, StepInfo, steps_for
from .verdict import dfr_window, verdict

log = logging.getLogger(__name__)


def step_result(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The result of step `name` in an audit's record, or None where it did not finish."""
    e = record["steps"].get(name)
    return e.get("result") if e and e.get("status") == "done" else None


def _headline(st: StepInfo, result: dict[str, Any] | None) -> str:
    if result is None:
        return ""
    try:
        return st.headline(result)
    except (KeyError, TypeError, ValueError):  # a result without the figure its headline names
        return ""


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _weights_file(out: Path, attacks: dict[str, Any]) -> Path | None:
    """The learned linear model an attack of this audit left (for the samples figure's projected
    column): the first one, in the report's order, that is not an oracle."""
    for name in attacks:
        info = ATTACKS.get(name)
        if info is not None and not info.oracle and "linear_weights" in info.artifacts:
            p = out / "attacks" / name / info.artifacts["linear_weights"]
            if p.exists():
                return p
    return None


# The places of results.json that `finish` assembles itself (the verdict's inputs).
ASSEMBLED = frozenset({"protected_training", "clean_reference", "dfr", "dfr_clean", "detect", "finetune",
                       "separability", "attacks"})


def finish(out: Path, record: dict[str, Any], inp: AuditInputs, cfg: AuditConfig, row: Row,
           place: Callable[[Spec], Path], specs: dict[str, Spec]) -> dict[str, Any]:
    """Assemble results.json from the step results, draw the figures, render the reports."""
    man = inp.protected.meta.get("manifest", {})
    steps = steps_for(row)
    parts: dict[str, Any] = {"attacks": {}, "separability": {}}
    figures: dict[str, str] = {}
    for st in steps:
        r = step_result(record, st.name)
        if r is None:
            continue
        if st.record:
            _put(parts, st.record, r)
        for fig, path in st.figures(r, Path(place(specs[st.name]))).items():
            if not within(out, path):  # the report embeds its own files only: a path read from a store
                log.warning("%s: step %s names figure %s, outside the audit: not embedded", out, st.name, path.resolve())
            elif path.exists():
                figures[fig] = path.resolve().relative_to(out.resolve()).as_posix()
    prot = parts.get("protected_training")
    attacks = ({"none": {"test_accuracy": prot["test_accuracy"]}} if prot else {}) | parts["attacks"]
    clean_ref = parts.get("clean_reference")
    dfr, dfr_clean, finetune = parts.get("dfr"), parts.get("dfr_clean"), parts.get("finetune")
    window = dfr_window(dfr, dfr_clean)
    if dfr and window:
        dfr = {**dfr, **{k: window[k] for k in ("random", "random_spread", "max", "clean_trained",
                                                 "recovered_fraction", "gain_points")}}
    sep = parts["separability"]
    figures["samples"] = samples_figure(inp.protected, inp.base, _weights_file(out, attacks), out / "samples.png")
    figures["separability"] = separability_figure(sep, inp.protected.num_classes, out / "separability.png") \
        if sep else None
    # The steps whose numbers the verdict weighs: were one missing, it would judge without it.
    weighs = {st.name for st in steps if st.weighs}
    record.update({
        "dataset": {"name": inp.name, "method": man.get("method"), "kind": man.get("kind"),
                    "num_samples": len(inp.protected), "shape": list(inp.protected.chw),
                    "num_classes": inp.protected.num_classes, "base": man.get("base", {}).get("name"),
                    "notes": inp.notes},
        "clean_reference": clean_ref,
        "protected_training": prot,
        "dfr": dfr,
        "dfr_clean": dfr_clean,
        "detect": parts.get("detect"),
        "finetune": finetune,
        "separability": sep,
        "attacks": attacks,
        "figures": {k: v for k, v in figures.items() if v},
        "analyses": [{"name": st.name, "title": st.title, "status": record["steps"][st.name]["status"],
                      "headline": _headline(st, step_result(record, st.name)),
                      "reason": record["steps"][st.name].get("reason", "")}
                     for st in steps],
        "verdict": verdict(clean_ref["test_accuracy"] if clean_ref else None, attacks, window, cfg.thresholds,
                           inp.protected.num_classes, failed={n: why for n, why in record["failed_steps"].items()
                                                              if n in weighs}, level=row.level.name,
                           finetune=finetune, n_test=len(inp.test) if inp.test is not None else None, seeds=record.get("seeds"),
                           curve=prot.get("curve") if prot else None),
        "versions": versions(),
    })
    # A step with a place of its own that nothing above derives from (a new analysis): as it came.
    record.update({k: v for k, v in parts.items() if k not in ASSEMBLED})
    with atomic_file(out / "report.html", "w") as f:
        f.write(render_audit_html(record, out))
    with atomic_file(out / "report.md", "w") as f:
        f.write(render_audit_md(record))
    write_json(out / "results.json", record)  # last: a write cut short leaves no record of a report
    return record
