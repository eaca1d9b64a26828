"""The optimizer every training here builds: SGD or Adam, with no weight decay on BatchNorm
and bias vectors (what the field's fast trainers do), unless asked to decay everything (the
error-minimizing poison's original code does).

    opt = make_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam")


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict[str, Any]]:
    """`model`'s parameters as optimizer groups: matrices and filters with `weight_decay`, the
    vectors (BatchNorm weights, biases) without it; one group with it for all when `decay_all`."""
    if decay_all:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, kind: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
                   weight_decay: float = 5e-4, nesterov: bool = False,
                   decay_all: bool = False) -> torch.optim.Optimizer:
    """SGD (`momentum`, `nesterov`) or Adam (torch's default betas (0.9, 0.999); `weight_decay` as
    an L2 term, as the released ViT training uses it) over `param_groups(model, ...)`."""
    groups = param_groups(model, weight_decay, decay_all)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if kind != "sgd":
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
