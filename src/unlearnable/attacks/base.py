"""The attack contract: learn from a protected training set anyway, report clean test accuracy.

In the paper's framing the protected dataset is the defence; an *attack* is any way of training
on it that still generalizes. Every attack is a function

    attack(ctx: AttackContext, params: ParamsDataclass) -> dict

registered with its facts (`AttackInfo`: typed parameters, cost, recipe per ladder level,
applicability, artifacts, display order), that trains (usually through `train_on`) inside
`ctx.out_dir` and returns a result dict with at least `test_accuracy` (a fraction, clean test
set). Attacks that may also transform test inputs (the attacker controls its own inference) add
`test_accuracy_transformed_test`. Each registered function's docstring gives its paper, threat
model, parameters, shapes and an example, in that order.
`execute_attack` parses the parameters once, runs the attack, adds timing and provenance and
writes `result.json` atomically; `unlearnable.kinds.run_attack` runs it as a job, so a finished
one is reused from the job store.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.device import resolve_device
from ..core.errors import UnlearnableError
from ..core.files import write_json
from ..core.params import from_params, to_dict
from ..core.provenance import now_iso, versions
from ..core.registry import lookup
from ..data.identity import content_id
from ..data.imageset import ImageSet
from ..ladder import AttackRow, PerLevel, register_attack_row
from ..models import arch_signature
from ..train.loop import BatchLoss, evaluate
from ..train.recipe import Recipe
from ..train.run import RunSpec, as_tensors, spec_for, train_on

log = logging.getLogger(__name__)


@dataclass
class AttackContext:
    """What an attack is given: the protected training set and the clean test set, the
    architecture, recipe and seed it trains with, the directory it writes, and what else is
    known of the data. The device is resolved once, here (`core.device.resolve_device`).

    clean: the clean images behind `train`, aligned, when known (oracle attacks and early
    stopping need them). dfr_indices: the clean subset an audit's DFR fits its head on when a
    file names it (`--dfr-indices`), which attacks drawing on the clean pool leave out.
    data_name: for display only; the data's identity is its content (`content_id`).
    """

    train: ImageSet
    test: ImageSet
    arch: str
    recipe: Recipe
    seed: int
    out_dir: Path
    device: str | torch.device = "auto"
    progress: bool | None = None
    clean: ImageSet | None = None
    data_name: str = ""
    dfr_indices: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.out_dir = Path(self.out_dir)

    def spec(self) -> RunSpec:
        """The run this context trains: `arch` on `train` with `recipe` as the data allows."""
        return spec_for(self.train, self.arch, self.recipe, self.seed, self.data_name)


@dataclass
class NoParams:
    """An attack without parameters."""


# fn(ctx, params) -> result dict with at least `test_accuracy`; params is the entry's dataclass.
AttackFn = Callable[[AttackContext, Any], dict[str, Any]]


def _always(ds: ImageSet) -> str | None:
    return None


# The families of defence, one per attack: a worst case needs every family tried, and a new
# attack joins the panels through its family. "baseline" is standard training, "oracle" an upper
# bound that knows the perturbations.
FAMILIES = ("baseline", "projection", "adversarial-training", "squeezing", "smoothing", "augmentation",
            "purification", "early-stopping", "oracle")


@dataclass(frozen=True)
class AttackInfo:
    """An attack and its facts, read by every orchestrator (audit, grids, cost model, report).

    cost: wall time relative to one standard training of the same recipe (a number, or a
    function of the parsed parameters, or of them and the recipe's epochs). levels: its row of the ladder's table (`ladder.AttackRow`:
    the recipe preset it trains with at a level instead of the level's, and the parameters it
    takes there; `recipes` and `presets` read them). applies_to(train set) -> None, or why the
    attack is pointless on it. artifacts: figure name -> file the attack leaves in its directory
    (the report shows the pictures). order: report column order.
    """

    name: str
    fn: AttackFn
    summary: str
    paper: str = ""
    family: str = "baseline"  # one of FAMILIES
    # The chance it breaks a protection that standard training does not, as measured on the
    # attack tables (docs/attacks.md): which member of a family a level's panel takes, and, over
    # cost, the order a sequential audit tries them in.
    prior: float = 0.5
    # Multipliers of the prior by what the protected set's manifest says of it (`panel.facts_of`:
    # "kind:class-wise", "kind:sample-wise", "norm:l0", "norm:linf", "additive", ...), from
    # published tables: a sequential audit tries first what is known to work on such a set.
    suits: dict[str, float] = field(default_factory=dict)
    params_cls: type = NoParams
    cost: float | Callable[[Any], float] = 1.0
    levels: AttackRow = field(default_factory=AttackRow)
    applies_to: Callable[[ImageSet], str | None] = _always
    artifacts: dict[str, str] = field(default_factory=dict)
    order: int = 100
    transforms_test: bool = False  # may report a transformed-test accuracy too
    # Knows what an attacker cannot (the perturbations themselves): an upper bound the report
    # shows beside the attacks, never what breaks a protection.
    oracle: bool = False
    # Draws clean images from the base's pool (early stopping's validation images): an audit
    # gives it the clean subset DFR fits on (`AttackContext.dfr_indices`), to leave out.
    uses_clean_pool: bool = False
    # The dataset directory (the project's format) it leaves in its run directory: the training
    # set it rewrote before training (`attack --save-purified` copies it), or None.
    purified_set: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"attack {self.name}: family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if not 0 <= self.prior <= 1:
            raise ValueError(f"attack {self.name}: prior must be in [0, 1], got {self.prior!r}")
        if (self.family == "oracle") != self.oracle:
            raise ValueError(f"attack {self.name}: an oracle attack, and only one, is of the family 'oracle'")

    def params(self, params: dict[str, str] | Any | None = None) -> Any:
        """Typed parameters from `--param` strings (or a ready dataclass), defaults filled in."""
        if dataclasses.is_dataclass(params) and not isinstance(params, type):
            if not isinstance(params, self.params_cls):
                raise UnlearnableError(f"attack {self.name}: expected {self.params_cls.__name__}, "
                                       f"got {type(params).__name__}")
            return params
        if params and self.params_cls is NoParams:
            raise UnlearnableError(f"attack {self.name!r} takes no parameters, got {sorted(params)}")
        return from_params(self.params_cls, params or {})

    def params_for(self, ctx: AttackContext, params: dict[str, str] | Any | None = None) -> Any:
        """`params(params)`, once the attack is known to apply to ctx's training set (else one line)."""
        p = self.params(params)
        reason = self.applies_to(ctx.train)
        if reason:
            where = ctx.data_name or ctx.train.name
            raise UnlearnableError(f"attack {self.name} does not apply to {where}: {reason}")
        return p

    @property
    def recipes(self) -> PerLevel[str | None]:
        """Level -> the recipe preset this attack trains with there instead of the level's."""
        return self.levels.recipe

    @property
    def presets(self) -> PerLevel[dict[str, str]]:
        """Level -> the `--param` strings this attack takes there unless given."""
        return self.levels.params

    def preset(self, level: str) -> dict[str, str]:
        """The `--param` strings this attack takes at ladder `level` unless given."""
        return dict(self.levels.params[level])

    def cost_of(self, params: Any = None, epochs: int = 1) -> float:
        """Wall time relative to one standard training of the same recipe, for these parameters;
        `epochs`, that recipe's, for a cost function that takes them too (a purifier that trains a
        network of its own for a fixed number of epochs costs less beside a longer recipe)."""
        if not callable(self.cost):
            return float(self.cost)
        p = self.params(params)
        return float(self.cost(p, epochs) if len(inspect.signature(self.cost).parameters) == 2 else self.cost(p))


# name -> AttackInfo, filled by `register_attack` as the attack modules are imported.
ATTACKS: dict[str, AttackInfo] = {}


def register_attack(name: str, summary: str, paper: str = "", *, family: str, recipes: dict[str, str] | None = None,
                    presets: dict[str, dict[str, str]] | None = None, **facts: Any) -> Callable[[AttackFn], AttackFn]:
    """Register `fn(ctx, params) -> dict` under `name` with its family (one of `FAMILIES`) and
    facts (see `AttackInfo`).

    recipes: {level: recipe preset} and presets: {level: {param: string}} make its row of the
    ladder's table; a broken preset fails here, at import, not in a user's run."""
    row = AttackRow(PerLevel(recipes, default=None), PerLevel(presets, default={}))

    def deco(fn: AttackFn) -> AttackFn:
        info = AttackInfo(name, fn, summary, paper, family, levels=row, **facts)
        for lv in row.params:
            info.params(row.params[lv])
        ATTACKS[name] = info
        register_attack_row(name, row)
        return fn
    return deco


def get_attack(name: str) -> AttackInfo:
    """The registered attack `name`; an unknown name raises an error that lists the known ones."""
    return lookup(ATTACKS, name, "attack")


def ordered(names: Iterable[str]) -> list[str]:
    """Attack names in the registry's display order (unknown names last, alphabetically)."""
    return sorted(names, key=lambda n: (ATTACKS[n].order if n in ATTACKS else 1_000, n))


def best_accuracy(result: dict[str, Any]) -> float:
    """The attack's figure: the better of plain and transformed-test accuracy."""
    vals = [result.get(k) for k in ("test_accuracy", "test_accuracy_transformed_test")]
    return max(v for v in vals if v is not None)


def identity(name: str, ctx: AttackContext, params: Any) -> dict[str, Any]:
    """Everything that determines an attack's result (the data by content, the model by its
    definition), recorded in its result.json beside the numbers."""
    t = ctx.train
    return {"attack": name, "params": to_dict(params), "arch": ctx.arch, "seed": ctx.seed,
            "recipe": ctx.spec().recipe.to_dict(), "data": content_id(t), "test": content_id(ctx.test),
            "model": arch_signature(ctx.arch, t.num_classes, t.channels, t.image_size)}


def execute_attack(name: str, ctx: AttackContext, params: dict[str, str] | Any | None = None) -> dict[str, Any]:
    """Run attack `name` into `ctx.out_dir` now and write its `result.json` (atomically), with
    timing and provenance added to what the attack returns. Whether it ran before is the job
    runner's to know: `unlearnable.kinds.run_attack` reuses a finished one."""
    info = get_attack(name)
    p = info.params_for(ctx, params)
    ident = identity(name, ctx, p)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = dict(info.fn(ctx, p))
    if "test_accuracy" not in result:
        raise RuntimeError(f"attack {name} returned no test_accuracy")
    result.update({
        "attack": name, "params": to_dict(p), "arch": ctx.arch, "seed": ctx.seed,
        "recipe": ident["recipe"], "data": ctx.data_name, "num_train": len(ctx.train),
        "identity": ident, "seconds_total": round(time.perf_counter() - t0, 3), "finished": now_iso(),
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


def train_transformed(ctx: AttackContext, fn: Callable[[np.ndarray], np.ndarray], p: Any) -> dict[str, Any]:
    """Train on `fn` (uint8 NHWC -> uint8 NHWC of the same shape) of every training image, and
    with `p.test` also report the clean test set through `fn` as the transformed-test figure: the
    shared body of the input-transforming defences (squeezing, smoothing). The clean test set
    stays the figure of record."""
    transformed = ctx.train.replace(fn(ctx.train.images))
    test = ctx.test.replace(fn(ctx.test.images)) if p.test else None
    _, out = train_and_evaluate(ctx, train=transformed, transformed_test=test)
    out["attack_params"] = to_dict(p)
    out["changed_fraction"] = float((transformed.images != ctx.train.images).mean())
    return out


@register_attack("none", "standard training on the protected set (the baseline every attack beats)",
                 prior=0.0, family="baseline", order=0)
def no_attack(ctx: AttackContext, params: NoParams) -> dict[str, Any]:
    """Train on the protected set as it is, with the recipe unchanged, and report clean test accuracy.

    Paper: none; the baseline every attack is measured against. It is the standard training whose accuracy
        Sandoval-Segura et al., NeurIPS 2023, https://arxiv.org/abs/2305.19254 report (the paper reproduced here).
    Threat model: only the protected training set, trained on as a defender would expect; test inputs untouched.
    Args: none (`NoParams`).
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), used as given; returns a dict with
        test_accuracy (fraction, clean test set), test_loss, train_accuracy and seconds_train.
    Example:
        unlearnable attack none runs/lsp --recipe fast --out runs/lsp-none
    """
    return train_and_evaluate(ctx)[1]
