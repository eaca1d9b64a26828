"""The audit's verdict, computed from results only (so the report never types a number by hand).

- an attack *breaks* the protection when its clean test accuracy reaches `broken_fraction`
  (default 80 %) of the accuracy of the same recipe trained on the clean images;
- the protection *leaks features* when DFR on the protected-trained network gains at least
  `leak_points` (default 10) accuracy points over DFR on a random network;
- otherwise it *holds* (against what was tried).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..attacks.base import best_accuracy


@dataclass
class Thresholds:
    broken_fraction: float = 0.80
    leak_points: float = 10.0

    def __post_init__(self) -> None:
        # Checked at construction: a nan compares False with everything, so it would turn every
        # "broken" into "holds" without an error, and be stored in the audit's configuration.
        import math
        import numbers

        from .._io import UnlearnableError

        def finite(v: object) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

        if not (finite(self.broken_fraction) and 0 < self.broken_fraction <= 1):
            raise UnlearnableError("thresholds: broken_fraction (--broken-at) must be a finite number in "
                                   f"(0, 1], got {self.broken_fraction!r}")
        if not (finite(self.leak_points) and self.leak_points >= 0):
            raise UnlearnableError("thresholds: leak_points (--leak-points) must be a finite number >= 0, "
                                   f"got {self.leak_points!r}")


def verdict(clean_accuracy: float | None, attacks: dict[str, dict[str, Any]],
            dfr_gain_points: float | None, th: Thresholds = Thresholds(),
            num_classes: int | None = None, failed: dict[str, str] | None = None) -> dict[str, Any]:
    """Per attack: accuracy, fraction of clean accuracy recovered, broken or not; and overall.

    Without a clean reference the audit is "incomplete"; with one barely above chance (less than
    1.5x chance: the budget was too small to learn even the clean data) it is "inconclusive",
    because "recovers 80 % of nothing" would say nothing.

    failed: step -> one-line reason, for the steps behind these numbers that failed (or could
    not run), most essential first. A verdict that needs what they would have measured is
    "incomplete" and names the first; only "broken" (an attack that ran broke it) stands.
    """
    per: dict[str, dict[str, Any]] = {}
    for name, r in attacks.items():
        if r.get("test_accuracy") is None:
            continue
        acc = best_accuracy(r)
        frac = acc / clean_accuracy if clean_accuracy else None
        per[name] = {
            "accuracy": acc,
            "test_accuracy": r.get("test_accuracy"),
            "test_accuracy_transformed_test": r.get("test_accuracy_transformed_test"),
            "recovered_fraction": frac,
            "verdict": "broken" if frac is not None and frac >= th.broken_fraction else "holds",
        }
    broken = sorted((n for n, v in per.items() if v["verdict"] == "broken"),
                    key=lambda n: -per[n]["accuracy"])
    leaks = dfr_gain_points is not None and dfr_gain_points >= th.leak_points
    chance = 1.0 / num_classes if num_classes else 0.0
    failed = dict(failed or {})
    why_failed = ""
    if failed:
        name, why = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more failed steps)" if len(failed) > 1 else ""
        why_failed = f"step {name} failed: {why}{more}"
    if failed and (clean_accuracy is None or "none" not in attacks):
        overall, reason = "incomplete", why_failed
    elif clean_accuracy is None:
        overall, reason = "incomplete", "no clean-trained reference accuracy (the clean images are unknown)"
    elif clean_accuracy < 1.5 * chance:
        overall = "inconclusive"
        reason = (f"the clean-trained reference reaches only {100 * clean_accuracy:.1f}% (chance "
                  f"{100 * chance:.1f}%): the training budget is too small to judge; use a larger budget")
    elif broken:
        best = broken[0]
        what = "standard training alone" if best == "none" else f"the {best} attack"
        overall = "broken"
        reason = (f"{what} recovers {100 * per[best]['recovered_fraction']:.0f}% of the clean-trained "
                  f"accuracy ({100 * per[best]['accuracy']:.1f}% vs {100 * clean_accuracy:.1f}%)")
    elif leaks:
        overall = "leaks features"
        reason = (f"no attack reaches {100 * th.broken_fraction:.0f}% of clean accuracy, but DFR gains "
                  f"{dfr_gain_points:.1f} points over a random network")
    else:
        overall = "holds"
        reason = (f"no attack reaches {100 * th.broken_fraction:.0f}% of clean accuracy"
                  + ("" if dfr_gain_points is None else
                     f" and DFR gains only {dfr_gain_points:.1f} points over a random network"))
    if failed and overall in ("holds", "leaks features"):
        overall, reason = "incomplete", f"{why_failed}; of the steps that ran, {reason}"
    return {"overall": overall, "reason": reason, "broken_by": broken, "per_attack": per, "failed_steps": failed,
            "dfr_gain_points": dfr_gain_points, "clean_accuracy": clean_accuracy,
            "thresholds": {"broken_fraction": th.broken_fraction, "leak_points": th.leak_points}}
