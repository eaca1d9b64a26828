"""Unlearnable Examples: error-minimizing noise, sample-wise or class-wise (Huang et al., ICLR 2021).

"Unlearnable Examples: Making Personal Data Unexploitable", Hanxun Huang, Xingjun Ma, Sarah
Monazam Erfani, James Bailey, Yisen Wang, ICLR 2021, https://arxiv.org/abs/2101.04898.

Threat model: the defender perturbs every training image within l_inf <= 8/255 (held on the
stored uint8 images); labels, test set and learner are out of its hands.

Bi-level min-min: alternate M = 10 SGD steps (lr 0.1, momentum 0.9, wd 5e-4, batch 128) of a
crafting model on x + delta with a noise update of 20 PGD *descent* steps of 0.8/255 over the
whole set, until the crafting model's accuracy on the protected set reaches 99 % (or
`max_rounds`). Sample-wise: one delta per image, started uniform in the ball. Class-wise: one
delta per class, started uniform, moved at each step by alpha * sign of the gradient summed over
the batch's samples of that class (the mean of its samples' updates, in sign).

Units of resumable work: rounds (train M steps, update all noise, measure accuracy); the state
(model, optimizer, delta, history) is saved after every round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..train.pgd import pgd
from ..data.imageset import ImageSet
from .base import PoisonContext, PoisonOutput, check_bound, perturb_chunks, register_poison
from .crafting import (
    Resumable, cpu_state, crafting_model, default_arch, device_of, fingerprint, loss_and_accuracy,
    peak_memory, progress_bar, resolve, seed_global, sgd, train_steps, unit_generator,
)

PAPER = "Huang et al., Unlearnable Examples: Making Personal Data Unexploitable, ICLR 2021, " \
        "https://arxiv.org/abs/2101.04898"
# Fields left at None take these values at each ladder level; "quick" halves the PGD steps (same
# total travel); "tiny" is a few steps of everything, only enough for tests to see the mechanism.
LEVEL_TABLE = {
    "paper": {"steps": 20, "alpha": 0.8 / 255, "max_rounds": 100, "train_steps": 10, "batch_size": 128},
    "quick": {"steps": 10, "alpha": 1.6 / 255, "max_rounds": 10, "train_steps": 10, "batch_size": 128},
    "tiny": {"steps": 2, "alpha": 4 / 255, "max_rounds": 2, "train_steps": 3, "batch_size": 64},
}
NOISE_BATCH = 512  # noise-update batch: eval-mode BN makes samples independent, so only speed


@dataclass
class EMParams:
    mode: str = "sample"  # sample | class
    eps: float = 8 / 255
    steps: int | None = None  # PGD descent steps per noise update (paper 20)
    alpha: float | None = None  # PGD step (paper 0.8/255)
    train_steps: int | None = None  # M: SGD steps of the crafting model per round (paper 10)
    batch_size: int | None = None  # paper 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    stop_accuracy: float = 0.99  # stop when the crafting model's accuracy on x + delta reaches it
    max_rounds: int | None = None  # safety cap (paper 100, quick 10)
    arch: str = ""  # crafting model; "" = resnet18 on CUDA, convnet on CPU

    def __post_init__(self) -> None:
        if self.mode not in ("sample", "class"):
            raise ValueError(f"mode must be sample or class, got {self.mode!r}")
        check_bound(self.eps)
        for k in ("train_steps", "batch_size"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1")


def craft_error_minimizing(base: ImageSet, params: EMParams, ctx: PoisonContext,
                           method: str = "em") -> tuple[torch.Tensor, torch.nn.Module, dict[str, Any]]:
    """The error-minimizing perturbation, the crafting model and a record of the run.

    Returns delta (float CPU, (N, C, H, W) sample-wise or (K, C, H, W) class-wise, within eps;
    x + delta may leave [0, 1]: it is clipped when applied), the trained crafting model (eval
    mode) and info (effective parameters, rounds, stop reason, per-round loss/accuracy, memory).
    """
    t0 = time.perf_counter()
    eff = resolve(params, LEVEL_TABLE, ctx.level)
    dev = device_of(ctx)
    arch = params.arch or default_arch(dev)
    eps, alpha, steps = eff["eps"], eff["alpha"], eff["steps"]
    train_n, bs = eff["train_steps"], eff["batch_size"]
    x, y = base.to_tensor(dev)
    n, k = len(x), base.num_classes
    classwise = params.mode == "class"

    model = crafting_model(base, arch, dev, ctx.seed)
    opt = sgd(model, params.lr, params.momentum, params.weight_decay)
    g0 = unit_generator(ctx.seed, 0)
    shape = (k, *x.shape[1:]) if classwise else tuple(x.shape)
    delta = ((torch.rand(shape, generator=g0) * 2 - 1) * eps).to(dev)  # the original's uniform start
    history: list[dict[str, float]] = []
    ck = Resumable(ctx, fingerprint(method, eff, ctx, base, {"arch": arch}))
    state = ck.begin()
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        delta = state["delta"].to(dev)
        history = [dict(zip(("loss", "accuracy", "train_loss"), map(float, r))) for r in state["history"].tolist()]
        start = len(history)

    def full(idx: torch.Tensor) -> torch.Tensor:
        return delta[y[idx]] if classwise else delta[idx]

    def state_fn() -> dict[str, Any]:
        hist = torch.tensor([[h["loss"], h["accuracy"], h["train_loss"]] for h in history], dtype=torch.float64)
        return {"model": cpu_state(model), "optimizer": cpu_state(opt), "delta": delta.cpu(),
                "history": hist.reshape(-1, 3)}

    done = bool(history) and history[-1]["accuracy"] >= params.stop_accuracy
    bar = progress_bar(ctx, eff["max_rounds"], f"{method} ({params.mode}-wise) rounds", start)
    try:
        for r in range(start, eff["max_rounds"]):
            if done:
                break
            g = unit_generator(ctx.seed, 1, r)
            seed_global(ctx.seed, 1, r)
            idx = torch.randperm(n, generator=g)[: train_n * bs].to(dev)
            train_loss, _ = train_steps(model, opt, x, y, idx, bs,
                                        lambda xb, b: (xb + full(b)).clamp(0, 1))
            model.eval()
            if classwise:
                delta = _class_descent(model, x, y, delta, eps, alpha, steps, bs)
            else:
                for s in range(0, n, NOISE_BATCH):
                    sl = slice(s, s + NOISE_BATCH)
                    xa = pgd(model, x[sl], y[sl], eps, alpha, steps, random_start=False,
                             minimize=True, delta_init=delta[sl])
                    delta[sl] = xa - x[sl]
            loss, acc = loss_and_accuracy(model, x, y, delta=lambda sl: full(torch.arange(
                sl.start, min(sl.stop, n), device=dev)))
            history.append({"loss": loss, "accuracy": acc, "train_loss": train_loss})
            done = acc >= params.stop_accuracy
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")
            ck.step(r + 1, state_fn, force=True)
    finally:
        bar.close()
    clean_loss, clean_acc = loss_and_accuracy(model, x, y)
    info = {
        "norm": "linf", "eps": eps, "mode": params.mode, "arch": arch, "device": str(dev),
        "level": ctx.level, "effective_params": eff, "rounds": len(history),
        "stopped_by": "accuracy" if done else "max_rounds",
        "crafting_model": {"protected_loss": history[-1]["loss"] if history else None,
                           "protected_accuracy": history[-1]["accuracy"] if history else None,
                           "clean_loss": clean_loss, "clean_accuracy": clean_acc},
        "history": history, "seconds_this_run": round(time.perf_counter() - t0, 3),
        "peak_memory": peak_memory(dev),
    }
    if classwise:
        info["pattern_shape"] = list(delta.shape)
    return delta.detach().cpu(), model.eval(), info


def _class_descent(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor,
                   eps: float, alpha: float, steps: int, batch_size: int) -> torch.Tensor:
    """One pass over the set in batches: `steps` signed descent steps of the class patterns each.

    The gradient w.r.t. a class's pattern is the sum over that class's samples in the batch, so
    its sign is the sign of the mean of the samples' updates; absent classes do not move.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for s in range(0, len(x), batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            d = delta
            for _ in range(steps):
                d = d.detach().requires_grad_(True)
                loss = F.cross_entropy(model((xb + d[yb]).clamp(0, 1)), yb)
                (grad,) = torch.autograd.grad(loss, d)
                d = (d - alpha * grad.sign()).clamp(-eps, eps)
            delta = d.detach()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return delta


