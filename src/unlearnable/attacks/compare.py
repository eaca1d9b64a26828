"""Several attacks side by side: the table `unlearnable attack all DATA --out DIR` writes.

    rows = summary_table({"none": result, "jpeg": result, ...})   # in the registry's order
    text = summary_markdown({"data": ..., "arch": ..., "seed": ..., "recipe": ..., "rows": rows})

Clean test accuracy, transformed-test accuracy where the attack has one, and wall time relative
to standard training (the paper's cost claim: orthogonal projection about 1x, adversarial
training several times more). Running them is `unlearnable.kinds.run_all`.
"""

from __future__ import annotations

from typing import Any


def summary_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per attack result (name -> result.json's dict, `none` among them): the figures
    and the cost against standard training's wall time."""
    base_seconds = results["none"]["seconds_total"] if "none" in results else None
    return [{
        "attack": name, "test_accuracy": r["test_accuracy"],
        "test_accuracy_transformed_test": r.get("test_accuracy_transformed_test"),
        "test_accuracy_best": r["test_accuracy_best"], "seconds": r["seconds_total"],
        "cost_vs_standard_training": r["seconds_total"] / base_seconds if base_seconds else None,
    } for name, r in results.items()]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The comparison as a Markdown table (summary.md)."""
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
