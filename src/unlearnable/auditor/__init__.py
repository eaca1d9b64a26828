"""The full audit: every analysis of a protected dataset, a verdict, and a report."""

from .pipeline import BUDGETS, AuditConfig, resolve_inputs, run_audit
from .verdict import Thresholds, verdict

__all__ = ["BUDGETS", "AuditConfig", "resolve_inputs", "run_audit", "Thresholds", "verdict"]
