"""The `attack` job, and attacks run from a program or the command as jobs of a store in their
output directory, so a finished one is reused and a directory holding another is refused.

    {"kind": "attack", "attack": NAME, "params": {...}, "data": data spec, "test": base name or data
     spec, "clean": data spec of the aligned clean images (run_attack's: null where there are
     none; absent: the data's base), "arch", "model", "recipe",
     "seed", "dfr_indices": {"sha256", "_path"} (optional)}

    r = run_attack("ortho-proj", AttackContext(train, test, "convnet", recipe, 0, "runs/op"))
    summary = run_all(ctx, ["jpeg", "ortho-proj"])     # `unlearnable attack all`: DIR/NAME each
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..attacks import ATTACKS, AttackContext, execute_attack, get_attack, ordered
from ..attacks.compare import summary_markdown, summary_table
from ..core.errors import UnlearnableError
from ..core.files import atomic_file, read_json, write_json
from ..core.params import to_dict
from ..models import arch_signature
from ..runner.executors import run_jobs
from ..runner.jobs import JobContext, Spec, job_key, register_job
from ..runner.store import ResultStore
from ..train.recipe import Recipe
from .data import base_of, load_spec_data, load_split, made_by, preload
from .dfr import dfr_indices_of, hold_indices

STORE = "jobs.sqlite"  # the store of an attack directory's jobs

log = logging.getLogger(__name__)


def attack_context(spec: Spec, ctx: JobContext) -> AttackContext:
    """The context an attack job runs in: its data loaded (and checked), its directory placed."""
    train = load_spec_data(spec["data"], ctx)
    test = load_split(spec["test"], "test", ctx)
    # A spec that names its clean images (run_attack's: None where the caller had none) gets
    # those; an audit's leaves them to the data's base.
    if "clean" in spec:
        clean = load_spec_data(spec["clean"], ctx) if spec["clean"] is not None else None
    else:
        clean = base_of(spec["data"], train, ctx)
    indices = dfr_indices_of(spec, ctx)
    return AttackContext(train, test, spec["arch"], Recipe.from_dict(spec["recipe"]), int(spec["seed"]),
                         ctx.dir_of(spec), ctx.torch_device, ctx.progress, clean,
                         spec["data"].get("_name") or spec["data"].get("method") or "", indices)


def _attack(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    return execute_attack(spec["attack"], attack_context(spec, ctx), dict(spec.get("params") or {}))


def _passes(spec: Spec, n_train: int, n_test: int) -> float:
    epochs = spec["recipe"]["epochs"]
    return n_train * epochs * get_attack(spec["attack"]).cost_of(spec.get("params"), epochs) + n_test * epochs / 3


def _deps(spec: Spec) -> list[Spec]:
    return made_by(spec["data"]) + made_by(spec.get("clean"))


register_job("attack", _attack, deps=_deps, passes=_passes, title="an attack")


def attack_spec(name: str, ctx: AttackContext, params: Any, jctx: JobContext,
                sets: list[Spec | None] | None = None) -> Spec:
    """The job of attack `name` with typed `params` on what `ctx` holds (preloaded into `jctx`;
    `sets`, that preload's specs when the caller made it already: hashing is per set, not per job)."""
    train, test, clean = sets if sets is not None else preload(jctx, ctx.train, ctx.test, ctx.clean)
    if ctx.data_name:
        train = {**train, "_name": ctx.data_name}
    t = ctx.train
    model = arch_signature(ctx.arch, t.num_classes, t.channels, t.image_size)
    spec: Spec = {"kind": "attack", "attack": name, "params": to_dict(params), "data": train, "test": test,
                  "arch": ctx.arch, "model": model, "recipe": ctx.spec().recipe.to_dict(), "seed": ctx.seed,
                  "clean": clean}
    if ctx.dfr_indices is not None:
        spec["dfr_indices"] = hold_indices(jctx, ctx.dfr_indices)
    return spec


def _refuse_earlier_layout(spec: Spec, place: Path) -> None:
    """A directory an earlier version left (a result.json, no store) holding another attack's
    run is refused, as the store refuses one of its own."""
    prev = place / "result.json"
    if prev.is_file():
        other = read_json(prev).get("attack")
        if other != spec["attack"]:
            raise UnlearnableError(f"{place}: holds a run of attack {other!r}; use another --out")


def _announce(spec: Spec, i: int, n: int) -> None:
    log.info("attack %s (%d/%d) ...", spec.get("attack", spec["kind"]), i, n)


def _run(specs: dict[str, Spec], jctx: JobContext, out: Path, reuse: bool) -> dict[str, dict[str, Any]]:
    """Run `specs` (name -> spec) as jobs of the store in `out`; the first failure is raised as
    the error it was, as a direct call would; a place holding another job is refused."""
    if not (out / STORE).exists():
        for s in specs.values():
            _refuse_earlier_layout(s, jctx.dir_of(s))
    with ResultStore(out / STORE) as store:
        if not reuse:
            for s in specs.values():
                store.reset(job_key(s))
        run_jobs(list(specs.values()), store, jctx, retry_failed=True, conflicts="refuse", raise_errors=True,
                 on_start=_announce)
        return {name: store.get(job_key(s))["result"] for name, s in specs.items()}


def run_attack(name: str, ctx: AttackContext, params: dict[str, str] | Any | None = None,
               reuse: bool = True) -> dict[str, Any]:
    """Run attack `name` into `ctx.out_dir` as a job of the store there (`OUT/jobs.sqlite`):
    a finished one of the same identity (data content, parameters, recipe, model definition,
    seed) is returned as it is, unless `reuse` is False; a directory holding another attack's
    run, or this one's on other data, is refused with a one-line error."""
    p = get_attack(name).params_for(ctx, params)  # refused before anything is made
    out = Path(ctx.out_dir)
    jctx = JobContext(out, device=str(ctx.device), progress=ctx.progress, place=lambda spec: out)
    spec = attack_spec(name, ctx, p, jctx)
    return _run({name: spec}, jctx, out, reuse)[name]


def run_all(ctx: AttackContext, names: list[str] | None = None,
            params: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """`unlearnable attack all`: `none` plus `names` (default: every registered attack that applies
    to the data) into ctx.out_dir/NAME, one store for all of them; writes summary.json and
    summary.md (clean test accuracy, transformed-test accuracy, cost against standard training)."""
    names = ordered({"none", *(names or ATTACKS)})
    out = Path(ctx.out_dir)
    jctx = JobContext(out, device=str(ctx.device), progress=ctx.progress,
                      place=lambda spec: out / spec["attack"])
    specs: dict[str, Spec] = {}
    skipped: dict[str, str] = {}
    sets = preload(jctx, ctx.train, ctx.test, ctx.clean)
    for name in names:
        why = ATTACKS[name].applies_to(ctx.train)
        if why:
            skipped[name] = why
            continue
        info = ATTACKS[name]
        specs[name] = attack_spec(name, ctx, info.params((params or {}).get(name)), jctx, sets)
    rows = _run(specs, jctx, out, reuse=True)
    summary = {"data": ctx.data_name, "arch": ctx.arch, "seed": ctx.seed, "recipe": ctx.recipe.to_dict(),
               "rows": summary_table(rows), "skipped": skipped}
    write_json(out / "summary.json", summary)
    with atomic_file(out / "summary.md", "w") as f:
        f.write(summary_markdown(summary))
    return summary
