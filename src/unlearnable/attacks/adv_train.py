"""Adversarial training: learn from protected data by training on PGD examples.

Madry et al., ICLR 2018 (https://arxiv.org/abs/1706.06083); the paper's baseline (section 4.4.2,
Table 3) uses a 3-step l_inf adversary at 8/255 with SGD 0.9, lr 0.1 x0.1 at epochs 75 and 90 of
100 (`--recipe adv`). Error-minimizing poisons hold their shortcut inside an 8/255 ball, so an
adversary of the same radius erases it; unbounded poisons (OPS) survive.

Two cheaper adversaries, each a named option:
- `adversary=fgsm-rs` (Wong et al., ICLR 2020, https://arxiv.org/abs/2001.03994): one step of
  10/255 from a random start, 2 passes per batch instead of 4. Wong et al. run their adversary in
  train mode; here PGD and FGSM-RS run in eval mode, so their passes never move the BatchNorm
  statistics.
- `adversary=free` (Shafahi et al., NeurIPS 2019, "Adversarial Training for Free!",
  https://arxiv.org/abs/1904.12843), the `quick` level's preset: each minibatch is trained
  `replays` times in a row, and the backward pass of every step that updates the weights also
  gives the gradient that moves one perturbation by eps * sign(grad), clipped to the ball. The
  perturbation starts at zero and carries over from one minibatch to the next, as in the
  authors' code; the forward pass is in train mode (it is the training step). One pass per
  step, so the run costs one standard training of the recipe's epochs; it sees its data
  epochs / replays times (the authors' count: steps, with a new minibatch every `replays`).
  `replays` defaults to the authors' CIFAR-10 choice, 8; `quick` uses 3 (measured:
  docs/benchmarks.md).

    unlearnable attack adv-train runs/regions --recipe adv --out runs/regions-adv
    unlearnable attack adv-train runs/regions --recipe fast --param eps=4/255 --param norm=linf
    unlearnable attack adv-train runs/regions --recipe fast --param adversary=fgsm-rs --param steps=1
    unlearnable attack adv-train runs/regions --recipe fast --param adversary=free --param steps=1 --param replays=2

Result: clean test accuracy, and PGD accuracy on a seeded test subset (`test_pgd_accuracy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.params import to_dict
from ..train.engine import as_float
from ..train.pgd import FGSM_RS_ALPHA, pgd, project_delta, steepest
from ..train.run import as_tensors
from .base import AttackContext, register_attack, train_and_evaluate

ADVERSARIES = ("pgd", "fgsm-rs", "free")
FREE_REPLAYS = 8  # Shafahi et al.'s CIFAR-10 choice of m


@dataclass
class AdvTrainParams:
    eps: float = 8 / 255  # radius; for norm=l2 the field uses 0.5
    steps: int = 3  # the paper's 3-step adversary
    alpha: float | None = None  # step size; default 2.5 * eps / steps (pgd), 1.25 * eps (fgsm-rs)
    norm: str = "linf"  # linf | l2
    eval_samples: int = 1000  # test subset for the PGD accuracy figure
    eval_steps: int = 10  # PGD steps of that evaluation
    adversary: str = "pgd"  # pgd (Madry et al.) | fgsm-rs (Wong et al.) | free (Shafahi et al.)
    replays: int = FREE_REPLAYS  # free only: steps each minibatch trains in a row (m)

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be linf or l2, got {self.norm!r}")
        if self.eps <= 0 or self.steps < 1:
            raise ValueError("eps must be > 0 and steps >= 1")
        if self.adversary not in ADVERSARIES:
            raise ValueError(f"adversary must be one of {', '.join(ADVERSARIES)}, got {self.adversary!r}")
        if self.adversary in ("fgsm-rs", "free") and self.steps != 1:
            raise ValueError(f"adversary {self.adversary} takes one step (steps=1, got {self.steps}); "
                             "for a multi-step adversary pass adversary=pgd")
        if isinstance(self.replays, bool) or not isinstance(self.replays, int) or self.replays < 1:
            raise ValueError(f"replays must be an integer >= 1, got {self.replays!r}")
        if self.adversary != "free" and self.replays != FREE_REPLAYS:
            raise ValueError(f"replays is Free adversarial training's (adversary=free), not {self.adversary}'s")

    def step_size(self) -> float:
        if self.alpha is not None:
            return self.alpha
        if self.adversary == "free":
            return self.eps  # the authors' step: the radius itself
        return FGSM_RS_ALPHA * self.eps if self.adversary == "fgsm-rs" else 2.5 * self.eps / self.steps


def soft_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for hard (int) or soft (CutMix/MixUp) targets."""
    if y.dtype == torch.int64:
        return F.cross_entropy(logits, y)
    return -(y * F.log_softmax(logits, 1)).sum(1).mean()


