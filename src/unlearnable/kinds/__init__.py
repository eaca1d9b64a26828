"""The domain's job kinds: what each job of an audit, a demo or a grid computes, registered with
the generic runner (`unlearnable.runner`) when this package is imported.

    poison        make a protected set from its spec                   poison.py
    train         standard training, a checkpoint per epoch            train.py
    attack        one attack on a training set                         attack.py (and run_attack, run_all)
    dfr           DFR over every checkpoint of a training               dfr.py
    dfr-random    DFR on an untrained network (shared by every audit)   dfr.py
    separability  linear separability of perturbations or images        separability.py
    finetune-start, finetune   fine-tuning on k clean images            finetune.py (and finetune_curve)
    detect        is the set protected, judged from the data alone      detect.py

How a spec names its data, and how a job loads it: `data.py`. A new kind is one module here
with one `register_job` call (docs/extending.md).
"""

from . import attack, detect, dfr, finetune, poison, separability, train  # noqa: F401  (each registers its kinds)
from .attack import run_all, run_attack
from .finetune import finetune_curve

__all__ = ["run_all", "run_attack", "finetune_curve"]
