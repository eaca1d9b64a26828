"""`unlearnable audit DATA --out DIR`: every analysis of a protected dataset, one verdict.

    unlearnable audit runs/regions --level quick --out runs/regions-audit

Steps (the registry `unlearnable.auditor.steps.AUDITS`, then the level's attacks from `ATTACKS`):
standard training on the protected set with a checkpoint per epoch; the same recipe on the clean
images (the reference accuracy); DFR over the checkpoints and on random networks; separability
of the perturbations (when the base is known) and of the images; fine-tuning on k clean images;
the detect step; every chosen attack. Each step is a job spec run by the one job runner
(`unlearnable.runner`, the kinds in `unlearnable.kinds`): the audit's own jobs are stored in
DIR/jobs.sqlite and reused on a rerun; jobs that do not depend on the audited data (the clean
reference, the random-network DFR) go to the shared cache (`~/.cache/unlearnable`, or `--cache`,
or $UNLEARNABLE_CACHE) and are computed once for every audit, demo row and rerun that needs them.
Then figures, `results.json`, `report.html` (self-contained) and `report.md` (`record.py`).

One audit at a time per DIR: a second one is refused at once (`core.lock.dir_lock`). Audits of
other DIRs share the cache safely: each shared job runs in one of them, the others wait for it. A
step that fails is recorded with its reason (`failed_steps`), retried on the next run, and named
by the verdict, which never judges without it. `restart=True` discards unfinished training state
(and finished trainings whose checkpoints no longer load) so those steps start over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..analyses.dfr import PROCEDURES
from ..core.errors import UnlearnableError
from ..core.files import read_json, refuse_dangling
from ..core.lock import dir_lock
from ..core.registry import lookup
from ..ladder import level as get_level
from ..models import MODELS
from .config import AuditConfig, cache_dir
from .execute import execute, own_place, plan
from .inputs import audit_row, resolve_inputs
from .record import finish
from .steps import Row


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
    cfg = config or AuditConfig()
    lv = get_level(cfg.level)  # the level, resolved once for the whole audit
    if cfg.dfr_procedure not in PROCEDURES:
        raise UnlearnableError(f"--dfr-procedure must be one of {', '.join(PROCEDURES)}, got {cfg.dfr_procedure!r}")
    lookup(MODELS, cfg.arch, "architecture")
    out = Path(out)
    inp = resolve_inputs(data, clean, data_root)
    data_path = str(Path(data).resolve()) if Path(data).exists() else str(data)
    row = audit_row(inp, cfg, data_path, lv)
    cfg_dict = cfg.record(row)
    _check_previous(out, row, cfg, cfg_dict)
    cache_dir(cache)  # a cache that cannot be one is refused before OUT is made
    refuse_dangling(out)
    out.mkdir(parents=True, exist_ok=True)
    with dir_lock(out, "audit"):
        _check_previous(out, row, cfg, cfg_dict)  # another audit may have written it meanwhile
        steps, specs, skipped = plan(row)
        record = execute(steps, specs, skipped, row, out, cfg, inp, data_root, progress, cache, restart)
        record.update({"config": cfg_dict, "data_id": data_path, "data_content": row.data["content"]})
        return finish(out, record, inp, cfg, row, own_place(out, row), specs)


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
    # The recipes follow from the level, epochs, attacks and data compared here (and are in every
    # job's key), so an audit recorded before they were adapted to the data still matches.
    if prev is not None:
        # Options added since an audit was made read as their defaults (what it did). Whether the
        # panel stops at its first break and how many seeds rerun only add jobs: a rerun with
        # --exhaustive or --seeds continues the audit with the attacks and seeds it skipped.
        derived = {"thresholds": None, "recipe": None, "attack_recipes": None, "exhaustive": None, "seeds": None}
        prev = {"dfr_procedure": "paper", "dfr_indices": None, **prev, **derived}
        cfg_dict = {**cfg_dict, **derived}
    if prev is not None and {**prev, "device": None} != {**cfg_dict, "device": None}:
        if {**prev, "model_signature": None, "device": None} != {**cfg_dict, "model_signature": None, "device": None}:
            what = "other settings"
        elif prev.get("model_signature") is None:
            what = "an earlier version of unlearnable (no model signature recorded)"
        else:
            what = f"another definition of {cfg.arch!r} (another version of unlearnable)"
        raise UnlearnableError(f"{out}: holds an audit made with {what}; use another --out")
