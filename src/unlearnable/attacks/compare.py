"""Several attacks side by side on one protected dataset: `unlearnable attack all DATA --out DIR`.

Runs `none` (standard training) and each chosen attack into DIR/NAME, reusing results already
there, then writes DIR/summary.json and DIR/summary.md: clean test accuracy, transformed-test
accuracy where the attack has one, and wall time relative to standard training (the paper's
cost claim: orthogonal projection about 1x, adversarial training several times more).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .._io import atomic_file, read_json, write_json
from .base import ATTACKS, AttackContext, run_attack


def _reusable(path: Path, ctx: AttackContext) -> dict[str, Any] | None:
    if not path.exists():
        return None
    r = read_json(path)
    same = (r.get("arch"), r.get("seed"), r.get("recipe")) == (ctx.arch, ctx.seed, ctx.recipe.to_dict())
    return r if same else None


def run_all(ctx: AttackContext, names: list[str] | None = None, params: dict[str, dict[str, str]] | None = None,
            say=print) -> dict[str, Any]:
    """Run `none` plus `names` (default: every registered attack) into ctx.out_dir/NAME."""
    names = ["none"] + [n for n in (names or sorted(ATTACKS)) if n != "none"]
    out = Path(ctx.out_dir)
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        sub = dataclasses.replace(ctx, out_dir=out / name)
        r = _reusable(out / name / "result.json", sub)
        if r is None:
            say(f"attack all: {name} ...")
            r = run_attack(name, sub, (params or {}).get(name))
        rows[name] = r
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
               "rows": table}
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
    return "\n".join(lines) + "\n"
