"""UEraser as APBench runs it: kornia's augmentation policy, worst-of-K loss, APBench's schedule.

Qin et al., "Learning the Unlearnable: Adversarial Augmentations Suppress Unlearnable Example
Attacks", 2023, https://arxiv.org/abs/2303.15127; run as in APBench (Qin et al. 2023,
https://arxiv.org/abs/2305.00349, code lafeat/apbench: `defense/ueraser.py`, `train.py`).
Needs the optional `kornia` extra (`pip install 'unlearnable[kornia]'`); `ueraser-lite` (in
augmentation.py) is the dependency-free approximation and is *not* comparable with APBench.

The facts of APBench's run that this attack keeps:
- policy: kornia `RandomPlasmaBrightness(roughness=(0.3, 0.7), intensity=(0.5, 1.0), p=0.5)`,
  `RandomPlasmaContrast(roughness=(0.3, 0.7), p=0.5)`, `RandomChannelShuffle(p=0.5)`, then
  `auto.TrivialAugment()`, applied after the usual random crop and flip. (APBench's
  `UEraser_jpeg`, used for TAP and AR, computes a random JPEG copy and then discards it: its
  output is the same policy, so there is one policy here.)
- loss: for the first `repeat_epoch` epochs, K = 5 augmented copies per image and the mean over
  images of the highest per-copy cross-entropy; afterwards one augmented copy and plain
  cross-entropy. APBench's default `repeat_epoch` is 300 of 200 epochs ("UEraser-Max": every
  epoch); 50 is "UEraser", 0 "UEraser-lite". Here `repeat_fraction` is that share of the run
  (default 1.0), so shorter ladder runs keep the same shape.
- schedule (`paper` level): 200 epochs, SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, lr x0.5
  at epochs 100 (and 200, 300: after the end), the `apbench` recipe (`train.recipe.RECIPES`).
kornia draws from torch's global generator, which the training engine seeds per epoch, so a
run is reproducible and a resumed run repeats its draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UnlearnableError
from ..core.params import to_dict
from ..data.imageset import ImageSet
from .base import AttackContext, register_attack, train_and_evaluate



def kornia_available() -> bool:
    """Whether the optional `kornia` extra, which the `ueraser` attack needs, can be imported."""
    try:
        import kornia.augmentation  # noqa: F401
    except ImportError:
        return False
    return True


def _needs_kornia(ds: ImageSet) -> str | None:
    return None if kornia_available() else "needs the kornia extra (pip install 'unlearnable[kornia]')"


def ueraser_policy() -> nn.Module:
    """APBench's UEraser augmentation as a kornia module (batch in, batch out, [0, 1])."""
    if not kornia_available():
        raise UnlearnableError("attack ueraser needs kornia: pip install 'unlearnable[kornia]'")
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomPlasmaBrightness(roughness=(0.3, 0.7), intensity=(0.5, 1.0), same_on_batch=False, p=0.5,
                                 keepdim=True),
        K.RandomPlasmaContrast(roughness=(0.3, 0.7), p=0.5),
        K.RandomChannelShuffle(same_on_batch=False, p=0.5, keepdim=True),
        K.auto.TrivialAugment(),
    )


@dataclass
class KorniaUEraserParams:
    """Parameters of the `ueraser` attack: K copies for the worst-of-K loss and the share of epochs it is on.

    The defaults are APBench's: K = 5, and the loss on for every epoch ("UEraser-Max").
    """

    repeats: int = 5  # K augmented copies per image while the worst-of-K loss is on
    repeat_fraction: float = 1.0  # share of the epochs with the worst-of-K loss (APBench: all)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if not 0 <= self.repeat_fraction <= 1:
            raise ValueError(f"repeat_fraction must be in [0, 1], got {self.repeat_fraction}")


class WorstOfK:
    """A `BatchLoss`: worst of `repeats` augmented copies for the first `repeat_epochs` epochs, then
    one augmented copy. `fit` does not pass the epoch, so the loss counts its steps; the count is
    its state (`state_dict`), which `fit` saves in last.pt and restores on resume."""

    def __init__(self, policy: nn.Module, repeats: int, repeat_epochs: int, steps_per_epoch: int):
        self.policy, self.repeats, self.repeat_epochs = policy, repeats, repeat_epochs
        self.steps_per_epoch = steps_per_epoch
        self.calls = 0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        epoch = self.calls // self.steps_per_epoch
        self.calls += 1
        if y.dtype != torch.int64:
            raise UnlearnableError("ueraser: soft labels (CutMix/MixUp recipes) are not supported")
        if epoch >= self.repeat_epochs:
            logits = model(self.policy(x))
            return F.cross_entropy(logits, y), logits
        per = []
        for _ in range(self.repeats):
            logits = model(self.policy(x))
            per.append(F.cross_entropy(logits, y, reduction="none"))
        # APBench reports the last copy's logits for the training accuracy.
        return torch.stack(per).max(0).values.mean(), logits

    def state_dict(self) -> dict[str, int]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        calls = state.get("calls")
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise ValueError(f"a step count must be an integer >= 0, got {calls!r}")
        self.calls = calls


@register_attack("ueraser", "UEraser as APBench runs it: kornia plasma, channel shuffle, TrivialAugment; "
                 "worst of 5 copies (needs the kornia extra)",
                 "Qin et al. 2023, https://arxiv.org/abs/2303.15127 (APBench's run)",
                 params_cls=KorniaUEraserParams, prior=0.6, family="augmentation", order=81, recipes={"paper": "apbench"},
                 applies_to=_needs_kornia, presets={"tiny": {"repeats": "2"}},
                 # K copies per step while the worst-of-K loss is on; kornia's ops cost about as
                 # much again as the network on small images.
                 cost=lambda p: 2.0 * max(1.0, p.repeats * p.repeat_fraction))
def ueraser_attack(ctx: AttackContext, p: KorniaUEraserParams) -> dict[str, Any]:
    """Train through kornia's UEraser policy with the worst-of-K loss, as APBench runs it (needs kornia).

    Paper: Qin et al., "Learning the Unlearnable: Adversarial Augmentations Suppress Unlearnable Example
        Attacks", 2023, https://arxiv.org/abs/2303.15127, run as in APBench, https://arxiv.org/abs/2305.00349.
    Threat model: only the protected training set, trained through adversarial augmentation; test inputs
        untouched.
    Args:
        repeats (5): K augmented copies per image while the worst-of-K loss is on
        repeat_fraction (1.0): share of the epochs with the worst-of-K loss (APBench: all); then one copy
    Shapes: ctx.train images uint8 (N, H, W, C) with hard labels int64 (N,) (soft-label recipes are refused),
        augmented in [0, 1] per batch while training; returns a dict with test_accuracy (fraction, clean test
        set), test_loss, train_accuracy, seconds_train, attack_params, worst_of_k_epochs and kornia (its
        version).
    Example:
        unlearnable attack ueraser runs/lsp --recipe fast --out runs/lsp-ueraser
    """
    policy = ueraser_policy()
    recipe = ctx.spec().recipe
    steps = math.ceil(len(ctx.train) / recipe.batch_size)
    repeat_epochs = round(p.repeat_fraction * recipe.epochs)
    _, out = train_and_evaluate(ctx, batch_loss=WorstOfK(policy, p.repeats, repeat_epochs, steps))
    import kornia

    out["attack_params"] = to_dict(p)
    out["worst_of_k_epochs"] = repeat_epochs
    out["kornia"] = kornia.__version__
    return out
