"""The fine-tuning jobs, and `finetune_curve`: the analysis of one training run, its fine-tunes
run as jobs of a store so a rerun (or another analysis of the same base) reuses them.

    finetune-start  {"kind": "finetune-start", "pool", "test", "params", "recipe", "seed", "dfr_n",
                     "dfr_indices" (optional), and the start: "from": a train spec (its final
                     checkpoint) | "weights": {"sha256", "_path"} with "arch", "shape",
                     "num_classes" (a checkpoint file) | neither (the seeded initialization of
                     "arch", "shape", "num_classes", "seed": training from scratch)}
    finetune        {"kind": "finetune", "starts": {"protected", "scratch", "clean": finetune-start
                     specs}, "params", "seed", "dfr_n", "dfr_indices"}: the rows and the figure

One `finetune-start` job per starting network, so the references are shared: the scratch start
depends on the architecture, shapes and seed only, the clean one on the clean run, so every
audit of one base computes them once (the shared cache); only the protected start is the audit's
own. `pool` and `test` name the base dataset (a name) or a set the caller holds (a data spec).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analyses.dfr import resolve_clean
from ..analyses.finetune import (
    FinetuneParams, assemble, capped, check_sets, final_checkpoint, finetune_from, finetune_passes,
    finetune_subsets, plot_finetune,
)
from ..core.errors import DataError, UnlearnableError
from ..core.files import atomic_file, write_json
from ..core.hashing import sha256_array, sha256_file
from ..core.provenance import now_iso, versions
from ..data.imageset import ImageSet
from ..runner.executors import run_jobs
from ..runner.jobs import JobContext, Spec, job_key, register_job
from ..runner.store import ResultStore
from ..train.checkpoint import checkpoint_paths, load_weights
from ..train.recipe import Recipe
from ..train.run import RunSpec, adapt_recipe
from .data import load_split, preload
from .dfr import dfr_indices_of, hold_indices
from .train import run_dir_of


def _start_model(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> torch.nn.Module:
    if spec.get("from") is not None:
        rs, path = final_checkpoint(run_dir_of(spec["from"], ctx, deps))
        return load_weights(rs.build(), path)
    c, h, w = spec["shape"]
    rs = RunSpec(spec["arch"], int(spec["num_classes"]), c, (h, w), Recipe(), int(spec.get("init_seed", spec["seed"])))
    if spec.get("weights") is None:  # the seeded initialization every run of this architecture starts from
        return rs.build()
    ref = spec["weights"]
    if sha256_file(ref["_path"]) != ref["sha256"]:
        raise DataError(ref["_path"], "the checkpoint changed since the fine-tuning named it (its checksum differs)")
    return load_weights(rs.build(), ref["_path"])


def _start_job(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    model = _start_model(spec, ctx, deps)
    pool, test = load_split(spec["pool"], "train", ctx), load_split(spec["test"], "test", ctx)
    indices = dfr_indices_of(spec, ctx, len(pool))
    seed, dfr_n = int(spec["seed"]), int(spec["dfr_n"])
    p = capped(FinetuneParams(**spec["params"]), len(pool), seed, dfr_n, indices)
    if model.head.out_features != pool.num_classes:
        raise UnlearnableError(f"the network has {model.head.out_features} classes, the clean pool {pool.num_classes}")
    order = finetune_subsets(len(pool), p.sizes, seed, dfr_n, indices=indices)
    res = finetune_from(model, spec.get("_name", "start"), pool, test, order, p, Recipe.from_dict(spec["recipe"]),
                        seed, ctx.torch_device, ctx.progress)
    for r in res.values():
        r.pop("seconds", None)  # results are content: timings live in the store
    return {"by_k": {str(k): r for k, r in res.items()}, "order_sha256": sha256_array(order)}


def _start_deps(spec: Spec) -> list[Spec]:
    return [spec["from"]] if spec.get("from") is not None else []


def _finetune_job(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    scratch = spec["starts"]["scratch"]
    pool = load_split(scratch["pool"], "train", ctx)
    indices = dfr_indices_of(spec, ctx, len(pool))
    seed, dfr_n = int(spec["seed"]), int(spec["dfr_n"])
    p = capped(FinetuneParams(**spec["params"]), len(pool), seed, dfr_n, indices)
    acc = {}
    for name in ("protected", "scratch", "clean"):
        s = spec["starts"].get(name)
        if s is not None:
            r = deps[job_key(s)] if job_key(s) in deps else _start_job(s, ctx, deps)
            acc[name] = {int(k): v for k, v in r["by_k"].items()}
    out = ctx.dir_of(spec)
    out.mkdir(parents=True, exist_ok=True)
    order = finetune_subsets(len(pool), p.sizes, seed, dfr_n, indices=indices)
    with atomic_file(out / "finetune_indices.npy", "wb") as f:
        np.save(f, order, allow_pickle=False)
    r = assemble(acc, p, {"seed": spec["seed"], "dfr_n": spec["dfr_n"], "pool": len(pool),
                          "base_recipe": scratch["recipe"]})
    write_json(out / "finetune.json", r)
    plot_finetune(r["rows"], out / "finetune.png", "fine-tuning on k clean images")
    return {**r, "dir": str(out)}


register_job("finetune-start", _start_job, deps=_start_deps,
             passes=lambda spec, n, t: finetune_passes(spec["params"], 1, t),
             title="fine-tuning one starting network on k clean images")
register_job("finetune", _finetune_job, deps=lambda spec: [s for s in spec["starts"].values() if s is not None],
             title="fine-tuning: protected vs scratch vs clean")


def finetune_curve(
    run_dir: str | os.PathLike[str],
    clean_run_dir: str | os.PathLike[str] | None = None,
    clean_train: ImageSet | None = None,
    clean_test: ImageSet | None = None,
    params: FinetuneParams | None = None,
    seed: int = 0,
    dfr_n: int = 5000,
    out_dir: str | os.PathLike[str] | None = None,
    each_checkpoint: bool = False,
    device: str = "auto",
    progress: bool | None = None,
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    plot: bool = True,
    dfr_indices: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fine-tune from `run_dir`'s final checkpoint (and, with `each_checkpoint`, from every epoch's)
    on nested seeded clean subsets; compare with scratch and with `clean_run_dir`. Writes
    finetune.json (+ .png, indices) into `out_dir` (default: run_dir); returns its dict.

    clean_train / clean_test default to the run's clean side (the base's whole training split,
    the pool the subsets come from, and its test split). `seed` draws the subsets and every
    fine-tune's batches and augmentation; `dfr_n` is DFR's subset size (or `dfr_indices` the
    subset itself), whose images are left out. Each fine-tune is a job of the store in
    `cache_dir` (results.sqlite) or else OUT/jobs.sqlite: a rerun reuses what finished, and
    analyses of one base that share `cache_dir` compute the scratch and clean references once.
    """
    t_start = time.perf_counter()
    p = params or FinetuneParams()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    spec, final = final_checkpoint(run_dir)
    starts: list[tuple[str, RunSpec, Path | None]] = [("protected", spec, final), ("scratch", spec, None)]
    if clean_run_dir is not None:
        cspec, cfinal = final_checkpoint(clean_run_dir)
        if (cspec.arch, cspec.num_classes, cspec.in_channels, tuple(cspec.image_size)) != \
                (spec.arch, spec.num_classes, spec.in_channels, tuple(spec.image_size)):
            raise UnlearnableError(f"{clean_run_dir}: the clean run is a {cspec.arch} on {cspec.image_size} "
                                   f"images, the protected run a {spec.arch} on {spec.image_size}")
        starts.append(("clean", cspec, cfinal))
    if each_checkpoint:
        starts += [(f"protected-epoch{e}", spec, path) for e, path in checkpoint_paths(run_dir)[:-1]]
    if clean_train is None or clean_test is None:
        tr, te = resolve_clean(spec.data, data_root)
        clean_train = clean_train if clean_train is not None else tr
        clean_test = clean_test if clean_test is not None else te
    check_sets(spec, clean_train, clean_test)
    order = finetune_subsets(len(clean_train), p.sizes, seed, dfr_n, indices=dfr_indices)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "finetune_indices.npy", "wb") as f:
        np.save(f, order, allow_pickle=False)
    base_recipe = adapt_recipe(spec.recipe, clean_train)
    store_path = Path(cache_dir) / "results.sqlite" if cache_dir is not None else out / "jobs.sqlite"
    ctx = JobContext(store_path.parent, device, progress, str(data_root) if data_root else None)
    pool_ref, test_ref = preload(ctx, clean_train, clean_test)
    common: Spec = {"kind": "finetune-start", "pool": pool_ref, "test": test_ref, "params": p.to_dict(),
                    "recipe": base_recipe.to_dict(), "seed": seed, "dfr_n": dfr_n}
    if dfr_indices is not None:
        common["dfr_indices"] = hold_indices(ctx, dfr_indices)
    specs: dict[str, Spec] = {}
    for name, rs, path in starts:
        s = {**common, "_name": name, "arch": rs.arch, "shape": [rs.in_channels, *rs.image_size],
             "num_classes": rs.num_classes}
        if path is None:
            if rs.seed != seed:  # the run's own initialization, drawn with its seed
                s["init_seed"] = rs.seed
        else:
            s["weights"] = {"sha256": sha256_file(path), "_path": str(path)}
        specs[name] = s
    with ResultStore(store_path) as store:
        run_jobs(list(specs.values()), store, ctx, retry_failed=True, raise_errors=True)
        acc = {name: {int(k): v for k, v in store.get(job_key(s))["result"]["by_k"].items()}
               for name, s in specs.items()}
    report = {"audit": "finetune", "run_dir": str(run_dir),
              "clean_run_dir": str(clean_run_dir) if clean_run_dir is not None else None,
              "arch": spec.arch, "data": spec.data,
              **assemble(acc, p, {"seed": seed, "dfr_n": dfr_n, "clean_train": clean_train.name,
                                  "clean_test": clean_test.name, "num_test": len(clean_test),
                                  "pool": len(clean_train), "base_recipe": base_recipe.to_dict(),
                                  "each_checkpoint": each_checkpoint}),
              "seconds": round(time.perf_counter() - t_start, 3), "device": str(ctx.torch_device),
              "finished": now_iso(), "versions": versions()}
    write_json(out / "finetune.json", report)
    if plot:
        plot_finetune(report["rows"], out / "finetune.png",
                      f"fine-tuning: {spec.arch} on {Path(spec.data).name or spec.data}")
    return report