class FreeLoss:
    """Free adversarial training's `BatchLoss` (Shafahi et al. 2019): the loss of the minibatch
    plus the perturbation, whose gradient, computed by the training step's own backward pass,
    moves the perturbation by `alpha` * sign (l2: the normalized gradient), projected onto the
    eps-ball. `fit` replays each minibatch `replays` times and saves `state_dict` with the run,
    so a resumed run continues the same perturbation."""

    def __init__(self, eps: float, alpha: float, replays: int, norm: str = "linf"):
        self.eps, self.alpha, self.replays, self.norm = eps, alpha, replays, norm
        self.delta: torch.Tensor | None = None  # one minibatch's worth, carried between minibatches

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        n = len(x)
        if self.delta is not None and self.delta.device != x.device:  # restored from a CPU file
            self.delta = self.delta.to(x.device)
        if self.delta is None or len(self.delta) < n or self.delta.shape[1:] != x.shape[1:]:
            grown = torch.zeros_like(x)
            if self.delta is not None and self.delta.shape[1:] == x.shape[1:]:
                grown[:len(self.delta)] = self.delta
            self.delta = grown
        d = self.delta[:n].clone().requires_grad_(True)

        def ascend(grad: torch.Tensor) -> None:  # runs inside the training step's backward
            with torch.no_grad():
                step = steepest(grad, self.norm).to(d.dtype)
                self.delta[:n] = project_delta(d.detach() + self.alpha * step, self.eps, self.norm)

        d.register_hook(ascend)
        logits = model((x + d).clamp(0, 1))
        return soft_cross_entropy(logits, y), logits

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.delta is None else {"delta": self.delta.detach().cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        delta = state.get("delta")
        if delta is None:
            self.delta = None
            return
        if not isinstance(delta, torch.Tensor) or delta.ndim != 4 or not torch.isfinite(delta).all():
            raise ValueError("its Free adversarial training perturbation is not a finite 4-d tensor")
        if self.norm == "linf" and delta.abs().max() > self.eps + 1e-6:
            raise ValueError(f"its Free adversarial training perturbation leaves the {self.eps:.4g} ball")
        self.delta = delta.float()


def adversarial_loss(p: AdvTrainParams):
    """A `BatchLoss` for `fit`. PGD and FGSM-RS: examples made in eval mode (BatchNorm
    statistics are not updated by the adversary's forward passes), the update in train mode.
    Free: `FreeLoss`, whose one pass per step is the training step."""
    if p.adversary == "free":
        return FreeLoss(p.eps, p.step_size(), p.replays, p.norm)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        model.eval()
        # FGSM-RS is this loop with one step and Wong et al.'s step size (`fgsm_rs`).
        x_adv = pgd(model, x, y, p.eps, p.step_size(), p.steps, p.norm, random_start=True,
                    loss_fn=soft_cross_entropy, gen=gen)
        model.train()
        logits = model(x_adv)
        return soft_cross_entropy(logits, y), logits
    return loss


def pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: AdvTrainParams,
                 seed: int, batch_size: int = 500) -> float:
    """Accuracy under a `p.eval_steps`-step PGD attack on a seeded subset of (x, y)."""
    gen = torch.Generator().manual_seed(seed)
    n = min(p.eval_samples, len(x))
    idx = torch.randperm(len(x), generator=gen)[:n]
    dev = next(model.parameters()).device
    model.eval()
    correct = 0
    for s in range(0, n, batch_size):
        xb = as_float(x[idx[s:s + batch_size]].to(dev))
        yb = y[idx[s:s + batch_size]].to(dev)
        xa = pgd(model, xb, yb, p.eps, 2.5 * p.eps / p.eval_steps, p.eval_steps, p.norm, gen=gen)
        with torch.no_grad():
            correct += (model(xa).argmax(1) == yb).sum().item()
    return correct / max(n, 1)


@register_attack("adv-train", "PGD adversarial training (l_inf 8/255, 3 steps; the paper's Table 3 baseline)",
                 "Madry et al. ICLR 2018, https://arxiv.org/abs/1706.06083", params_cls=AdvTrainParams,
                 # Each step of the adversary is a forward and a backward pass, then the update;
                 # Free's step is the update itself.
                 cost=lambda p: 1 if p.adversary == "free" else p.steps + 1, order=10, recipes={"paper": "adv"},
                 # The PGD accuracy figure is a side result: a 100-image subset keeps tiny runs short.
                 # `quick` trains with Free (the cost of standard training); `paper` keeps the paper's PGD.
                 presets={"tiny": {"eval_samples": "100"},
                          "quick": {"adversary": "free", "steps": "1", "replays": "3"}})
def adv_train(ctx: AttackContext, p: AdvTrainParams) -> dict[str, Any]:
    model, out = train_and_evaluate(ctx, batch_loss=adversarial_loss(p))
    if p.eval_samples > 0:
        x, y = as_tensors(ctx.test)
        out["test_pgd_accuracy"] = pgd_accuracy(model, x, y, p, ctx.seed)
    out["attack_params"] = to_dict(p)
    return out

