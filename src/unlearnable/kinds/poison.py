"""The `poison` job: a protected set made from its spec (`{"method", "params", "dataset",
"subset", "seed", "level"}`), deterministic, so any process can make it again."""

from __future__ import annotations

import os
from typing import Any

from ..data.store import manifest_bound, read_manifest
from ..runner.jobs import JobContext, Spec, register_job
from .data import ensure_poison


def _poison(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    d = ensure_poison(spec, ctx)
    man = read_manifest(d)
    return {"path": os.path.relpath(d, ctx.out_root), "num_samples": man.get("num_samples"),
            "bound": manifest_bound(man), "perturbation_measured": man.get("perturbation_measured"),
            "seconds_generate": man.get("timing", {}).get("generate_seconds")}


register_job("poison", _poison, title="making a protected set")
