"""Running an audit's steps: each a job spec, the shared ones in the cache's store and the
audit's own in DIR/jobs.sqlite, with a progress line per job and the reason of every step that
did not finish.

A job is shared when its identity does not mention the audited data's content (the clean
reference, the random network's DFR, the scratch fine-tuning): every audit of one base, demo
row and rerun computes it once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..attacks import best_accuracy, by_promise, facts_of, get_attack
from ..core.errors import one_line
from ..core.provenance import now_iso
from ..runner import JobContext, ResultStore, Spec, canonical, dependencies, expand, get_kind, job_key, run_jobs
from .config import AuditConfig, cache_dir
from .inputs import AuditInputs
from .steps import Row, StepInfo, StepSkipped, steps_for

log = logging.getLogger(__name__)


def _fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def plan(row: Row) -> tuple[list[StepInfo], dict[str, Spec], dict[str, str]]:
    """The row's steps, the job spec of each that can run, and why each other one cannot."""
    steps = steps_for(row)
    specs: dict[str, Spec] = {}
    skipped: dict[str, str] = {}
    for st in steps:
        try:
            specs[st.name] = st.spec(row)
        except StepSkipped as e:
            skipped[st.name] = str(e)
    return steps, specs, skipped


def own_place(out: Path, row: Row) -> Callable[[Spec], Path]:
    """The audit's layout: its protected training in train-protected/, attack NAME in attacks/NAME/."""
    def place(spec: Spec) -> Path:
        # A rerun on another seed (--seeds) beside the first, under seeds/SEED/.
        root = out if spec.get("seed", row.seed) == row.seed else out / "seeds" / str(spec["seed"])
        # The data spec itself, not only its content: auditing a clean set, the clean reference
        # has the same content under another spec, and a place of its own.
        if spec["kind"] == "train" and spec["data"] == row.data:
            return root / "train-protected"
        if spec["kind"] == "attack":
            return root / "attacks" / spec["attack"]
        return out / "jobs" / f"{spec['kind']}-{job_key(spec)[:16]}"
    return place