def em_kind(params: EMParams) -> str:
    """Class-wise with mode=class (one pattern per class), sample-wise otherwise."""
    return "class-wise" if params.mode == "class" else "sample-wise"


@register_poison(
    "em", EMParams, em_kind,
    "Unlearnable Examples: error-minimizing noise (min-min with a crafting model), l_inf 8/255; "
    "mode=class for one pattern per class",
    PAPER, model_based=True, paper_name="ue")
def em(base: ImageSet, params: EMParams, ctx: PoisonContext) -> PoisonOutput:
    """Error-minimizing noise (Unlearnable Examples), sample-wise (default) or class-wise.

    Args: params (EMParams: mode=sample|class, eps=8/255, steps=20, alpha=0.8/255, M=10 SGD
    steps at lr 0.1, stop at 99 % accuracy, arch) and ctx (seed, device, level, work_dir).
    Shapes: delta (N, C, H, W) or (K, C, H, W); output uint8 (N, H, W, C), l_inf <= eps.
    Note: sample-wise by default; with mode=class every image of a class gets one pattern, and
    `POISONS["em"].kind_of({"mode": "class"})` says "class-wise".
    Example: `make_poison("em", load_data("digits"), {"mode": "class"}, seed=0)`.
    """
    delta, _, info = craft_error_minimizing(base, params, ctx, "em")
    labels = torch.from_numpy(base.labels)
    fn = (lambda sl, x: delta[labels[sl]]) if params.mode == "class" else (lambda sl, x: delta[sl])
    return PoisonOutput(perturb_chunks(base, fn, linf=info["eps"]), info)
