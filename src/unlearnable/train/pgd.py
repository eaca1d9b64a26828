"""Projected gradient descent in l_inf and l2: the adversary of adversarial training, and the
inner loop the model-based poisons reuse (error-maximizing: ascend; error-minimizing: descend).

Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
https://arxiv.org/abs/1706.06083. `fgsm_rs` is its single-step form with a random start (FGSM-RS,
Wong, Rice, Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020,
https://arxiv.org/abs/2001.03994).

Threat model: x in [0, 1] (B, C, H, W); the perturbation stays within an l_inf or l2 ball of
radius `eps` and x + delta within [0, 1].

    x_adv = pgd(model, x, y, eps=8/255, steps=10)             # untargeted, maximizes the loss
    x_min = pgd(model, x, y, eps=8/255, steps=20, alpha=0.8/255, minimize=True, random_start=False)
    x_fast = fgsm_rs(model, x, y, eps=8/255)                   # one step of 10/255 from a random start

The adversarial-training losses are here too, beside the adversary they use: `adversarial_loss`
gives a training loop's `BatchLoss` for PGD (Madry et al.), FGSM-RS (Wong et al.) or Free
adversarial training (`FreeLoss`, Shafahi et al. 2019, https://arxiv.org/abs/1904.12843); the
`adv-train` attack and the EntF poison's adversarially trained reference model both train with it.

    loss = adversarial_loss(eps=8/255, steps=3)                 # PGD-3, the paper's Table 3 baseline
    fit(model, (x, y), None, recipe, batch_loss=loss)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .loop import as_float

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _flat_norm(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (d.ndim - 1)))


def project_delta(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project perturbations onto the l_inf or l2 ball of radius eps (per sample)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        return delta * (eps / _flat_norm(delta)).clamp(max=1.0)
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def steepest(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit step of steepest ascent along `grad` in the norm's geometry: its sign (l_inf) or
    the gradient over its per-sample l2 norm."""
    return grad.sign() if norm == "linf" else grad / _flat_norm(grad)


