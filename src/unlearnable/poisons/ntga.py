"""NTGA: the Neural Tangent Generalization Attack (Yuan & Wu, ICML 2021).

"Neural Tangent Generalization Attacks", Chia-Hung Yuan, Shan-Hung Wu, ICML 2021,
https://arxiv.org/abs/2106.03173.

Threat model: l_inf <= 8/255 per image (held on the stored uint8 images); no trained model: the
surrogate is an infinitely wide fully connected network, i.e. kernel regression with its neural
tangent kernel (NTK), whose prediction after training time t is closed-form.

For each block of 512 training images (a seeded partition), 10 steps of projected (signed)
gradient *ascent* of step 1.1 * eps / 10 on the cross-entropy, on a clean target set, of the
NTK predictor trained on the block:
    f_target(t) = Theta_tb Theta_bb^-1 (I - exp(-t Theta_bb / (b K))) Y_b
(neural-tangents' `gradient_descent_mse` with lr 1; diag_reg 1e-4 relative to mean(diag)).
The original's FNN surrogate (lionelmessi6410/ntga, `generate_attack.py`): 5 x (Dense, Erf) with
no readout layer after the last Erf, W_std^2 = 1.76, b_std^2 = 0.18, t = 64, a held-out target
of 10000 training images. `readout=true` adds a linear readout after the last nonlinearity (one
Dense layer more). Here every image is protected, so each block's target is a seeded sample of
`target_size` images from outside the block (clean). `activation=relu` gives the arc-cosine
(ReLU) NTK instead. Kernels in float64, in torch (no JAX).

Units of resumable work: blocks; the finished uint8 images are the state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet
from .base import PoisonContext, PoisonOutput, apply_delta, check_bound, register_poison
from .crafting import begin_crafting, peak_memory, progress_bar, unit_generator

PAPER = "Yuan & Wu, Neural Tangent Generalization Attacks, ICML 2021, https://arxiv.org/abs/2106.03173"
SUMMARY = ("NTGA: gradient ascent on the validation loss of an infinite-width FNN's NTK predictor, "
           "blocks of 512, l_inf 8/255")
# Fields left at None take these values at each ladder level; "tiny" is only enough for tests.
LEVEL_TABLE = {
    "paper": {"target_size": 10000, "block_size": 512, "steps": 10},
    "quick": {"target_size": 2048, "block_size": 512, "steps": 10},
    "tiny": {"target_size": 64, "block_size": 64, "steps": 3},
}


@dataclass
class NTGAParams:
    """Parameters of `ntga`: the ascent, the blocks and the NTK surrogate. The defaults, with the
    paper row of LEVEL_TABLE for the fields left at None, are the original's (`generate_attack.py`)."""

    eps: float = 8 / 255
    steps: int | None = None  # ascent steps per block (paper 10)
    step_ratio: float = 1.1 / 10  # step size in units of eps (1.1 * eps / steps in the original)
    block_size: int | None = None  # images per block (paper 512)
    target_size: int | None = None  # clean target images per block (paper 10000, quick 2048)
    t: float = 64.0  # training time of the NTK predictor; inf = kernel regression at convergence
    depth: int = 5  # hidden layers of the infinite-width FNN
    activation: str = "erf"  # erf (the original) | relu (arc-cosine kernel)
    w_var: float = 1.76  # W_std^2
    b_var: float = 0.18  # b_std^2
    diag_reg: float = 1e-4  # ridge on the block's kernel, relative to the mean of its diagonal
    loss: str = "ce"  # ce (the original) | mse
    readout: bool = False  # a Dense layer after the last nonlinearity (the original has none)

    def __post_init__(self) -> None:
        if self.activation not in ("erf", "relu"):
            raise ValueError(f"activation must be erf or relu, got {self.activation!r}")
        if self.loss not in ("ce", "mse"):
            raise ValueError(f"loss must be ce or mse, got {self.loss!r}")
        if (self.block_size is not None and self.block_size < 2) or self.depth < 1 or \
                (self.steps is not None and self.steps < 1):
            raise ValueError("block_size must be >= 2, depth and steps >= 1")
        check_bound(self.eps)


