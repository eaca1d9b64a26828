"""The full audit: every analysis of a protected dataset, a verdict, and a report."""

from .pipeline import AuditConfig, cache_dir, resolve_inputs, run_audit
from .verdict import Thresholds, verdict

__all__ = ["AuditConfig", "cache_dir", "resolve_inputs", "run_audit", "Thresholds", "verdict"]
