"""The built-in job kinds: poison, train, attack, dfr, dfr-random, separability.

Field by kind (see `jobs.py` for the data forms; `test` and `pool` name the base dataset whose
clean test split / whole clean training split the job uses):

    poison        the poison's own data fields {"method", "params", "dataset", "subset", "seed", "level"}
    train         {"data", "test", "arch", "model", "recipe", "seed"}
    attack        {"data", "test", "attack", "params", "arch", "model", "recipe", "seed"}
    dfr           {"run": train spec, "pool", "n", "seed", "random": dfr-random spec, "spread": [dfr-random
                   specs of other seeds], "procedure": paper|released, "indices": {"sha256", "_path"}}
    dfr-random    {"arch", "model", "shape", "num_classes", "seed", "pool", "test", "n", "subset_seed",
                   "procedure", "crop_padding", "flip", "indices"}
    separability  {"data", "of": perturbations|images, "steps", "max_iter", "early_stop", "repeats", "n",
                   "seed", "baseline": separability spec of the clean images | "self" (optional)}
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import DataError, UnlearnableError
from ..core.files import temp_prefix
from ..core.lock import FileLock
from ..data.imageset import ImageSet
from ..data.identity import content_id
from .jobs import JobContext, Spec, job_dir, job_key, poison_spec_of, register_job

log = logging.getLogger(__name__)


# --- data ---------------------------------------------------------------------------------------

def _cached(ctx: JobContext, key: Any, load) -> Any:
    if key not in ctx.cache:
        ctx.cache[key] = load()
    return ctx.cache[key]


def named_split(name: str, split: str, ctx: JobContext) -> ImageSet:
    from ..data.resolve import load_data

    return _cached(ctx, (split, name), lambda: load_data(name, split, ctx.data_root))


def _loads(d: Path) -> bool:
    from ..data.store import load_dataset_dir

    if not d.exists():
        return False
    try:
        load_dataset_dir(d)
        return True
    except UnlearnableError:
        return False  # a broken or partial copy: remade


def ensure_poison(spec: Spec, ctx: JobContext) -> Path:
    """The protected set's directory, made now if it is not there (deterministic: same spec, same
    bytes), so a worker without the driver's disk can still run a dependent job.

    Made under a lock next to it (processes on one machine make it once, the others wait and
    use it) into a temporary sibling that is renamed into place; where another process put a
    loadable copy there first (a machine the lock does not reach), that copy is used."""
    from ..poisons import PoisonContext, poison_dataset

    # A caller's layout (the demo's data/NAME) when it has one; else the job's own directory.
    own = ctx.place is not None and spec.get("kind") == "poison"
    d = ctx.place(spec) if own else job_dir(ctx.out_root, spec) / "data"
    if _loads(d):
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(d.parent / f".{d.name}.lock")
    lock.acquire(what=f"{d} (another process is making it)")
    try:
        if _loads(d):  # made by the process this one waited for
            return d
        stage = Path(tempfile.mkdtemp(prefix=temp_prefix(d), suffix=".tmp", dir=d.parent))
        try:
            pctx = PoisonContext(seed=int(spec["seed"]), device=ctx.device, progress=ctx.progress,
                                 work_dir=d.parent / f"{d.name}.work", level=spec.get("level", "paper"))
            # Made under d's own name (the manifest records it), in the temporary directory.
            made = poison_dataset(spec["method"], spec["dataset"], stage / d.name, seed=int(spec["seed"]),
                                  params=spec["params"], subset=spec.get("subset"), data_root=ctx.data_root,
                                  ctx=pctx, subset_seed=int(spec["seed"]))  # a grid's clean row draws with it
            _install(made, d)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        lock.release()
    return d


def _install(made: Path, d: Path) -> None:
    """Rename `made` to `d`; a loadable `d` that appeared meanwhile is kept, a broken one replaced."""
    try:
        os.rename(made, d)
        return
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise
    if _loads(d):
        log.info("%s: made by another process meanwhile; using that copy", d)
        return
    old = d.with_name(f"{temp_prefix(d)}{os.urandom(4).hex()}.old")  # a name remove_stale knows
    os.rename(d, old)
    os.rename(made, d)
    shutil.rmtree(old, ignore_errors=True)


def load_spec_data(data: Spec, ctx: JobContext) -> ImageSet:
    """The training set a data spec names, checked against the content it claims."""
    from ..data.resolve import load_base, load_data
    from ..data.subsets import random_subset

    if data.get("method"):  # made from its spec
        from ..data.store import load_dataset_dir

        return _cached(ctx, ("poison", job_key(poison_spec_of(data))),
                       lambda: load_dataset_dir(ensure_poison(poison_spec_of(data), ctx)))
    want = data.get("content")
    if want in ctx.cache:
        return ctx.cache[want]
    if "_path" in data:
        ds = load_data(data["_path"], "train", ctx.data_root)
    elif "_base_of" in data:
        ds = load_base(load_data(data["_base_of"], "train", ctx.data_root), ctx.data_root, clean=data["clean"])
    elif "clean" in data:
        ds = named_split(data["clean"], "train", ctx)
        if data.get("_subset") is not None and data["_subset"] < len(ds):
            ds = ds.subset(random_subset(ds, int(data["_subset"]), int(data.get("_seed", 0))))
    else:
        raise UnlearnableError(f"a data spec says neither how to make nor where to find it: {data}")
    if content_id(ds) != want:
        raise DataError(data.get("_path") or data.get("_base_of") or data.get("clean"),
                        "does not hold the data this job was made for (its content changed)")
    ctx.cache[want] = ds
    return ds


def base_of(data: Spec, train: ImageSet, ctx: JobContext) -> ImageSet | None:
    """The clean images aligned with `train` (itself when the data spec is a clean set)."""
    if "clean" in data:
        return train
    from ..data.clean import clean_side

    return _cached(ctx, ("base", data.get("content") or job_key(data)),
                   lambda: clean_side(train, data_root=ctx.data_root).base)


# --- kinds --------------------------------------------------------------------------------------

def _poison(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    from ..data.store import manifest_bound

    from ..data.store import read_manifest

    d = ensure_poison(spec, ctx)
    man = read_manifest(d)
    return {"path": os.path.relpath(d, ctx.out_root), "num_samples": man.get("num_samples"),
            "bound": manifest_bound(man), "perturbation_measured": man.get("perturbation_measured"),
            "seconds_generate": man.get("timing", {}).get("generate_seconds")}


def _run_spec(spec: Spec, train: ImageSet):
    from ..train.recipe import Recipe
    from ..train.run import spec_for

    # What run.json records as the data: something `load_data` resolves again (a path, or the
    # base dataset whose clean images these are), so `audit dfr RUN_DIR` finds the clean side.
    d = spec["data"]
    return spec_for(train, spec["arch"], Recipe.from_dict(spec["recipe"]), int(spec["seed"]),
                    d.get("_path") or d.get("clean") or d.get("method") or "")


def _train(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    from ..train.run import train_on

    train = load_spec_data(spec["data"], ctx)
    test = named_split(spec["test"], "test", ctx)
    out = ctx.dir_of(spec)
    _, res = train_on(train, test, _run_spec(spec, train), out, ctx.device, ctx.progress)
    return {"test_accuracy": res.test_accuracy, "test_loss": res.test_loss,
            "train_accuracy": res.train_accuracy, "epochs": res.epochs, "seconds": round(res.seconds, 3),
            "run_dir": str(out),
            "curve": [{"epoch": h["epoch"], "test_accuracy": h.get("test_accuracy")} for h in res.history]}


def _train_passes(spec: Spec, n_train: int, n_test: int) -> float:
    epochs = spec["recipe"]["epochs"]
    return n_train * epochs + n_test * epochs / 3  # a test pass per epoch: forward only


def _attack(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    from ..attacks import AttackContext, run_attack
    from ..train.recipe import Recipe

    train = load_spec_data(spec["data"], ctx)
    test = named_split(spec["test"], "test", ctx)
    actx = AttackContext(train, test, spec["arch"], Recipe.from_dict(spec["recipe"]), int(spec["seed"]),
                         ctx.dir_of(spec), ctx.device, ctx.progress, base_of(spec["data"], train, ctx),
                         spec["data"].get("_name") or spec["data"].get("method") or "")
    return run_attack(spec["attack"], actx, dict(spec.get("params") or {}))


def _attack_passes(spec: Spec, n_train: int, n_test: int) -> float:
    from ..attacks import get_attack

    epochs = spec["recipe"]["epochs"]
    return n_train * epochs * get_attack(spec["attack"]).cost_of(spec.get("params")) + n_test * epochs / 3


def _dfr_indices(spec: Spec, ctx: JobContext, pool_size: int):
    """The clean subset named by a spec's "indices" ({"sha256", "_path"}), checked against its
    checksum, or None (the subset is drawn from the seed)."""
    ref = spec.get("indices")
    if not ref:
        return None
    from ..core.hashing import sha256_array
    from ..analyses.dfr import load_indices

    idx = load_indices(ref["_path"], pool_size)
    if sha256_array(idx) != ref["sha256"]:
        raise UnlearnableError(f"{ref['_path']}: the DFR index file changed since the audit named it "
                               "(its checksum differs)")
    return idx


def _dfr_random(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    from ..analyses.dfr import random_init_dfr
    from ..train.recipe import Recipe
    from ..train.run import RunSpec

    c, h, w = spec["shape"]
    # The released procedure refits on augmented images: the run's crop and flip for these images.
    recipe = Recipe(crop_padding=int(spec.get("crop_padding", 4)), flip=bool(spec.get("flip", True)))
    rs = RunSpec(spec["arch"], int(spec["num_classes"]), c, (h, w), recipe, int(spec["seed"]))
    pool = named_split(spec["pool"], "train", ctx)
    return random_init_dfr(rs, pool, named_split(spec["test"], "test", ctx),
                           n=int(spec["n"]), seed=int(spec["subset_seed"]), device=ctx.device,
                           procedure=spec.get("procedure", "paper"), indices=_dfr_indices(spec, ctx, len(pool)))


def _dfr(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from ..analyses.dfr import dfr_curve

    run = spec["run"]
    run_dir = ctx.dir_of(run)  # where this process sees it (a scratch copy, with a storage URL)
    if not (run_dir / "result.json").exists() and job_key(run) in deps:
        run_dir = Path(deps[job_key(run)]["run_dir"])
    if not (run_dir / "result.json").exists():  # a worker without the driver's disk
        run_dir = Path(_train(run, ctx, {})["run_dir"])
    rnd = deps.get(job_key(spec["random"])) if spec.get("random") else None
    test_name = run.get("test") or spec["pool"]
    pool = named_split(spec["pool"], "train", ctx)
    r = dfr_curve(run_dir, pool, named_split(test_name, "test", ctx),
                  n=int(spec["n"]), seed=int(spec["seed"]), device=ctx.device, progress=ctx.progress,
                  random_init=rnd, procedure=spec.get("procedure", "paper"),
                  indices=_dfr_indices(spec, ctx, len(pool)))
    keep = ("max_dfr_accuracy", "max_dfr_epoch", "min_dfr_loss", "min_dfr_epoch", "random_init_dfr_accuracy",
            "random_init_dfr_loss", "gain_over_random_init", "gain_over_random_init_points",
            "final_standard_test_accuracy", "settings", "procedure")
    out = {**{k: r[k] for k in keep}, "run_dir": str(run_dir),
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


def _separability(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    from ..analyses.separability import separability_of, with_baseline

    train = load_spec_data(spec["data"], ctx)
    base = base_of(spec["data"], train, ctx) if spec["of"] == "perturbations" else None
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


def _separability_deps(spec: Spec) -> list[Spec]:
    b = spec.get("baseline")
    return [b] if isinstance(b, dict) else []


register_job("poison", _poison, title="making a protected set")
register_job("train", _train, passes=_train_passes, title="standard training")
register_job("attack", _attack, passes=_attack_passes, title="an attack")
register_job("dfr-random", _dfr_random, passes=_head_passes,
             title="DFR on the untrained network (shared by every audit of this base)")
register_job("dfr", _dfr, deps=_dfr_deps, passes=_dfr_passes, title="DFR over every checkpoint")
register_job("separability", _separability, deps=_separability_deps, title="linear separability")
