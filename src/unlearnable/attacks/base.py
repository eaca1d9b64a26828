"""The attack contract: learn from a protected training set anyway, report clean test accuracy.

In the paper's framing the protected dataset is the defence; an *attack* is any way of training
on it that still generalizes. Every attack is a function

    attack(ctx: AttackContext, params: dict[str, str]) -> dict

that trains (usually through `train_on`) inside `ctx.out_dir` and returns a result dict with at
least `test_accuracy` (a fraction, clean test set). Attacks that may also transform test inputs
(the attacker controls its own inference) add `test_accuracy_transformed_test`.
`run_attack` adds timing and provenance and writes `result.json` atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import UnlearnableError, now_iso, versions, write_json
from ..data.imageset import ImageSet
from ..train.engine import BatchLoss, Recipe, evaluate
from ..train.run import RunSpec, as_tensors, spec_for, train_on


@dataclass
class AttackContext:
    train: ImageSet  # the protected training set
    test: ImageSet  # the clean test set
    arch: str
    recipe: Recipe
    seed: int
    out_dir: Path
    device: str = "auto"
    progress: bool | None = None
    clean: ImageSet | None = None  # the clean images behind `train`, aligned, when known
    data_name: str = ""

    def spec(self) -> RunSpec:
        return spec_for(self.train, self.arch, self.recipe, self.seed, self.data_name)


AttackFn = Callable[[AttackContext, dict[str, str]], dict[str, Any]]


@dataclass(frozen=True)
class AttackInfo:
    name: str
    fn: AttackFn
    summary: str
    paper: str = ""


ATTACKS: dict[str, AttackInfo] = {}


def register_attack(name: str, summary: str, paper: str = "") -> Callable[[AttackFn], AttackFn]:
    def deco(fn: AttackFn) -> AttackFn:
        ATTACKS[name] = AttackInfo(name, fn, summary, paper)
        return fn
    return deco


def best_accuracy(result: dict[str, Any]) -> float:
    """The attack's figure: the better of plain and transformed-test accuracy."""
    vals = [result.get(k) for k in ("test_accuracy", "test_accuracy_transformed_test")]
    return max(v for v in vals if v is not None)


def run_attack(name: str, ctx: AttackContext, params: dict[str, str] | None = None) -> dict[str, Any]:
    """Run attack `name` into `ctx.out_dir`; reuse a finished `result.json` made the same way."""
    if name not in ATTACKS:
        raise UnlearnableError(f"unknown attack {name!r} (known: {', '.join(sorted(ATTACKS))})")
    ctx.out_dir = Path(ctx.out_dir)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = dict(ATTACKS[name].fn(ctx, dict(params or {})))
    if "test_accuracy" not in result:
        raise RuntimeError(f"attack {name} returned no test_accuracy")
    result.update({
        "attack": name, "params": dict(params or {}), "arch": ctx.arch, "seed": ctx.seed,
        "recipe": ctx.recipe.to_dict(), "data": ctx.data_name, "num_train": len(ctx.train),
        "seconds_total": round(time.perf_counter() - t0, 3), "finished": now_iso(),
        "versions": versions(),
    })
    result["test_accuracy_best"] = best_accuracy(result)
    write_json(ctx.out_dir / "result.json", result)
    return result


def train_and_evaluate(
    ctx: AttackContext,
    train: ImageSet | tuple[torch.Tensor, torch.Tensor] | None = None,
    recipe: Recipe | None = None,
    test_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_loss: BatchLoss | None = None,
    transformed_test: ImageSet | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ctx's architecture on `train` (default: ctx.train) into `ctx.out_dir/train`, then
    report clean test accuracy, and with `test_transform` (a batch function) or
    `transformed_test` (the test set already transformed) also the transformed-test accuracy.

    The shared tail of every attack that changes the data or the loss but not the engine.
    """
    spec = ctx.spec()
    if recipe is not None:
        spec.recipe = recipe
    t0 = time.perf_counter()
    model, res = train_on(ctx.train if train is None else train, ctx.test, spec, ctx.out_dir / "train",
                          ctx.device, ctx.progress, batch_loss=batch_loss)
    out: dict[str, Any] = {
        "test_accuracy": res.test_accuracy, "test_loss": res.test_loss,
        "train_accuracy": res.train_accuracy, "seconds_train": round(time.perf_counter() - t0, 3),
    }
    if test_transform is not None or transformed_test is not None:
        x, y = as_tensors(transformed_test if transformed_test is not None else ctx.test)
        loss, acc = evaluate(model, x, y, spec.recipe.eval_batch_size, test_transform)
        out["test_accuracy_transformed_test"] = acc
        out["test_loss_transformed_test"] = loss
    return model, out


@register_attack("none", "standard training on the protected set (the baseline every attack beats)")
def no_attack(ctx: AttackContext, params: dict[str, str]) -> dict[str, Any]:
    if params:
        raise UnlearnableError(f"attack 'none' takes no parameters, got {sorted(params)}")
    return train_and_evaluate(ctx)[1]