def ntk(a: torch.Tensor, b: torch.Tensor, depth: int = 5, activation: str = "erf",
        w_var: float = 1.76, b_var: float = 0.18, readout: bool = False) -> torch.Tensor:
    """NTK (na, nb) of an infinitely wide FNN of `depth` (Dense, activation) blocks between flat
    inputs; the output is the last activation, or with `readout` a Dense layer after it.

    a: (na, d), b: (nb, d). Recursion (Jacot et al. 2018; Lee et al. 2019), per layer
        Sigma' = w_var E[phi(u) phi(v)] + b_var,   dSigma' = w_var E[phi'(u) phi'(v)],
        Theta' = Theta * dSigma' + Sigma',
    with (u, v) ~ N(0, [[S_aa, S_ab], [S_ab, S_bb]]); a final activation with no Dense after it
    gives Theta * E[phi'(u) phi'(v)] (neural-tangents' rule). ReLU: arc-cosine formulas; Erf:
    Williams'.
    The correlations are clamped inside (-1, 1) so gradients stay finite on the diagonal.
    """
    d = a.shape[1]
    s_ab = w_var * (a @ b.T) / d + b_var
    s_aa = w_var * (a * a).sum(1) / d + b_var
    s_bb = w_var * (b * b).sum(1) / d + b_var
    theta = s_ab
    for layer in range(depth):
        if activation == "relu":
            norm = torch.sqrt(s_aa[:, None] * s_bb[None, :])
            c = (s_ab / norm).clamp(-1 + 1e-7, 1 - 1e-7)
            ang = torch.arccos(c)
            e_phi = norm * (torch.sin(ang) + (math.pi - ang) * c) / (2 * math.pi)
            e_dphi = (math.pi - ang) / (2 * math.pi)
            s_aa, s_bb = w_var * s_aa / 2 + b_var, w_var * s_bb / 2 + b_var
        else:
            qa, qb = 1 + 2 * s_aa, 1 + 2 * s_bb
            denom = torch.sqrt(qa[:, None] * qb[None, :])
            c = (2 * s_ab / denom).clamp(-1 + 1e-7, 1 - 1e-7)
            e_phi = 2 / math.pi * torch.arcsin(c)
            e_dphi = 4 / math.pi / torch.sqrt(qa[:, None] * qb[None, :] - 4 * s_ab ** 2).clamp_min(1e-12)
            s_aa = w_var * 2 / math.pi * torch.arcsin(2 * s_aa / qa) + b_var
            s_bb = w_var * 2 / math.pi * torch.arcsin(2 * s_bb / qb) + b_var
        if layer == depth - 1 and not readout:
            return theta * e_dphi
        sigma = w_var * e_phi + b_var
        theta = theta * (w_var * e_dphi) + sigma
        s_ab = sigma
    return theta


def ntk_predict(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, num_classes: int,
                params: NTGAParams) -> torch.Tensor:
    """Outputs (n_test, K) of the NTK predictor trained for time t on (x_train, one-hot y_train)."""
    kw = dict(depth=params.depth, activation=params.activation, w_var=params.w_var, b_var=params.b_var,
              readout=params.readout)
    a, b = x_train.flatten(1).double(), x_test.flatten(1).double()
    k_tt = ntk(a, a, **kw)
    k_st = ntk(b, a, **kw)
    n = len(a)
    k_tt = k_tt + params.diag_reg * k_tt.diagonal().mean() * torch.eye(n, dtype=k_tt.dtype, device=k_tt.device)
    yo = F.one_hot(y_train, num_classes).double()
    if math.isinf(params.t):
        return k_st @ torch.linalg.solve(k_tt, yo)
    evals, evecs = torch.linalg.eigh(k_tt)
    evals = evals.clamp_min(1e-12)
    # (1 - exp(-t lambda / (n K))) / lambda: gradient descent on 0.5 * mean squared error.
    g = -torch.expm1(-params.t * evals / yo.numel()) / evals
    return k_st @ (evecs @ (g[:, None] * (evecs.T @ yo)))


def surrogate_loss(x_train: torch.Tensor, y_train: torch.Tensor, x_target: torch.Tensor, y_target: torch.Tensor,
                   num_classes: int, params: NTGAParams) -> torch.Tensor:
    """The NTK surrogate's loss on the target set after training on (x_train, y_train)."""
    f = ntk_predict(x_train, y_train, x_target, num_classes, params)
    if params.loss == "ce":
        return F.cross_entropy(f, y_target)
    return 0.5 * ((f - F.one_hot(y_target, num_classes).double()) ** 2).mean()


