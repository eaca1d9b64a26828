"""The audit's verdict, computed from results only (so the report never types a number by hand).

- the protection is *ineffective* when standard training alone reaches `broken_fraction`
  (default 80 %) of the accuracy of the same recipe trained on the clean images: it did not
  take effect at this budget (often a short training: most poisons need epochs to bite);
- an attack *breaks* it when the attack reaches that fraction and standard training does not;
- it *leaks features* when DFR on the protected-trained network recovers at least
  `leak_fraction` (default 0.5) of the DFR window, (max - random) / (clean-trained - random),
  with a gain over the random networks larger than `leak_spread` (2) times their seed-to-seed
  spread (and at least `leak_points`, default 0); or when fine-tuning the protected-trained
  network on k clean images recovers `leak_fraction` of what the clean-trained network has over
  training from scratch on them (the finetune step). The reason names which. The window makes the rule mean the same on
  every dataset: on Fashion-MNIST a random ConvNet's DFR already reaches 76-77 %, so no absolute
  gain could say how much of what a clean network learns got through;
- otherwise it *holds* (against what was tried).

Every accuracy carries its 95 % interval: the test set's Wilson interval, widened by the
spread over seeds when the decisive trainings ran on several (`seeds`, mean ± std), and for
standard training by its epoch-to-epoch spread over the last third of the run. A verdict whose
decisive accuracy cannot be told apart from its threshold (their intervals overlap: the
threshold's is `broken_fraction` times the clean reference's) is *borderline*: the verdict
stands, flagged, with the next step that would settle it (more seeds, the next level).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from ..attacks import ATTACKS
from ..attacks.base import best_accuracy
from ..core.errors import UnlearnableError
from ..core.stats import mean_interval, overlap, widest, wilson
from ..ladder import next_level


@dataclass
class Thresholds:
    """The verdict's thresholds: `broken_fraction` of clean accuracy breaks a protection (--broken-at);
    DFR leaks features at `leak_fraction` of its window (--leak-at), with a gain over
    `leak_spread` times the random networks' spread (--leak-spread) and at least `leak_points`
    (--leak-points)."""
    broken_fraction: float = 0.80
    leak_points: float = 0.0  # an absolute floor on the DFR gain, in points, on top of the window rule
    leak_fraction: float = 0.5
    leak_spread: float = 2.0

    def __post_init__(self) -> None:
        # Checked at construction: a nan compares False with everything, so it would turn every
        # "broken" into "holds" without an error, and be stored in the audit's configuration.
        def finite(v: object) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

        if not (finite(self.broken_fraction) and 0 < self.broken_fraction <= 1):
            raise UnlearnableError("thresholds: broken_fraction (--broken-at) must be a finite number in "
                                   f"(0, 1], got {self.broken_fraction!r}")
        if not (finite(self.leak_points) and self.leak_points >= 0):
            raise UnlearnableError("thresholds: leak_points (--leak-points) must be a finite number >= 0, "
                                   f"got {self.leak_points!r}")
        if not (finite(self.leak_fraction) and 0 < self.leak_fraction <= 1):
            raise UnlearnableError("thresholds: leak_fraction (--leak-at) must be a finite number in (0, 1], "
                                   f"got {self.leak_fraction!r}")
        if not (finite(self.leak_spread) and self.leak_spread >= 0):
            raise UnlearnableError("thresholds: leak_spread (--leak-spread) must be a finite number >= 0, "
                                   f"got {self.leak_spread!r}")


def dfr_window(dfr: dict[str, Any] | None, dfr_clean: dict[str, Any] | None) -> dict[str, Any] | None:
    """The DFR evidence the verdict weighs, from the dfr step's result on the protected-trained
    network and the dfr-clean step's on the clean-trained one: `random` (mean over random
    initializations), `random_spread` (their sample std), `max`, `clean_trained`, `gain_points`
    and `recovered_fraction` = (max - random) / (clean_trained - random), all fractions but the
    points. None without a DFR result."""
    if not dfr or dfr.get("max_dfr_accuracy") is None:
        return None
    rnd = dfr.get("random_mean", dfr.get("random_init_dfr_accuracy"))
    if rnd is None:
        return None
    top = dfr_clean.get("max_dfr_accuracy") if dfr_clean else None
    frac = None
    if top is not None and top - rnd > 1e-9:
        frac = (dfr["max_dfr_accuracy"] - rnd) / (top - rnd)
    return {"random": rnd, "random_inits": dfr.get("random_inits"), "random_spread": dfr.get("random_spread"),
            "max": dfr["max_dfr_accuracy"], "max_epoch": dfr.get("max_dfr_epoch"), "clean_trained": top,
            "gain_points": 100 * (dfr["max_dfr_accuracy"] - rnd), "recovered_fraction": frac,
            "procedure": dfr.get("procedure", "paper")}


def _leak(window: dict[str, Any] | None, th: Thresholds) -> tuple[bool, str]:
    """Whether DFR says the network learned features, and the sentence that says why."""
    if window is None:
        return False, ""
    gain, frac, spread = window["gain_points"], window["recovered_fraction"], window.get("random_spread")
    noise = 100 * th.leak_spread * spread if spread is not None else 0.0
    if frac is None:  # no clean-trained DFR: the window's top is unknown, so only the floor can speak
        fires = th.leak_points > 0 and gain >= th.leak_points and gain > noise
        return fires, f"DFR gains {gain:.1f} points over random networks (the clean-trained DFR is unknown)"
    fires = frac >= th.leak_fraction and gain > noise and gain >= th.leak_points
    where = f"DFR recovers {100 * frac:.0f}% of the window between random networks " \
            f"({100 * window['random']:.1f}%) and the clean-trained network ({100 * window['clean_trained']:.1f}%)"
    if spread is not None:
        where += f"; the gain, {gain:.1f} points, {'exceeds' if gain > noise else 'does not exceed'} " \
                 f"{th.leak_spread:g}x the random networks' spread ({100 * spread:.1f} points)"
    return fires, where


def _finetune_leak(ft: dict[str, Any] | None, th: Thresholds) -> tuple[bool, str]:
    """Whether fine-tuning says the network learned features (the finetune step's result)."""
    if not ft or ft.get("recovered_fraction") is None:
        return False, ""
    frac, k = ft["recovered_fraction"], ft.get("recovered_fraction_k")
    fires = frac >= th.leak_fraction and (ft.get("gain_points") or 0.0) >= th.leak_points
    return fires, (f"fine-tuning it on {k} clean images recovers {100 * frac:.0f}% of what the clean-trained "
                   f"network has over training on them from scratch")


def epoch_spread(curve: list[dict[str, Any]] | None) -> float | None:
    """The sample std of a training's per-epoch test accuracy over the last third of its epochs
    (at least two of them), or None: how much the last epoch's figure could have moved."""
    accs = [p["test_accuracy"] for p in (curve or []) if p.get("test_accuracy") is not None]
    tail = accs[-max(2, math.ceil(len(accs) / 3)):]
    return mean_interval(tail)[1] if len(tail) >= 2 else None


def evidence(acc: float, n_test: int | None, seed_values: list[float] | None = None,
             curve: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One accuracy with its uncertainty: `accuracy` (the mean over seeds when there are
    several), `interval` (95 %: the widest of the test set's Wilson interval, the t interval
    over seeds and accuracy ± the epoch-to-epoch spread), `seeds`, `seed_std`, `epoch_spread`."""
    seeds = list(seed_values) if seed_values and len(seed_values) > 1 else None
    mean, std, seed_iv = mean_interval(seeds) if seeds else (acc, None, None)
    spread = epoch_spread(curve)
    binom = wilson(min(max(mean, 0.0), 1.0), n_test) if n_test else None
    wobble = (mean - spread, mean + spread) if spread is not None else None
    iv = widest(binom, seed_iv, wobble)
    return {"accuracy": mean, "interval": None if iv is None else [max(0.0, iv[0]), min(1.0, iv[1])],
            "seeds": seeds, "seed_std": std, "epoch_spread": spread}


def _settle(level: str | None, n_seeds: int) -> str:
    nxt = next_level(level) if level else None
    more = f"--seeds {max(3, 2 * n_seeds)}"
    return f"rerun with {more}" + (f" or audit at --level {nxt}" if nxt else "")


def _is_oracle(name: str, r: dict[str, Any]) -> bool:
    return (name in ATTACKS and ATTACKS[name].oracle) or r.get("directions") == "perturbations"


def verdict(clean_accuracy: float | None, attacks: dict[str, dict[str, Any]],
            dfr: dict[str, Any] | None = None, th: Thresholds = Thresholds(),
            num_classes: int | None = None, failed: dict[str, str] | None = None,
            level: str | None = None, finetune: dict[str, Any] | None = None, n_test: int | None = None,
            seeds: dict[str, list[float]] | None = None,
            curve: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per attack: accuracy, fraction of clean accuracy recovered, broken or not; and overall.

    `dfr`: the DFR window (`dfr_window`), or None when DFR did not run. `finetune`: the finetune
    step's result, or None. `level`: the ladder level the trainings ran at (named by an
    "ineffective" verdict). An oracle attack (one that knows the perturbations) is reported as
    an "upper bound", never as what broke the protection.

    Without a clean reference the audit is "incomplete"; with one barely above chance (less than
    1.5x chance: the budget was too small to learn even the clean data) it is "inconclusive",
    because "recovers 80 % of nothing" would say nothing.

    failed: step -> one-line reason, for the steps behind these numbers that failed (or could
    not run), most essential first. A verdict that needs what they would have measured is
    "incomplete" and names the first; "ineffective" and "broken" (a training that ran
    recovered the accuracy) stand.

    `n_test`: the test set's size (the binomial intervals). `seeds`: "clean", "none" or an
    attack -> its accuracy per seed (the first the audit's own); with two or more the figure
    is their mean. `curve`: standard training's per-epoch test accuracy (its epoch spread).
    """
    seeds = seeds or {}
    per: dict[str, dict[str, Any]] = {}
    clean_ev = evidence(clean_accuracy, n_test, seeds.get("clean")) if clean_accuracy is not None else None
    if clean_ev is not None:
        clean_accuracy = clean_ev["accuracy"]
    for name, r in attacks.items():
        if r.get("test_accuracy") is None:
            continue
        ev = evidence(best_accuracy(r), n_test, seeds.get(name), curve if name == "none" else None)
        acc = ev["accuracy"]
        frac = acc / clean_accuracy if clean_accuracy else None
        reached = frac is not None and frac >= th.broken_fraction
        per[name] = {
            "accuracy": acc, "interval": ev["interval"], "seeds": ev["seeds"], "seed_std": ev["seed_std"],
            **({"epoch_spread": ev["epoch_spread"]} if name == "none" else {}),
            "test_accuracy": r.get("test_accuracy"),
            "test_accuracy_transformed_test": r.get("test_accuracy_transformed_test"),
            "recovered_fraction": frac,
            "verdict": ("ineffective" if name == "none" else "broken") if reached else "holds",
        }
        if _is_oracle(name, r):
            per[name]["verdict"] = "upper bound"
    broken = sorted((n for n, v in per.items() if v["verdict"] == "broken"), key=lambda n: -per[n]["accuracy"])
    ineffective = per.get("none", {}).get("verdict") == "ineffective"
    leaks, leak_why = _leak(dfr, th)
    ft_leaks, ft_why = _finetune_leak(finetune, th)
    if ft_leaks and not leaks:
        leaks, leak_why = True, ft_why + (f" ({leak_why})" if leak_why else "")
    elif ft_why:
        leak_why = f"{leak_why}; {ft_why}" if leak_why else ft_why
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
    elif ineffective:
        overall = "ineffective"
        at = f" at the {level} level" if level else ""
        nxt = next_level(level) if level else None
        reason = (f"standard training alone recovers {100 * per['none']['recovered_fraction']:.0f}% of the "
                  f"clean-trained accuracy ({100 * per['none']['accuracy']:.1f}% vs {100 * clean_accuracy:.1f}%)"
                  f"{at}: the protection did not take effect at this training budget"
                  + (f"; audit at --level {nxt} to judge it" if nxt else ""))
    elif broken:
        best = broken[0]
        overall = "broken"
        reason = (f"the {best} attack recovers {100 * per[best]['recovered_fraction']:.0f}% of the clean-trained "
                  f"accuracy ({100 * per[best]['accuracy']:.1f}% vs {100 * clean_accuracy:.1f}%), which standard "
                  f"training does not ({100 * per['none']['accuracy']:.1f}%)" if "none" in per else
                  f"the {best} attack recovers {100 * per[best]['recovered_fraction']:.0f}% of the clean-trained "
                  f"accuracy ({100 * per[best]['accuracy']:.1f}% vs {100 * clean_accuracy:.1f}%)")
    elif leaks:
        overall = "leaks features"
        reason = f"no attack reaches {100 * th.broken_fraction:.0f}% of clean accuracy, but {leak_why}"
    else:
        overall = "holds"
        reason = f"no attack reaches {100 * th.broken_fraction:.0f}% of clean accuracy" + \
                 (f", and {leak_why}" if leak_why else "")
    if failed and overall in ("holds", "leaks features"):
        overall, reason = "incomplete", f"{why_failed}; of the steps that ran, {reason}"
    decisive, borderline, settle = _decisive(overall, per, broken), False, None
    clean_iv = clean_ev["interval"] if clean_ev else None
    line_iv = [th.broken_fraction * clean_iv[0], th.broken_fraction * clean_iv[1]] if clean_iv else None
    if decisive is not None and line_iv is not None and per[decisive]["interval"] is not None:
        d_iv = per[decisive]["interval"]
        borderline = overlap(tuple(d_iv), tuple(line_iv))
        if borderline:
            n_seeds = max((len(v) for v in seeds.values() if v), default=1)
            settle = _settle(level, n_seeds)
            who = "standard training" if decisive == "none" else f"the {decisive} attack"
            reason += (f". Borderline: {who}'s 95% interval [{100 * d_iv[0]:.1f}, {100 * d_iv[1]:.1f}]% overlaps "
                       f"the threshold's [{100 * line_iv[0]:.1f}, {100 * line_iv[1]:.1f}]% "
                       f"({100 * th.broken_fraction:.0f}% of the clean reference's); {settle} to settle it")
    return {"overall": overall, "reason": reason, "borderline": borderline, "settle": settle,
            "decisive": decisive, "clean_interval": clean_iv, "threshold_interval": line_iv, "n_test": n_test,
            "clean_seeds": clean_ev["seeds"] if clean_ev else None, "broken_by": broken, "per_attack": per, "failed_steps": failed,
            "dfr": dfr, "dfr_gain_points": dfr["gain_points"] if dfr else None,
            "finetune": None if not finetune else {k: finetune.get(k) for k in (
                "recovered_fraction", "recovered_fraction_k", "gain_points", "gain_k")},
            "clean_accuracy": clean_accuracy, "level": level,
            "thresholds": {"broken_fraction": th.broken_fraction, "leak_fraction": th.leak_fraction,
                           "leak_spread": th.leak_spread, "leak_points": th.leak_points}}


def _decisive(overall: str, per: dict[str, dict[str, Any]], broken: list[str]) -> str | None:
    """The accuracy whose comparison with the threshold made the verdict: standard training's for
    "ineffective", the best breaking attack's for "broken", and for "holds" / "leaks features"
    the figure that came closest to the line (an oracle's upper bound aside)."""
    if overall == "ineffective":
        return "none"
    if overall == "broken":
        return broken[0]
    if overall in ("holds", "leaks features"):
        real = [n for n, v in per.items() if v["verdict"] != "upper bound"]
        return max(real, key=lambda n: per[n]["accuracy"]) if real else None
    return None
