"""The `detect` job: would someone who receives this set, without its clean copy, notice the
protection? `unlearnable.detect` at the spec's level, on its training set.

    {"kind": "detect", "data": data spec, "level", "seed", "calibration": the shipped calibration's id}

Result keys: score (float in [0, 1]), protected (bool, the decision at the shipped threshold;
None when the data cannot support one), decision (in words), cannot_judge (why, else None),
support, threshold, fpr_target, features, errors, per_class, n_measured, level.
"""

from __future__ import annotations

from typing import Any

from ..core.hashing import digest_json
from ..detect import detect, load_calibration
from ..runner.jobs import JobContext, Spec, register_job
from .data import load_spec_data, made_by


def calibration_id() -> str:
    """The shipped calibration's checksum: a new calibration makes a new job, not a stale hit."""
    return "sha256:" + digest_json(load_calibration())


def _detect(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    r = detect(load_spec_data(spec["data"], ctx), spec["level"], int(spec["seed"]))
    # Results are content: the timing lives in the store, the arrays belong to `detect --out`.
    return {k: v for k, v in r.items() if k not in ("per_sample", "directions", "seconds")}


register_job("detect", _detect, deps=lambda spec: made_by(spec["data"]),
             title="detecting the protection from the data alone")
