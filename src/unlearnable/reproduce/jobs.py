"""Job specs: one cell of a reproduction grid as plain JSON, keyed by its content hash.

A job spec is a JSON object that says everything that determines the job's result and nothing
else (no paths, no device, no host): `kind` plus the kind's fields. Its key is the sha256 of its
canonical JSON (`sort_keys`, no whitespace), so the same experiment asked for by two tables, or by
two runs of a grid, is one row of the result store and runs once.

Kinds (each carries `dataset`, `subset`, `seed`):

    data          the training set of a row: {"method": "clean"} or a poison {"method", "params", "budget"}
    poison        make the protected set (its `data` spec is the poison's own fields)
    train         standard training with a checkpoint per epoch {"data", "arch", "recipe"}
    dfr           DFR over every checkpoint of a `train` job {"run": train spec, "n"}
    separability  linear separability {"data", "of": perturbations|images, "steps", "repeats", "n"}
    attack        {"data", "attack", "params", "arch", "recipe"}

Dependent specs embed their dependencies' specs (not only their keys): a worker can rebuild what
it needs from the spec alone (the poisons are seeded and deterministic), and a dependency that
changes changes every key downstream.

`run_job(spec, out_root)` runs one job and returns its result dict (JSON-able). Artifacts go to
`job_dir(out_root, spec)`; training resumes from there after a kill.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .._io import UnlearnableError, read_json
from ..data.imageset import ImageSet

Spec = dict[str, Any]


def canonical(spec: Spec) -> str:
    """The canonical JSON text of a spec (sorted keys, no whitespace, ASCII)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def job_key(spec: Spec) -> str:
    """sha256 hex of the spec's canonical JSON: the job's identity in the result store."""
    return hashlib.sha256(canonical(spec).encode()).hexdigest()


def job_dir(out_root: str | os.PathLike[str], spec: Spec) -> Path:
    """Where a job keeps its artifacts: `OUT/jobs/<kind>-<method>-<key[:16]>`."""
    method = spec.get("method") or spec.get("data", {}).get("method") \
        or spec.get("run", {}).get("data", {}).get("method", "")
    return Path(out_root) / "jobs" / f"{spec['kind']}-{method}-{job_key(spec)[:16]}"


def dependencies(spec: Spec) -> list[Spec]:
    """The jobs that must finish before `spec` (a poison before its uses, training before DFR)."""
    deps: list[Spec] = []
    data = spec.get("data")
    if data is not None and data.get("method") != "clean":
        deps.append(poison_spec_of(data))
    if spec["kind"] == "dfr":
        deps.append(spec["run"])
    return deps


def data_spec(dataset: str, method: str, subset: int | None, seed: int,
              params: dict[str, str] | None = None, budget: str = "quick") -> Spec:
    """The training set of a row: the clean (subset of the) dataset or a protected version."""
    if method == "clean":
        return {"method": "clean", "dataset": dataset, "subset": subset, "seed": seed}
    return {"method": method, "params": dict(params or {}), "dataset": dataset, "subset": subset,
            "seed": seed, "budget": budget}


def poison_spec_of(data: Spec) -> Spec:
    return {"kind": "poison", **data}


# ---------------------------------------------------------------------------------------------
# Running a job


def _load_clean(data: Spec, data_root: str | None) -> tuple[ImageSet, ImageSet]:
    from ..data.resolve import load_data, random_subset

    full = load_data(data["dataset"], "train", data_root)
    test = load_data(data["dataset"], "test", data_root)
    if data.get("subset") is not None and data["subset"] < len(full):
        full = full.subset(random_subset(full, int(data["subset"]), int(data["seed"])))
    return full, test


def ensure_poison(spec: Spec, out_root: Path, device: str, progress: bool | None,
                  data_root: str | None) -> Path:
    """The protected set's directory, made now if it is not there (deterministic: same seed,
    same bytes), so a worker without the driver's disk can still run a dependent job."""
    from ..data.store import load_dataset_dir
    from ..poisons import PoisonContext, poison_dataset

    d = job_dir(out_root, spec) / "data"
    if d.exists():
        try:
            load_dataset_dir(d)
            return d
        except UnlearnableError:
            pass  # a broken or partial copy is remade below (overwrite=True)
    budget = "paper" if spec.get("budget") == "paper" else "quick"
    ctx = PoisonContext(seed=int(spec["seed"]), device=device, progress=progress,
                        work_dir=job_dir(out_root, spec) / "work", budget=budget)
    return poison_dataset(spec["method"], spec["dataset"], d, seed=int(spec["seed"]), params=spec["params"],
                          subset=spec.get("subset"), data_root=data_root, overwrite=d.exists(), ctx=ctx)