def execute(steps: list[StepInfo], specs: dict[str, Spec], skipped: dict[str, str], row: Row, out: Path,
            cfg: AuditConfig, inp: AuditInputs, data_root: str | os.PathLike[str] | None,
            progress: bool | None, cache: str | os.PathLike[str] | None, restart: bool = False) -> dict[str, Any]:
    """Run the step specs: shared jobs in the cache store, the audit's own in DIR/jobs.sqlite.

    A job is shared when its identity does not mention the audited data's content. Failed jobs
    run again (their cause may be gone); an own job that needs a shared one that failed is not
    run (it would otherwise redo the shared job in DIR)."""
    mine = row.data["content"]
    names = {job_key(s): st.name for st in steps if (s := specs.get(st.name)) is not None}
    titles = {st.name: st.title for st in steps}
    cost = {job_key(s): st.cost(row) for st in steps if (s := specs.get(st.name)) is not None}
    total = [sum(cost.values()) or 1.0]
    t_start = time.perf_counter()
    done_cost = [0.0]

    counted: set[str] = set()

    def finished_earlier(store: ResultStore, specs_here: list[Spec]) -> None:
        # Jobs a store already holds will not run: they are not part of what is left.
        for s in specs_here:
            key = job_key(s)
            if key not in counted and store.status(key) == "done":
                counted.add(key)
                total[0] -= cost.get(key, 0.0)

    def on_start(spec: Spec, i: int, n: int) -> None:
        key = job_key(spec)
        elapsed = time.perf_counter() - t_start
        rate = elapsed / done_cost[0] if done_cost[0] else None
        eta = f", about {_fmt(rate * max(total[0] - done_cost[0], 0.0))} left" if rate else ""
        what = titles.get(names.get(key, ""), get_kind(spec["kind"]).title)
        log.info("[%s] %s (elapsed %s%s)", names.get(key, spec["kind"]), what, _fmt(elapsed), eta)

    def on_done(key: str, outcome: dict[str, Any]) -> None:
        done_cost[0] += cost.get(key, 0.0)
        if not outcome["ok"]:
            log.warning("    failed: %s", outcome["error"])

    ctx_args = dict(device=cfg.device, progress=progress, data_root=str(data_root) if data_root else None)
    preload = {row.data["content"]: inp.protected}
    if row.clean is not None and inp.base is not None:
        preload[row.clean["content"]] = inp.base
    if row.test_ref is not None:
        preload[row.test_ref["content"]] = inp.test
    if row.pool_ref is not None:
        preload[row.pool_ref["content"]] = inp.clean_full
    results: dict[str, dict[str, Any]] = {}

    def run(batch: list[Spec]) -> None:
        # The shared jobs in the cache's store, then the audit's own in DIR/jobs.sqlite.
        jobs = expand(batch)
        shared = [s for s in jobs if mine not in canonical(s)]
        own = [s for s in jobs if mine in canonical(s)]
        if shared:
            cdir = cache_dir(cache)
            with ResultStore(cdir / "results.sqlite") as cstore:
                cctx = JobContext(cdir, cache=dict(preload), **ctx_args)
                finished_earlier(cstore, shared)
                run_jobs(shared, cstore, cctx, retry_failed=True, on_start=on_start, on_done=on_done,
                         restart=restart)
                for s in shared:
                    r = cstore.get(job_key(s))
                    if r is not None:
                        results[job_key(s)] = r
        known = {k: r["result"] for k, r in results.items() if r["status"] == "done"}
        shared_keys = {job_key(s) for s in shared}
        runnable: list[Spec] = []
        ready: set[str] = set()  # by key: two specs of one job may differ in their "_" names (a clean audit's starts)
        for s in own:  # expand() order: dependencies first
            if all(job_key(d) in known or (job_key(d) not in shared_keys and job_key(d) in ready)
                   for d in dependencies(s)):
                runnable.append(s)
                ready.add(job_key(s))
        with ResultStore(out / "jobs.sqlite") as store:
            octx = JobContext(out, place=own_place(out, row), cache=dict(preload), **ctx_args)
            finished_earlier(store, own)
            # A job this audit ran before at a place one of today's needs (the same attack with other
            # settings: a newer version's presets) gives way to it, instead of being refused.
            run_jobs(runnable, store, octx, known=known, retry_failed=True, on_start=on_start, on_done=on_done,
                     restart=restart, conflicts="supersede")
            for s in own:
                r = store.get(job_key(s))
                if r is not None:
                    results[job_key(s)] = r

    # A sequential audit (the level's panel, not --exhaustive) runs the attacks one at a time,
    # most promising per unit of cost first, and stops at the first that breaks the protection.
    later = [st.name for st in steps if cfg.sequential and st.record[:1] == ("attacks",) and st.name in specs]
    run([s for n, s in specs.items() if n not in later])
    # The set's manifest sharpens the order (a class-wise set tries the projection early).
    order = by_promise([n.split(":", 1)[1] for n in later], row.level.name,
                       facts_of(inp.protected.meta.get("manifest")))
    for i, name in enumerate(order):
        why = _settled(steps, specs, results, cfg, row)
        if why is not None:
            for rest in order[i:]:
                if not get_attack(rest).oracle:  # an upper bound is shown beside, whatever broke
                    skipped[f"attack:{rest}"] = why
                    specs.pop(f"attack:{rest}")
            order = [n for n in order[i:] if get_attack(n).oracle]
            for n in order:
                run([specs[f"attack:{n}"]])
            break
        run([specs[f"attack:{name}"]])
    seeds = _reseed(steps, specs, results, cfg, row, run) if cfg.seeds > 1 else None
    steps_rec: dict[str, Any] = {}
    step_of = {job_key(s): n for n, s in specs.items()}
    for st in steps:
        if st.name in skipped:
            steps_rec[st.name] = {"status": "skipped", "reason": skipped[st.name]}
            continue
        key = job_key(specs[st.name])
        r = results.get(key)
        if r is not None and r["status"] == "failed":
            steps_rec[st.name] = {"status": "failed", "key": key, "reason": _reason(r.get("error"))}
        elif r is None or r["status"] != "done":
            steps_rec[st.name] = {"status": "blocked", "key": key,
                                  "reason": _not_run(specs[st.name], results, step_of)}
        else:
            steps_rec[st.name] = {"status": "done", "key": key, "result": r["result"],
                                  "seconds": r.get("seconds"), "shared": mine not in canonical(specs[st.name])}
    failed = {n: e["reason"] for n, e in steps_rec.items() if e["status"] in ("failed", "blocked")}
    return {"steps": steps_rec, "failed_steps": failed, "finished": now_iso(),
            **({"seeds": seeds} if seeds is not None else {})}