@register_poison("ntga", NTGAParams, "sample-wise", SUMMARY, PAPER, model_based=True, fills=LEVEL_TABLE)
def ntga(base: ImageSet, params: NTGAParams, ctx: PoisonContext) -> PoisonOutput:
    """Block-wise NTGA: per block, signed ascent on an NTK surrogate's clean target loss, sample-wise.

    Paper: Yuan & Wu, Neural Tangent Generalization Attacks, ICML 2021, https://arxiv.org/abs/2106.03173
    Threat model: the defender (the data owner) perturbs every training image within l_inf <= eps
        (8/255) on the stored uint8 images, against a surrogate with no trained model (kernel
        regression with an infinite-width FNN's NTK, computed on ctx.device, resumable in
        ctx.work_dir); labels, test set and learner are out of its hands.
    Args:
        eps (8/255): l_inf bound of the perturbation
        steps (level; paper 10): ascent steps per block
        step_ratio (1.1/10): step size in units of eps (1.1 * eps / steps in the original)
        block_size (level; paper 512): images per block (a seeded partition of the set)
        target_size (level; paper 10000): clean target images per block, drawn from outside it
        t (64.0): training time of the NTK predictor; inf = kernel regression at convergence
        depth (5): hidden (Dense, activation) layers of the infinite-width FNN
        activation ("erf"): erf (the original) | relu (arc-cosine kernel)
        w_var (1.76): W_std^2
        b_var (0.18): b_std^2
        diag_reg (1e-4): ridge on the block's kernel, relative to the mean of its diagonal
        loss ("ce"): the surrogate's loss on the target set: ce (the original) | mse
        readout (False): a Dense layer after the last nonlinearity (the original has none)
    Shapes: base images uint8 (N, H, W, C), any size and class count; blocks (block_size, C*H*W)
        flattened; returns PoisonOutput with images uint8 (N, H, W, C) aligned with base and an
        info dict with norm ("linf"), eps, device, level, effective_params, blocks,
        surrogate_target_loss (clean and poisoned means), seconds_this_run and peak_memory.
    Example:
        unlearnable poison ntga --dataset fashion-mnist --out runs/ntga --seed 0
    """
    t0 = time.perf_counter()
    eff, dev, ck, state = begin_crafting("ntga", params, ctx, base)
    p = NTGAParams(**eff)
    x, y = base.to_tensor(dev)
    n, k = len(x), base.num_classes
    eps, alpha = p.eps, p.step_ratio * p.eps
    perm = torch.randperm(n, generator=unit_generator(ctx.seed, 3)).to(dev)
    nb = math.ceil(n / p.block_size)
    out = np.empty_like(base.images)
    start = 0
    gains = []
    if state is not None:
        start = int(state["done"])
        out[:] = state["images"].numpy()
        gains = state["gains"].tolist()
    bar = progress_bar(ctx, nb, "ntga blocks", start)
    try:
        for bi in range(start, nb):
            idx = perm[bi * p.block_size:(bi + 1) * p.block_size]
            rest = torch.ones(n, dtype=torch.bool, device=dev)
            rest[idx] = False
            others = rest.nonzero().squeeze(1)
            pick = torch.randperm(len(others), generator=unit_generator(ctx.seed, 3, bi))[: p.target_size]
            tgt = others[pick.to(dev)] if len(others) else idx  # a single block: target itself
            xb, yb, xt, yt = x[idx], y[idx], x[tgt], y[tgt]
            delta = torch.zeros_like(xb)
            first = None
            for _ in range(p.steps):
                delta.requires_grad_(True)
                loss = surrogate_loss(xb + delta, yb, xt, yt, k, p)
                (grad,) = torch.autograd.grad(loss, delta)
                first = float(loss.detach()) if first is None else first
                with torch.no_grad():
                    delta = (delta + alpha * torch.nan_to_num(grad).sign()).clamp(-eps, eps)
                    delta = (xb + delta).clamp(0, 1) - xb
            with torch.no_grad():
                last = float(surrogate_loss(xb + delta, yb, xt, yt, k, p))
            gains.append([first, last])
            out[idx.cpu().numpy()] = apply_delta(xb.cpu(), delta.detach().cpu(), eps)
            bar.update(1)
            bar.set_postfix(loss=f"{first:.3f}->{last:.3f}")
            ck.step(bi + 1, lambda: {"done": bi + 1, "images": torch.from_numpy(out.copy()),
                                     "gains": torch.tensor(gains, dtype=torch.float64)})
    finally:
        bar.close()
    g = np.array(gains)
    info = {
        "norm": "linf", "eps": eps, "device": str(dev), "level": ctx.level,
        "effective_params": eff, "blocks": nb,
        "surrogate_target_loss": {"clean_mean": float(g[:, 0].mean()), "poisoned_mean": float(g[:, 1].mean())},
        "seconds_this_run": round(time.perf_counter() - t0, 3), "peak_memory": peak_memory(dev),
    }
    return PoisonOutput(out, info)
