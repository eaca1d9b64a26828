"""Several attacks side by side on one protected dataset: `unlearnable attack all DATA --out DIR`.

Runs `none` (standard training) and each chosen attack into DIR/NAME, reusing results already
there, then writes DIR/summary.json and DIR/summary.md: clean test accuracy, transformed-test
accuracy where the attack has one, and wall time relative to standard training (the paper's
cost claim: orthogonal projection about 1x, adversarial training several times more).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..core.files import atomic_file, write_json
from .base import ATTACKS, AttackContext, ordered, run_attack

log = logging.getLogger(__name__)


def run_all(ctx: AttackContext, names: list[str] | None = None,
            params: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Run `none` plus `names` (default: every registered attack) into ctx.out_dir/NAME.

    Each attack reuses its own finished result.json only when it was made from the same data
    (by content) and settings, and refuses a directory holding another run (`run_attack`)."""
    names = ordered({"none", *(names or ATTACKS)})
    out = Path(ctx.out_dir)
    rows: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        why = ATTACKS[name].applies_to(ctx.train)
        if why:
            skipped[name] = why
            continue
        log.info("attack all: %s ...", name)
        rows[name] = run_attack(name, dataclasses.replace(ctx, out_dir=out / name), (params or {}).get(name))
    base_seconds = rows["none"]["seconds_total"]
    table = []
    for name, r in rows.items():
        table.append({
            "attack": name, "test_accuracy": r["test_accuracy"],
            "test_accuracy_transformed_test": r.get("test_accuracy_transformed_test"),
            "test_accuracy_best": r["test_accuracy_best"], "seconds": r["seconds_total"],
            "cost_vs_standard_training": r["seconds_total"] / base_seconds if base_seconds else None,
        })
    summary = {"data": ctx.data_name, "arch": ctx.arch, "seed": ctx.seed, "recipe": ctx.recipe.to_dict(),
               "rows": table, "skipped": skipped}
    write_json(out / "summary.json", summary)
    with atomic_file(out / "summary.md", "w") as f:
        f.write(summary_markdown(summary))
    return summary


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [f"Attacks on `{summary['data']}` ({summary['arch']}, seed {summary['seed']}, "
             f"{summary['recipe']['epochs']} epochs)", "",
             "| attack | clean test | transformed test | result | time | vs standard training |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        cost = r["cost_vs_standard_training"]
        lines.append(f"| {r['attack']} | {_pct(r['test_accuracy'])} | {_pct(r['test_accuracy_transformed_test'])} "
                     f"| {_pct(r['test_accuracy_best'])} | {r['seconds']:.1f} s | "
                     f"{'–' if cost is None else f'{cost:.2f}x'} |")
    for name, why in summary.get("skipped", {}).items():
        lines.append(f"| {name} | not run: {why} | | | | |")
    return "\n".join(lines) + "\n"
