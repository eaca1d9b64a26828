"""The DFR jobs: over every checkpoint of a training, and on an untrained network.

    dfr         {"run": train spec, "pool", "n", "seed", "random": dfr-random spec, "spread": [dfr-random
                 specs of other seeds], "procedure": paper|released, "indices": {"sha256", "_path"}}
    dfr-random  {"arch", "model", "shape", "num_classes", "seed", "pool", "test", "n", "subset_seed",
                 "procedure", "crop_padding", "flip", "indices"}

`pool` and `test` name, by content (`kinds.data.split_ref`), the base dataset's whole clean
training split (DFR's subset is drawn from it, `data.clean.pool_split`) and clean test split the job uses. A clean subset named by a
file (`--dfr-indices`) travels as its checksum and path, and is checked against the checksum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analyses.dfr import dfr_curve, load_indices, random_init_dfr
from ..core.errors import UnlearnableError
from ..core.hashing import sha256_array
from ..runner.jobs import JobContext, Spec, job_key, register_job
from ..train.recipe import Recipe
from ..train.run import RunSpec
from .data import load_split
from .train import run_dir_of

# The keys a dfr job's result keeps of `dfr_curve`'s report (the figure and the files stay in
# the run directory).
KEEP = ("max_dfr_accuracy", "max_dfr_epoch", "min_dfr_loss", "min_dfr_epoch", "random_init_dfr_accuracy",
        "random_init_dfr_loss", "gain_over_random_init", "gain_over_random_init_points",
        "final_standard_test_accuracy", "settings", "procedure")


def hold_indices(ctx: JobContext, idx: np.ndarray, path: str | None = None) -> dict[str, str]:
    """The reference a spec gives to a clean subset the caller holds (its checksum, and where
    its file is when it has one), the indices themselves kept in `ctx.cache`."""
    ref = {"sha256": sha256_array(np.asarray(idx, dtype=np.int64))}
    ctx.cache[("indices", ref["sha256"])] = np.asarray(idx, dtype=np.int64)
    if path is not None:
        ref["_path"] = path
    return ref


def dfr_indices_of(spec: Spec, ctx: JobContext, pool_size: int | None = None,
                   key: str = "dfr_indices") -> np.ndarray | None:
    """The clean subset a spec names under `key` ({"sha256", "_path"}), from `ctx.cache` or its
    file, checked against its checksum; None when the spec names none (the subset is drawn)."""
    ref = spec.get(key)
    if not ref:
        return None
    held = ctx.cache.get(("indices", ref["sha256"]))
    if held is not None:
        return held
    if "_path" not in ref:
        raise UnlearnableError("a job names a clean subset it was not given and has no file for")
    idx = load_indices(ref["_path"], pool_size)
    if sha256_array(idx) != ref["sha256"]:
        raise UnlearnableError(f"{ref['_path']}: the DFR index file changed since the audit named it "
                               "(its checksum differs)")
    return idx


def _dfr_random(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    c, h, w = spec["shape"]
    # The released procedure refits on augmented images: the run's crop and flip for these images.
    recipe = Recipe(crop_padding=int(spec.get("crop_padding", 4)), flip=bool(spec.get("flip", True)))
    rs = RunSpec(spec["arch"], int(spec["num_classes"]), c, (h, w), recipe, int(spec["seed"]))
    pool = load_split(spec["pool"], "train", ctx)
    return random_init_dfr(rs, pool, load_split(spec["test"], "test", ctx),
                           n=int(spec["n"]), seed=int(spec["subset_seed"]), device=ctx.torch_device,
                           procedure=spec.get("procedure", "paper"),
                           indices=dfr_indices_of(spec, ctx, len(pool), "indices"))


def _dfr(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    run = spec["run"]
    run_dir = run_dir_of(run, ctx, deps)
    rnd = deps.get(job_key(spec["random"])) if spec.get("random") else None
    pool = load_split(spec["pool"], "train", ctx)
    r = dfr_curve(run_dir, pool, load_split(run.get("test") or spec["pool"], "test", ctx),
                  n=int(spec["n"]), seed=int(spec["seed"]), device=ctx.torch_device, progress=ctx.progress,
                  random_init=rnd, procedure=spec.get("procedure", "paper"),
                  indices=dfr_indices_of(spec, ctx, len(pool), "indices"))
    out = {**{k: r[k] for k in KEEP}, "run_dir": str(run_dir),
           "curve": [{k: c.get(k) for k in ("epoch", "dfr_accuracy", "dfr_loss", "test_accuracy")}
                     for c in r["curve"]]}
    # Other random initializations on the same clean subset: how much the baseline itself varies.
    others = [deps[job_key(s)]["dfr_accuracy"] for s in spec.get("spread", [])]
    if others:
        inits = [r["random_init_dfr_accuracy"], *others]
        out["random_inits"] = inits
        out["random_mean"] = float(np.mean(inits))
        out["random_spread"] = float(np.std(inits, ddof=1))
    return out


def _dfr_deps(spec: Spec) -> list[Spec]:
    return [spec["run"]] + ([spec["random"]] if spec.get("random") else []) + list(spec.get("spread", []))


def _head_passes(spec: Spec, n_train: int, n_test: int) -> float:
    """One DFR head's cost in training passes: a forward over the subset and the test set, or,
    for the released refit, 15 epochs of up to 20 L-BFGS evaluations (forward only, a third)."""
    n = min(spec["n"], n_train)
    return (n * 300 + n_test) / 3 if spec.get("procedure") == "released" else (n + n_test) / 3


def _dfr_passes(spec: Spec, n_train: int, n_test: int) -> float:
    return _head_passes(spec, n_train, n_test) * (spec["run"]["recipe"]["epochs"] + 1)


register_job("dfr-random", _dfr_random, passes=_head_passes,
             title="DFR on the untrained network (shared by every audit of this base)")
register_job("dfr", _dfr, deps=_dfr_deps, passes=_dfr_passes, title="DFR over every checkpoint")
