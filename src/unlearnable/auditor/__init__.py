"""The full audit: every analysis of a protected dataset, a verdict, and a report.

    steps.py     AUDITS: the audit's steps, each a job spec for a row (and attack:NAME)
    config.py    AuditConfig, the shared cache's place
    inputs.py    the audited data, loaded once, and the row the steps see
    execute.py   the steps as jobs: shared ones in the cache, the audit's own in DIR/jobs.sqlite
    record.py    results.json from the step results, the figures, the reports
    verdict.py   the verdict, from results only
    report.py    report.html / report.md / the one-screen table
    pipeline.py  run_audit: the whole of it
    demo.py      `unlearnable demo`
"""

from .config import AuditConfig, cache_dir
from .inputs import resolve_inputs
from .pipeline import run_audit
from .steps import AUDITS, Row, StepInfo, StepSkipped, attack_step, get_step, register_step, steps_for
from .verdict import Thresholds, verdict

__all__ = ["AuditConfig", "cache_dir", "resolve_inputs", "run_audit", "AUDITS", "Row", "StepInfo", "StepSkipped",
           "attack_step", "get_step", "register_step", "steps_for", "Thresholds", "verdict"]