def random_delta(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator | None) -> torch.Tensor:
    """A uniform start in the l_inf ball, or a random direction of random length in the l2 ball."""
    u = torch.rand(x.shape, generator=gen).to(x.device)
    if norm == "linf":
        return (2 * u - 1) * eps
    g = torch.randn(x.shape, generator=gen).to(x.device)
    r = torch.rand(len(x), generator=gen).to(x.device).view(-1, *([1] * (x.ndim - 1)))
    return g / _flat_norm(g) * r * eps


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 8 / 255,
    alpha: float | None = None,
    steps: int = 10,
    norm: str = "linf",
    random_start: bool = True,
    minimize: bool = False,
    targeted: torch.Tensor | None = None,
    loss_fn: LossFn | None = None,
    gen: torch.Generator | None = None,
    delta_init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return x + delta with delta in the eps-ball maximizing (or, `minimize`, minimizing) the loss.

    Args:
        eps: radius (8/255 is the field's l_inf standard).
        alpha: step size; default 2.5 * eps / steps (Madry et al.).
        steps: gradient steps; `random_start` begins at a random point of the ball.
        minimize: descend instead of ascend (error-minimizing noise of Unlearnable Examples).
        targeted: target labels: the loss toward them is minimized (Adversarial Poisoning).
        loss_fn: (logits, y) -> scalar; default cross-entropy (y hard or soft).
        delta_init: start from this perturbation (continuing an earlier optimization).
    The model's train/eval mode is left as the caller set it; gradients of its parameters are
    not accumulated. Returns a detached tensor of x's shape, within [0, 1].
    """
    loss_fn = loss_fn or (lambda logits, t: F.cross_entropy(logits, t))
    alpha = alpha if alpha is not None else 2.5 * eps / max(steps, 1)
    direction = -1.0 if (minimize or targeted is not None) else 1.0
    labels = targeted if targeted is not None else y
    x = x.detach()
    if delta_init is not None:
        delta = delta_init.detach().clone()
    elif random_start:
        delta = random_delta(x, eps, norm, gen)
    else:
        delta = torch.zeros_like(x)
    delta = ((x + project_delta(delta, eps, norm)).clamp(0, 1) - x)
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = loss_fn(model(x + delta), labels)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = project_delta(delta + direction * alpha * steepest(grad, norm), eps, norm)
                delta = (x + delta).clamp(0, 1) - x
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    return (x + delta).detach()


FGSM_RS_ALPHA = 1.25  # step size in units of eps: 10/255 at 8/255, as Wong et al. train CIFAR-10


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255, alpha: float | None = None,
            norm: str = "linf", loss_fn: LossFn | None = None, gen: torch.Generator | None = None) -> torch.Tensor:
    """FGSM with a random start (Wong et al. 2020): a uniform point of the eps-ball (clipped to the
    image), one signed-gradient step of `alpha` (default 1.25 * eps), projected back onto the ball
    and the image. One forward and backward pass instead of PGD's `steps`: with the random start
    and alpha < 2 eps it trains models about as robust as PGD's (their Table 1) at a fraction of
    the cost. It is `pgd` with one step; the model's mode is the caller's, as there."""
    return pgd(model, x, y, eps, FGSM_RS_ALPHA * eps if alpha is None else alpha, 1, norm, random_start=True,
               loss_fn=loss_fn, gen=gen)


ADVERSARIES = ("pgd", "fgsm-rs", "free")
FREE_REPLAYS = 8  # Shafahi et al.'s CIFAR-10 choice of m


def adversary_step(adversary: str, eps: float, steps: int, alpha: float | None = None) -> float:
    """The adversary's step size: `alpha` when given; else the radius itself for Free (the
    authors' step), 1.25 eps for FGSM-RS (Wong et al.), 2.5 eps / steps for PGD (Madry et al.)."""
    if alpha is not None:
        return alpha
    if adversary == "free":
        return eps
    return FGSM_RS_ALPHA * eps if adversary == "fgsm-rs" else 2.5 * eps / steps


def soft_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for hard (int) or soft (CutMix/MixUp) targets; `reduction` "none" keeps one
    loss per image."""
    if y.dtype == torch.int64:
        return F.cross_entropy(logits, y, reduction=reduction)
    per = -(y * F.log_softmax(logits, 1)).sum(1)
    return per if reduction == "none" else per.mean()


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


def adversarial_loss(eps: float = 8 / 255, steps: int = 3, alpha: float | None = None, norm: str = "linf",
                     adversary: str = "pgd", replays: int = FREE_REPLAYS):
    """A `BatchLoss` for `fit` that trains on adversarial examples (`adversary_step` gives the
    step when `alpha` is None). PGD and FGSM-RS: examples made in eval mode (BatchNorm statistics
    are not updated by the adversary's forward passes), the update in train mode. Free:
    `FreeLoss`, whose one pass per step is the training step."""
    if adversary not in ADVERSARIES:
        raise ValueError(f"adversary must be one of {', '.join(ADVERSARIES)}, got {adversary!r}")
    step = adversary_step(adversary, eps, steps, alpha)
    if adversary == "free":
        return FreeLoss(eps, step, replays, norm)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        model.eval()
        # FGSM-RS is this loop with one step and Wong et al.'s step size (`fgsm_rs`).
        x_adv = pgd(model, x, y, eps, step, steps, norm, random_start=True, loss_fn=soft_cross_entropy, gen=gen)
        model.train()
        logits = model(x_adv)
        return soft_cross_entropy(logits, y), logits
    return loss


def pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
                 norm: str = "linf", samples: int = 1000, seed: int = 0, batch_size: int = 500) -> float:
    """Accuracy under a `steps`-step PGD attack of radius `eps` on a seeded subset of `samples`
    images of (x, y) (x uint8 or [0, 1] float)."""
    gen = torch.Generator().manual_seed(seed)
    n = min(samples, len(x))
    idx = torch.randperm(len(x), generator=gen)[:n]
    dev = next(model.parameters()).device
    model.eval()
    correct = 0
    for s in range(0, n, batch_size):
        xb = as_float(x[idx[s:s + batch_size]].to(dev))
        yb = y[idx[s:s + batch_size]].to(dev)
        xa = pgd(model, xb, yb, eps, 2.5 * eps / steps, steps, norm, gen=gen)
        with torch.no_grad():
            correct += (model(xa).argmax(1) == yb).sum().item()
    return correct / max(n, 1)
