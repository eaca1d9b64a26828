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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

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
