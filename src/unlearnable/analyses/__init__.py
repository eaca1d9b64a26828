"""Analyses: measure what a protected dataset still leaks.

The functions (`dfr_curve`, `separability_of`) work on their own; the audit runs them as steps
of one registry, `AUDITS` (steps.py), whose entries say how to turn a training set into a job.
"""

from __future__ import annotations

from . import detect as _detect  # noqa: F401  (registers the "detect" step)
from . import finetune  # noqa: F401  (registers the fine-tuning step and job kind)
from .dfr import dfr_curve, dfr_features, dfr_head, random_init_dfr
from .separability import separability as separability_score, separability_of
from .steps import AUDITS, Row, StepInfo, StepSkipped, attack_step, get_step, register_step, steps_for

__all__ = ["AUDITS", "Row", "StepInfo", "StepSkipped", "attack_step", "get_step", "register_step", "steps_for",
           "dfr_curve", "dfr_features", "dfr_head", "random_init_dfr", "separability_score", "separability_of"]
