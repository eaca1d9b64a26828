"""The audit's "detectable" step: would someone who receives this set, without its clean copy,
notice the protection? `unlearnable.detect` at the row's level, on the row's training set.

Result keys (results.json `analyses.detect`): score (float in [0, 1]), protected (bool, the
decision at the shipped threshold), threshold, fpr_target, features, errors, per_class,
n_measured, level. Headline: "detectable: yes (0.97)".
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..runner.jobs import JobContext, Spec, register_job
from .steps import Row, register_step


def calibration_id() -> str:
    """The shipped calibration's checksum: a new calibration makes a new job, not a stale hit."""
    import json

    from ..detect import load_calibration

    text = json.dumps(load_calibration(), sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _detect(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    from ..detect import detect
    from ..runner.kinds import load_spec_data

    r = detect(load_spec_data(spec["data"], ctx), spec["level"], int(spec["seed"]))
    # Results are content: the timing lives in the store, the arrays belong to `detect --out`.
    return {k: v for k, v in r.items() if k not in ("per_sample", "directions", "seconds")}


register_job("detect", _detect, title="detecting the protection from the data alone")


def headline(r: dict[str, Any]) -> str:
    return f"detectable: {'yes' if r['protected'] else 'no'} ({r['score']:.2f})"


@register_step("detect", "detectable without the clean data (would a data collector notice?)", order=6,
               cost=lambda row: 0.05, headline=headline,
               paper="Zhu et al., AAAI 2024 (UDP); Sandoval-Segura et al., NeurIPS 2023, Table 6, Alg. 1")
def detect_step(row: Row) -> Spec:
    return {"kind": "detect", "data": row.data, "level": row.level.name, "seed": row.seed,
            "calibration": calibration_id()}
