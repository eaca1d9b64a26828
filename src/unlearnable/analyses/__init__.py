"""Analyses: measure what a protected dataset still leaks, each a function that works on its own.

    dfr.py           dfr_curve: DFR over every checkpoint of a training run (Fig. 2, Table 1)
    separability.py  separability_of: linear separability of perturbations or images (Tables 2, 6)
    finetune.py      fine-tuning on k clean images against scratch and the clean network

The audit runs them as steps (`unlearnable.auditor.steps`), each a job of the runner
(`unlearnable.kinds`).
"""

from __future__ import annotations

from .dfr import dfr_curve, dfr_features, dfr_head, random_init_dfr
from .finetune import FinetuneParams
from .separability import separability as separability_score, separability_of

__all__ = ["dfr_curve", "dfr_features", "dfr_head", "random_init_dfr", "FinetuneParams", "separability_score",
           "separability_of"]