def _reseed(steps: list[StepInfo], specs: dict[str, Spec], results: dict[str, dict[str, Any]], cfg: AuditConfig,
            row: Row, run: Callable[[list[Spec]], None]) -> dict[str, list[float]]:
    """--seeds N: the decisive trainings again on seeds seed + 1 .. seed + N - 1 (the clean
    reference, standard training, and the attack that came closest to the clean accuracy:
    the one a verdict reads), and each one's accuracy per seed, the audit's own first, by the
    names the verdict uses ("clean", "none", the attack). A seed whose job failed is left out."""
    def result(spec: Spec) -> dict[str, Any] | None:
        r = results.get(job_key(spec))
        return r["result"] if r is not None and r["status"] == "done" else None

    by_place = {st.record: st for st in steps if st.record}
    chosen = {"clean": by_place[("clean_reference",)], "none": by_place[("protected_training",)]}
    ran = [(st.record[1], r) for st in steps if st.record[:1] == ("attacks",) and st.name in specs
           and (r := result(specs[st.name])) is not None and not get_attack(st.record[1]).oracle]
    if ran:
        best = max(ran, key=lambda nr: best_accuracy(nr[1]))[0]
        chosen[best] = next(st for st in steps if st.record == ("attacks", best))
    chosen = {k: st for k, st in chosen.items() if st.name in specs}
    extra = [dataclasses.replace(row, seed=cfg.seed + i) for i in range(1, cfg.seeds)]
    again = {k: [st.spec(r) for r in extra] for k, st in chosen.items()}
    log.info("--seeds %d: %d more trainings (%s)", cfg.seeds, sum(map(len, again.values())), ", ".join(again))
    run([s for ss in again.values() for s in ss])
    out: dict[str, list[float]] = {}
    for k, st in chosen.items():
        figs = [best_accuracy(r) for s in [specs[st.name], *again[k]] if (r := result(s)) is not None]
        if figs:
            out[k] = figs
    return out


def _reason(error: str | None) -> str:
    """A recorded error as the one line a step's reason is (torch's run over several)."""
    return one_line(error or "failed (no error recorded)", 300)


def _not_run(spec: Spec, results: dict[str, dict[str, Any]], step_of: dict[str, str]) -> str:
    """Why a job did not run: the first job it depends on that failed, named as its step."""
    return _failed_dependency(spec, results, step_of) or "a job it depends on did not finish"


def _failed_dependency(spec: Spec, results: dict[str, dict[str, Any]], step_of: dict[str, str]) -> str | None:
    for d in dependencies(spec):
        r = results.get(job_key(d))
        if r is not None and r["status"] == "failed":
            what = f"step {step_of[job_key(d)]}" if job_key(d) in step_of else f"its {d['kind']} job"
            return f"{what} failed: {_reason(r.get('error'))}"
        if r is None or r["status"] != "done":
            deeper = _failed_dependency(d, results, step_of)
            if deeper:
                return deeper
    return None


def _settled(steps: list[StepInfo], specs: dict[str, Spec], results: dict[str, dict[str, Any]],
             cfg: AuditConfig, row: Row) -> str | None:
    """Why the remaining attacks of a sequential audit need not run, or None: an attack that ran
    breaks the protection, or standard training alone recovers the clean accuracy."""
    def result(name: str) -> dict[str, Any] | None:
        r = results.get(job_key(specs[name])) if name in specs else None
        return r["result"] if r is not None and r["status"] == "done" else None

    by_place = {st.record: st.name for st in steps if st.record}
    clean, prot = result(by_place[("clean_reference",)]), result(by_place[("protected_training",)])
    if not clean or clean.get("test_accuracy") is None:
        return None  # nothing to judge against: every attack runs
    line = cfg.thresholds.broken_fraction * clean["test_accuracy"]
    if prot and prot.get("test_accuracy") is not None and prot["test_accuracy"] >= line:
        return ("not run: standard training alone recovers the clean accuracy (the protection did not take "
                "effect at this level; --exhaustive runs every attack)")
    for st in steps:
        if st.record[:1] != ("attacks",) or (r := result(st.name)) is None:
            continue
        attack = st.record[1]
        if not get_attack(attack).oracle and best_accuracy(r) >= line:
            return (f"not run: {attack} broke the protection first (a sequential audit stops at the first "
                    "break; --exhaustive runs every attack)")
    return None
