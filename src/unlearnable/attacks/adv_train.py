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

from ..core.params import to_dict
from ..train.pgd import ADVERSARIES, FREE_REPLAYS, adversarial_loss, adversary_step, pgd_accuracy
from ..train.run import as_tensors
from .base import AttackContext, register_attack, train_and_evaluate


@dataclass
class AdvTrainParams:
    """Parameters of the `adv-train` attack: the adversary it trains against and the PGD accuracy figure.

    The defaults are the paper's Table 3 baseline (Madry et al.'s 3-step l_inf PGD at 8/255);
    `replays` defaults to Shafahi et al.'s CIFAR-10 choice (`train.pgd.FREE_REPLAYS`).
    """

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
        """The adversary's step size: `alpha`, or its adversary's default (`train.pgd.adversary_step`)."""
        return adversary_step(self.adversary, self.eps, self.steps, self.alpha)

    def loss(self):
        """The `BatchLoss` that trains with this adversary (`train.pgd.adversarial_loss`)."""
        return adversarial_loss(self.eps, self.steps, self.alpha, self.norm, self.adversary, self.replays)


@register_attack("adv-train", "PGD adversarial training (l_inf 8/255, 3 steps; the paper's Table 3 baseline)",
                 "Madry et al. ICLR 2018, https://arxiv.org/abs/1706.06083", params_cls=AdvTrainParams,
                 # Each step of the adversary is a forward and a backward pass, then the update;
                 # Free's step is the update itself.
                 cost=lambda p: 1 if p.adversary == "free" else p.steps + 1, prior=0.6, family="adversarial-training", order=10, recipes={"paper": "adv"},
                 # The paper's Table 3: it breaks every l_inf and l2 poison (84-87 %) and neither l0
                 # one (OPS 11.8 %, OPS+EM 12.2 %): an l_inf ball does not cover a one-pixel change.
                 suits={"norm:l0": 0.1},
                 # The PGD accuracy figure is a side result: a 100-image subset keeps tiny runs short.
                 # `quick` trains with Free (the cost of standard training); `paper` keeps the paper's PGD.
                 presets={"tiny": {"eval_samples": "100"},
                          "quick": {"adversary": "free", "steps": "1", "replays": "3"}})
def adv_train(ctx: AttackContext, p: AdvTrainParams) -> dict[str, Any]:
    """Train on adversarial examples of every protected batch, then report clean and PGD test accuracy.

    Paper: Madry et al., ICLR 2018, https://arxiv.org/abs/1706.06083 (adversary=pgd); adversary=fgsm-rs:
        Wong et al., ICLR 2020, https://arxiv.org/abs/2001.03994; adversary=free: Shafahi et al., NeurIPS 2019,
        "Adversarial Training for Free!", https://arxiv.org/abs/1904.12843.
    Threat model: only the protected training set; perturbs each training batch against its own model, within
        an eps ball; test inputs untouched.
    Args:
        eps (8/255): radius of the adversary's ball (for norm=l2 the field uses 0.5)
        steps (3): adversary steps per batch (the paper's 3-step adversary); fgsm-rs and free take 1
        alpha (None): step size; None means 2.5 * eps / steps (pgd), 1.25 * eps (fgsm-rs), eps (free)
        norm ("linf"): the ball's norm, linf or l2
        eval_samples (1000): seeded test subset for the PGD accuracy figure; 0 skips it
        eval_steps (10): PGD steps of that evaluation
        adversary ("pgd"): pgd (Madry et al.), fgsm-rs (Wong et al.) or free (Shafahi et al.)
        replays (FREE_REPLAYS = 8): free only: steps each minibatch trains in a row (m)
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), used as given; returns a dict with
        test_accuracy (fraction, clean test set), test_loss, train_accuracy, seconds_train, test_pgd_accuracy
        (fraction, when eval_samples > 0) and attack_params.
    Example:
        unlearnable attack adv-train runs/lsp --recipe fast --out runs/lsp-adv-train
    """
    model, out = train_and_evaluate(ctx, batch_loss=p.loss())
    if p.eval_samples > 0:
        x, y = as_tensors(ctx.test)
        out["test_pgd_accuracy"] = pgd_accuracy(model, x, y, p.eps, p.eval_steps, p.norm, p.eval_samples, ctx.seed)
    out["attack_params"] = to_dict(p)
    return out

