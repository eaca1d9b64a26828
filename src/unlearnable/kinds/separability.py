"""The `separability` job: linear separability of a set's perturbations or images, read against
the clean images at the same N and settings.

    {"kind": "separability", "data": data spec, "of": perturbations|images, "steps", "max_iter",
     "early_stop", "repeats", "n", "seed", "baseline": the clean images' separability spec | "self",
     "clean": the aligned clean images' data spec (an audit's; else found from the data's manifest)}
"""

from __future__ import annotations

from typing import Any

from ..analyses.separability import separability_of, with_baseline
from ..core.errors import UnlearnableError
from ..runner.jobs import JobContext, Spec, job_key, register_job
from .data import base_of, load_spec_data, made_by


def _separability(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    train = load_spec_data(spec["data"], ctx)
    base = None
    if spec["of"] == "perturbations":
        base = load_spec_data(spec["clean"], ctx) if spec.get("clean") else base_of(spec["data"], train, ctx)
    if spec["of"] == "perturbations" and base is None:
        raise UnlearnableError("the clean base images are unknown, so there are no perturbations to measure")
    n = spec.get("n")
    # Specs made before the released optimiser became the default carry neither key.
    r = separability_of(train, spec["of"], base=base, n=n if n is not None and n < len(train) else None,
                        subset_seed=int(spec["seed"]), steps=int(spec["steps"]), repeats=int(spec["repeats"]),
                        seed=int(spec["seed"]), max_iter=int(spec.get("max_iter", 1)),
                        early_stop=bool(spec.get("early_stop", True)), progress=ctx.progress)
    r.pop("seconds", None)  # results are content: timings live in the store's own columns
    for run in r.get("runs", []):
        run.pop("seconds", None)
    b = spec.get("baseline")
    if b == "self":
        return with_baseline(r, r)
    if isinstance(b, dict):
        return with_baseline(r, deps[job_key(b)])
    return r


def _deps(spec: Spec) -> list[Spec]:
    b = spec.get("baseline")
    return made_by(spec["data"]) + ([b] if isinstance(b, dict) else [])


register_job("separability", _separability, deps=_deps, title="linear separability")
