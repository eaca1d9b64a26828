"""`unlearnable audit DATA --out DIR`: every analysis of a protected dataset, one verdict.

    unlearnable audit runs/regions --level quick --out runs/regions-audit

Steps (the registry `unlearnable.analyses.AUDITS`, then the level's attacks from `ATTACKS`):
standard training on the protected set with a checkpoint per epoch; the same recipe on the clean
images (the reference accuracy); DFR over the checkpoints and on a random network; separability
of the perturbations (when the base is known) and of the images; every chosen attack. Each step
is a job spec run by the one job runner (`unlearnable.runner`): the audit's own jobs are stored
in DIR/jobs.sqlite and reused on a rerun; jobs that do not depend on the audited data (the clean
reference, the random-network DFR) go to the shared cache (`~/.cache/unlearnable`, or `--cache`,
or $UNLEARNABLE_CACHE) and are computed once for every audit, demo row and rerun that needs them.
Then figures, `results.json`, `report.html` (self-contained) and `report.md`.

One audit at a time per DIR: a second one is refused at once (`_lock.dir_lock`). Audits of other
DIRs share the cache safely: each shared job runs in one of them, the others wait for it. A step
that fails is recorded with its reason (`failed_steps`), retried on the next run, and named by
the verdict, which never judges without it. `restart=True` discards unfinished training state
(and finished trainings whose checkpoints no longer load) so those steps start over.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UnlearnableError, one_line
from ..core.files import atomic_file, read_json, write_json
from ..core.provenance import now_iso, versions
from ..core.lock import dir_lock
from ..core.registry import lookup, lookup_all
from ..analyses.steps import Row, StepInfo, StepSkipped, steps_for
from ..attacks import ATTACKS, ordered
from ..data.clean import clean_side
from ..data.imageset import ImageSet
from ..data.resolve import load_data
from ..data.identity import content_id
from ..ladder import level as get_level, recipe_for
from ..runner import JobContext, ResultStore, Spec, canonical, expand, get_kind, job_key, run_jobs
from ..runner.executors import discard_artifacts
from ..runner.jobs import dependencies
from .report import render_audit_html, render_audit_md
from .verdict import Thresholds, dfr_window, verdict

log = logging.getLogger(__name__)


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The shared job cache: `cache`, else $UNLEARNABLE_CACHE, else ~/.cache/unlearnable."""
    if cache:
        return Path(cache)
    env = os.environ.get("UNLEARNABLE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unlearnable"


@dataclass
class AuditConfig:
    arch: str = "convnet"
    level: str = "quick"  # tiny | quick | paper (unlearnable.ladder)
    seed: int = 0
    epochs: int | None = None  # overrides the level's, for every training (attacks included)
    attacks: tuple[str, ...] | None = None  # overrides the level's
    thresholds: Thresholds = field(default_factory=Thresholds)
    device: str = "auto"
    dfr_procedure: str = "paper"  # paper | released (analyses/dfr.py)
    dfr_indices: str | None = None  # an .npy of indices into the clean training set (the released files)

    def recipe(self, attack: str | None = None):
        return recipe_for(self.level, attack=attack, epochs=self.epochs)

    def attack_list(self) -> tuple[str, ...]:
        names = self.attacks if self.attacks is not None else get_level(self.level).attacks
        lookup_all(ATTACKS, names, "attack")
        return tuple(a for a in names if a != "none")  # "none" is the protected training itself

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["recipe"] = self.recipe().to_dict()
        d["attacks"] = list(self.attack_list())
        d["attack_recipes"] = {a: self.recipe(a).to_dict() for a in self.attack_list()
                               if self.recipe(a) != self.recipe()}
        return d


@dataclass
class AuditInputs:
    protected: ImageSet
    test: ImageSet | None  # the clean test set; None when the base dataset cannot be found
    base: ImageSet | None  # clean images aligned with `protected`
    clean_full: ImageSet | None  # the whole clean training set (DFR draws its subset here)
    name: str
    notes: list[str]
    base_name: str | None = None


def resolve_inputs(data: str | os.PathLike[str], clean: str | None = None,
                   data_root: str | os.PathLike[str] | None = None) -> AuditInputs:
    """The protected set, the clean test set and, where they can be found, the clean images."""
    protected = load_data(data, "train", data_root)
    man = protected.meta.get("manifest", {})
    asked = clean
    if clean is None and "manifest" not in protected.meta:
        clean = str(data)  # a clean dataset audited as is: its own base
    side = clean_side(protected, clean, data_root)
    if asked is not None and side.test is None:
        # The user named the clean data: that it cannot be had is an error, not a skipped step.
        raise UnlearnableError(f"--clean {asked}: {side.notes[0] if side.notes else 'not found'}")
    name = man.get("name") or protected.name or Path(str(data)).name
    base_name = side.base_name if side.test is not None else None
    return AuditInputs(protected, side.test, side.base, side.pool, name, side.notes, base_name)


def _fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def audit_row(inp: AuditInputs, cfg: AuditConfig, data_path: str) -> Row:
    """The audited set as the steps see it: data by content, with where to find it as a hint."""
    from ..models import arch_signature

    p = inp.protected
    data: Spec = {"content": content_id(p), "_path": data_path, "_name": inp.name}
    clean: Spec | None = None
    if inp.base is not None:
        clean = ({"content": content_id(inp.base), "clean": inp.base_name, "_base_of": data_path,
                  "_name": f"{inp.base_name} (clean)"} if inp.base is not p else data)
    row = Row(data, clean, inp.base_name, p, get_level(cfg.level), cfg.arch,
              arch_signature(cfg.arch, p.num_classes, p.channels, p.image_size), cfg.seed, cfg.epochs,
              cfg.attack_list(), inp.clean_full is not None)
    if inp.notes:
        row.why_no_base = inp.notes[0]
    row.dfr_procedure = cfg.dfr_procedure
    if cfg.dfr_indices:
        from ..core.hashing import sha256_array
        from ..analyses.dfr import load_indices

        if inp.clean_full is None:
            raise UnlearnableError(f"--dfr-indices {cfg.dfr_indices}: there is no clean training set to index "
                                   f"({row.why_no_base})")
        idx = load_indices(cfg.dfr_indices, len(inp.clean_full))
        row.dfr_indices = {"sha256": sha256_array(idx), "_path": str(Path(cfg.dfr_indices).resolve())}
    return row


def run_audit(data: str | os.PathLike[str], out: str | os.PathLike[str], config: AuditConfig | None = None,
              clean: str | None = None, data_root: str | os.PathLike[str] | None = None,
              progress: bool | None = None, cache: str | os.PathLike[str] | None = None,
              restart: bool = False) -> dict[str, Any]:
    """Audit `data` into `out`; rerunning continues an interrupted audit (and retries failed steps).

    `cache`: the shared job cache (see `cache_dir`), where the clean reference and the random
    network's DFR are kept for every audit of the same base, recipe, model and seed.
    `restart`: start unfinished trainings over instead of resuming them (a checkpoint that
    cannot be read is discarded with them). The record's `failed_steps` maps each step that
    failed, or could not run because one failed, to a one-line reason.
    """
    from ..models import MODELS

    from ..analyses.dfr import PROCEDURES

    cfg = config or AuditConfig()
    get_level(cfg.level)
    if cfg.dfr_procedure not in PROCEDURES:
        raise UnlearnableError(f"--dfr-procedure must be one of {', '.join(PROCEDURES)}, got {cfg.dfr_procedure!r}")
    lookup(MODELS, cfg.arch, "architecture")
    out = Path(out)
    inp = resolve_inputs(data, clean, data_root)
    data_path = str(Path(data).resolve()) if Path(data).exists() else str(data)
    row = audit_row(inp, cfg, data_path)
    cfg_dict = cfg.to_dict()
    cfg_dict["model_signature"] = row.model
    _check_previous(out, row, cfg, cfg_dict)
    out.mkdir(parents=True, exist_ok=True)
    with dir_lock(out, "audit"):
        _check_previous(out, row, cfg, cfg_dict)  # another audit may have written it meanwhile
        steps, specs, skipped = _plan(row)
        record = execute(steps, specs, skipped, row, out, cfg, inp, data_root, progress, cache, restart)
        record.update({"config": cfg_dict, "data_id": data_path, "data_content": row.data["content"]})
        return finish(out, record, inp, cfg, row)


def _check_previous(out: Path, row: Row, cfg: AuditConfig, cfg_dict: dict[str, Any]) -> None:
    """Refuse an `out` that holds an audit of other data or with other settings."""
    results_path = out / "results.json"
    if not results_path.exists():
        return
    prev_record = read_json(results_path)
    prev_id = prev_record.get("data_content")
    if prev_id not in (None, row.data["content"]):
        raise UnlearnableError(f"{out}: holds an audit of other data ({prev_record.get('data_id')}); "
                               "use another --out")
    prev = prev_record.get("config")
    # The device is where the audit runs, not what it computes: a rerun on another one (after
    # `--device cuda` failed, say) continues the same audit. The thresholds only weigh results.
    if prev is not None:
        # Options added since an audit was made read as their defaults (what it did).
        prev = {"dfr_procedure": "paper", "dfr_indices": None, **prev, "thresholds": None}
        cfg_dict = {**cfg_dict, "thresholds": None}
    if prev is not None and {**prev, "device": None} != {**cfg_dict, "device": None}:
        if {**prev, "model_signature": None, "device": None} != {**cfg_dict, "model_signature": None, "device": None}:
            what = "other settings"
        elif prev.get("model_signature") is None:
            what = "an earlier version of unlearnable (no model signature recorded)"
        else:
            what = f"another definition of {cfg.arch!r} (another version of unlearnable)"
        raise UnlearnableError(f"{out}: holds an audit made with {what}; use another --out")


def _plan(row: Row) -> tuple[list[StepInfo], dict[str, Spec], dict[str, str]]:
    steps = steps_for(row)
    specs: dict[str, Spec] = {}
    skipped: dict[str, str] = {}
    for st in steps:
        try:
            specs[st.name] = st.spec(row)
        except StepSkipped as e:
            skipped[st.name] = str(e)
    return steps, specs, skipped


def _own_place(out: Path, row: Row):
    """The audit's layout: its protected training in train-protected/, attack NAME in attacks/NAME/."""
    def place(spec: Spec) -> Path:
        if spec["kind"] == "train" and spec["data"].get("content") == row.data.get("content"):
            return out / "train-protected"
        if spec["kind"] == "attack":
            return out / "attacks" / spec["attack"]
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
    jobs = expand(list(specs.values()))
    shared = [s for s in jobs if mine not in canonical(s)]
    own = [s for s in jobs if mine in canonical(s)]
    names = {job_key(s): st.name for st in steps if (s := specs.get(st.name)) is not None}
    titles = {st.name: st.title for st in steps}
    cost = {job_key(s): st.cost(row) for st in steps if (s := specs.get(st.name)) is not None}
    total = [sum(cost.values()) or 1.0]
    t_start = time.perf_counter()
    done_cost = [0.0]

    def finished_earlier(store: ResultStore, specs_here: list[Spec]) -> None:
        # Jobs a store already holds will not run: they are not part of what is left.
        for s in specs_here:
            if store.status(job_key(s)) == "done":
                total[0] -= cost.get(job_key(s), 0.0)

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
    if inp.base_name and inp.test is not None:
        preload[("test", inp.base_name)] = inp.test
    if inp.base_name and inp.clean_full is not None:
        preload[("train", inp.base_name)] = inp.clean_full
    results: dict[str, dict[str, Any]] = {}
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
    for s in own:  # expand() order: dependencies first
        if all(job_key(d) in known or (job_key(d) not in shared_keys and d in runnable) for d in dependencies(s)):
            runnable.append(s)
    with ResultStore(out / "jobs.sqlite") as store:
        octx = JobContext(out, place=_own_place(out, row), cache=dict(preload), **ctx_args)
        _supersede(store, own, octx)
        if restart:
            _discard_broken_trainings(store, own, octx)
        finished_earlier(store, own)
        run_jobs(runnable, store, octx, known=known, retry_failed=True, on_start=on_start, on_done=on_done,
                 restart=restart)
        for s in own:
            r = store.get(job_key(s))
            if r is not None:
                results[job_key(s)] = r
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
    return {"steps": steps_rec, "failed_steps": failed, "finished": now_iso()}


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


def _supersede(store: ResultStore, own: list[Spec], ctx: JobContext) -> None:
    """A job this audit ran before whose directory one of today's jobs needs (the same attack,
    now with other parameters or recipe: a newer version's presets) is superseded: its record
    and its directory go, so today's job starts clean there instead of being refused."""
    current = {job_key(s) for s in own}
    places = {Path(ctx.dir_of(s)): job_key(s) for s in own}
    for row in store.jobs():
        if row["key"] in current or not isinstance(row.get("spec"), dict):
            continue
        try:
            d = Path(ctx.dir_of(row["spec"]))
        except (KeyError, TypeError, ValueError):
            continue
        if d in places:
            log.info("superseded: the earlier %s in %s (other settings) is replaced", row["spec"].get("kind"), d)
            if row["status"] == "running" and store.owner_alive(row.get("owner")):
                continue  # another driver's: leave it to the directory lock's owner
            now = store.get(places[d])
            if now is None or now["status"] != "done":  # the files there are the old job's
                discard_artifacts(row["spec"], ctx)
            store.delete(row["key"])


def _discard_broken_trainings(store: ResultStore, own: list[Spec], ctx: JobContext) -> None:
    """Under restart, a finished training of this audit whose checkpoints no longer load (DFR
    reads them all) is made pending and its directory discarded, so it trains again."""
    import torch

    for s in own:
        row = store.get(job_key(s))
        if s["kind"] != "train" or row is None or row["status"] != "done":
            continue
        run_dir = ctx.dir_of(s)
        for ck in [run_dir / "last.pt", *sorted((run_dir / "checkpoints").glob("epoch_*.pt"))]:
            try:
                torch.load(ck, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint means: train again
                log.info("restart: %s is unreadable (%s); that training runs again", ck, type(e).__name__)
                if store.reset(job_key(s)):
                    discard_artifacts(s, ctx)
                break


def step_result(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    e = record["steps"].get(name)
    return e.get("result") if e and e.get("status") == "done" else None


def _headline(st: StepInfo, result: dict[str, Any] | None) -> str:
    if result is None:
        return ""
    try:
        return st.headline(result)
    except (KeyError, TypeError, ValueError):  # a result without the figure its headline names
        return ""


def finish(out: Path, record: dict[str, Any], inp: AuditInputs, cfg: AuditConfig, row: Row) -> dict[str, Any]:
    """Assemble results.json from the step results, draw the figures, render the reports."""
    from .figures import samples_figure, separability_figure

    man = inp.protected.meta.get("manifest", {})
    attacks: dict[str, dict[str, Any]] = {}
    prot = step_result(record, "train-protected")
    if prot:
        attacks["none"] = {"test_accuracy": prot["test_accuracy"]}
    for name in ordered(cfg.attack_list()):
        r = step_result(record, f"attack:{name}")
        if r:
            attacks[name] = r
    clean_ref = step_result(record, "train-clean")
    dfr = step_result(record, "dfr")
    dfr_clean = step_result(record, "dfr-clean")
    # The steps whose numbers the verdict weighs: were one missing, it would judge without it.
    feeds = {"train-protected", "train-clean", "dfr", "dfr-clean", "finetune",
             *(f"attack:{a}" for a in cfg.attack_list())}
    finetune = step_result(record, "finetune")
    window = dfr_window(dfr, dfr_clean)
    if dfr and window:
        dfr = {**dfr, **{k: window[k] for k in ("random", "random_spread", "max", "clean_trained",
                                                 "recovered_fraction", "gain_points")}}
    sep = {k.split("-", 1)[1]: v for k in ("separability-perturbations", "separability-images")
           if (v := step_result(record, k))}
    figures: dict[str, str | None] = {
        "dfr": "train-protected/dfr.png" if (out / "train-protected" / "dfr.png").exists() else None,
    }
    # Every picture an attack says it leaves (its registry entry's artifacts) goes in the report.
    for name in attacks:
        for fig, rel in ATTACKS[name].artifacts.items():
            if rel.endswith(".png") and (out / "attacks" / name / rel).exists():
                figures[fig] = f"attacks/{name}/{rel}"
    if finetune and finetune.get("figure") and record["steps"].get("finetune", {}).get("key"):
        rel = f"jobs/finetune-{record['steps']['finetune']['key'][:16]}/{finetune['figure']}"
        if (out / rel).exists():
            figures["finetune"] = rel
    w_path = out / "attacks" / "ortho-proj" / "linear_weights.npy"
    figures["samples"] = samples_figure(inp.protected, inp.base, w_path if w_path.exists() else None,
                                        out / "samples.png")
    figures["separability"] = separability_figure(sep, inp.protected.num_classes, out / "separability.png") \
        if sep else None
    record.update({
        "dataset": {"name": inp.name, "method": man.get("method"), "kind": man.get("kind"),
                    "num_samples": len(inp.protected), "shape": list(inp.protected.chw),
                    "num_classes": inp.protected.num_classes, "base": man.get("base", {}).get("name"),
                    "notes": inp.notes},
        "clean_reference": clean_ref,
        "protected_training": prot,
        "dfr": dfr,
        "dfr_clean": dfr_clean,
        "detect": step_result(record, "detect"),
        "finetune": finetune,
        "separability": sep,
        "attacks": attacks,
        "figures": {k: v for k, v in figures.items() if v},
        "analyses": [{"name": st.name, "title": st.title, "status": record["steps"][st.name]["status"],
                      "headline": _headline(st, step_result(record, st.name)),
                      "reason": record["steps"][st.name].get("reason", "")}
                     for st in steps_for(row)],
        "verdict": verdict(clean_ref["test_accuracy"] if clean_ref else None, attacks, window, cfg.thresholds,
                           inp.protected.num_classes, failed={n: why for n, why in record["failed_steps"].items()
                                                              if n in feeds}, level=cfg.level,
                           finetune=finetune),
        "versions": versions(),
    })
    write_json(out / "results.json", record)
    with atomic_file(out / "report.html", "w") as f:
        f.write(render_audit_html(record, out))
    with atomic_file(out / "report.md", "w") as f:
        f.write(render_audit_md(record))
    return record