def load_row_data(data: Spec, out_root: Path, device: str, progress: bool | None,
                  data_root: str | None) -> tuple[ImageSet, ImageSet, ImageSet]:
    """(training set, clean test set, aligned clean training images) of a row."""
    from ..data.resolve import load_base, load_data
    from ..data.store import load_dataset_dir

    if data["method"] == "clean":
        train, test = _load_clean(data, data_root)
        return train, test, train
    d = ensure_poison(poison_spec_of(data), out_root, device, progress, data_root)
    protected = load_dataset_dir(d)
    return protected, load_data(data["dataset"], "test", data_root), load_base(protected, data_root)


def run_job(spec: Spec, out_root: str | os.PathLike[str], device: str = "auto",
            progress: bool | None = False, data_root: str | None = None) -> dict[str, Any]:
    """Run one job; return its result (JSON-able). Idempotent: finished artifacts are reused."""
    from ..train.engine import Recipe
    from ..train.run import spec_for, train_on

    out_root = Path(out_root)
    kind = spec["kind"]
    wd = job_dir(out_root, spec)
    if kind == "poison":
        d = ensure_poison(spec, out_root, device, progress, data_root)
        man = read_json(d / "manifest.json")
        return {"path": str(d.relative_to(out_root)), "num_samples": man.get("num_samples"),
                "budget": man.get("budget"), "perturbation_measured": man.get("perturbation_measured"),
                "seconds_generate": man.get("timing", {}).get("generate_seconds")}
    if kind == "train":
        train, test, _ = load_row_data(spec["data"], out_root, device, progress, data_root)
        rs = spec_for(train, spec["arch"], Recipe.from_dict(spec["recipe"]), int(spec["seed"]),
                      spec["data"]["method"])
        _, res = train_on(train, test, rs, wd / "run", device, progress)
        return {"test_accuracy": res.test_accuracy, "test_loss": res.test_loss,
                "train_accuracy": res.train_accuracy, "epochs": res.epochs,
                "curve": [{"epoch": h["epoch"], "test_accuracy": h.get("test_accuracy")} for h in res.history]}
    if kind == "dfr":
        from ..analyses.dfr import dfr_curve

        run_spec = spec["run"]
        run_dir = job_dir(out_root, run_spec) / "run"
        if not (run_dir / "result.json").exists():
            run_job(run_spec, out_root, device, progress, data_root)  # a worker without the driver's disk
        clean_train, test = _load_clean({**run_spec["data"], "subset": None}, data_root)
        r = dfr_curve(run_dir, clean_train, test, n=int(spec["n"]), seed=int(spec["seed"]), device=device,
                      progress=progress, plot=False)
        keep = ("max_dfr_accuracy", "max_dfr_epoch", "min_dfr_loss", "min_dfr_epoch", "random_init_dfr_accuracy",
                "random_init_dfr_loss", "gain_over_random_init", "final_standard_test_accuracy", "settings")
        return {**{k: r[k] for k in keep},
                "curve": [{k: c.get(k) for k in ("epoch", "dfr_accuracy", "dfr_loss", "test_accuracy")}
                          for c in r["curve"]]}
    if kind == "separability":
        from ..analyses.separability import separability_of

        train, _, base = load_row_data(spec["data"], out_root, device, progress, data_root)
        n = spec.get("n")
        r = separability_of(train, spec["of"], base=base if spec["of"] == "perturbations" else None,
                            n=n if n is not None and n < len(train) else None, subset_seed=int(spec["seed"]),
                            steps=int(spec["steps"]), repeats=int(spec["repeats"]), seed=int(spec["seed"]),
                            progress=progress)
        r.pop("seconds", None)
        for run in r.get("runs", []):
            run.pop("seconds", None)
        return r
    if kind == "attack":
        from ..attacks import AttackContext, run_attack

        train, test, base = load_row_data(spec["data"], out_root, device, progress, data_root)
        ctx = AttackContext(train, test, spec["arch"], Recipe.from_dict(spec["recipe"]), int(spec["seed"]),
                            wd / "attack", device, progress, base, spec["data"]["method"])
        r = run_attack(spec["attack"], ctx, dict(spec.get("params") or {}))
        drop = ("seconds_total", "seconds_train", "finished", "versions", "recipe")
        return {k: v for k, v in r.items() if k not in drop and not k.startswith("seconds")}
    raise UnlearnableError(f"unknown job kind {kind!r}")
