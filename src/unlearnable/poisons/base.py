"""The poison contract: one registry, one calling convention, for every way of protecting data.

A poison (an "unlearnable dataset" generator, the *defence* in the paper's framing) is

    fn(base: ImageSet, params: ParamsDataclass, ctx: PoisonContext) -> PoisonOutput

where `params` is a dataclass whose defaults are the original paper's, `ctx` carries the seed and
what model-based methods need (device, progress bar, a work directory for resumable state, the
compute level of `unlearnable.ladder`), and `PoisonOutput.images` is the protected uint8 NHWC
array aligned with `base`. `make_poison` adds the seeded `fraction` mixing; `poison_dataset` (in
`make.py`) loads, subsets, generates and writes the project format with a full manifest.

Each registry entry (`PoisonInfo`) carries its own facts: whether it trains a model, its cheaper
parameter presets per compute level, and which parameters make it class-wise (`kind_of`).

Shared helpers keep every method's l_p bound honest: `apply_delta` clips to [0, 1], rounds to
the nearest grey level and, for l_inf methods, clamps the integer change to the bound, so
"l_inf <= eps" holds on the uint8 file, not only on the float perturbation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import UnlearnableError
from ..core.hashing import sha256_array
from ..core.params import from_params, to_dict
from ..data.facts import declare_method
from ..data.imageset import ImageSet
from ..ladder import LEVELS, PerLevel, check_level


@dataclass
class PoisonContext:
    """What a generator may need besides the data and its parameters.

    seed: every random draw derives from it. device: where model-based methods compute (the
    model-free ones here run on the CPU). progress: tqdm bar (None = only on a tty).
    work_dir: a directory for resumable state (model-based methods; `poison_dataset` picks
    OUT.work when None). level: a rung of `unlearnable.ladder.LEVELS`: "paper" (the original's
    full cost), "quick" (a CPU-sized run) or "tiny" (seconds, for tests); it decides the
    parameters left unset (a model-based method's level table, a model-free one's presets).
    save_every / stop_after: see below.
    """

    seed: int = 0
    device: str = "cpu"
    progress: bool | None = None
    work_dir: Path | None = None
    level: str = "paper"
    # Model-based methods: save resumable state to work_dir at least every `save_every` seconds;
    # `stop_after` = N stops (raising poisons.crafting.Interrupted) after N units, as a kill would.
    save_every: float = 300.0
    stop_after: int | None = None

    def __post_init__(self) -> None:
        check_level(self.level)
        if self.work_dir is not None:
            self.work_dir = Path(self.work_dir)

    def generator(self, stream: int = 0) -> torch.Generator:
        """A CPU generator for `seed`; distinct `stream`s give independent draws."""
        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([self.seed, stream]).generate_state(1, np.uint64)[0] >> 1))
        return g


@dataclass
class PoisonOutput:
    """What a generator returns: the protected images and a JSON-able record for the manifest."""

    images: np.ndarray  # (N, H, W, C) uint8, aligned with the base
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able: norm and bound, patterns, extras


PoisonFn = Callable[[ImageSet, Any, PoisonContext], PoisonOutput]


KINDS = ("class-wise", "sample-wise")
# A poison's kind: fixed, or decided by its parameters (EM with mode=class is class-wise).
KindRule = str | Callable[[Any], str]


@dataclass(frozen=True)
class PoisonInfo:
    """A registered poison and the facts about it that callers need without running it.

    model_based: it trains or queries a network (em, tap, ...), so it is slow, resumable (it
    uses `ctx.work_dir`) and its unset parameters come from its level table. Its rows of the
    ladder's table (`ladder.PerLevel`): presets, the `--param` strings a model-free method takes
    at a level unless given (AR searches fewer filters at "tiny"; levels without an entry run
    the paper's defaults); fills, the values a model-based method's parameters left at None take
    at each level (`crafting.resolve`; the manifest records them beside the level); recipes, a
    recipe preset a method trains its own model with at a level instead of the level's.
    """

    name: str
    params_cls: type
    fn: PoisonFn
    kind_rule: KindRule
    summary: str
    paper: str = ""
    uses_seed: bool = True  # False for deterministic methods (OPS): any seed gives the same set
    model_based: bool = False
    presets: PerLevel[Mapping[str, str]] = field(default_factory=lambda: PerLevel(default={}))
    paper_name: str = ""  # the row this method has in the paper's tables, when its name differs
    # x' = x + delta with a bounded delta. False for a transform of the image (CUDA convolves it):
    # x' - x is then no l_p-bounded perturbation, and analyses of delta do not apply.
    additive: bool = True
    fills: PerLevel[Mapping[str, Any]] | None = None
    recipes: PerLevel[str | None] = field(default_factory=lambda: PerLevel(default=None))

    @property
    def kind(self) -> str:
        """The kind at the default (paper) parameters; `kind_of(params)` for given ones."""
        return self.kind_of()

    def kind_of(self, params: dict[str, str] | Any | None = None) -> str:
        """"class-wise" or "sample-wise" for these parameters (`--param` strings or typed)."""
        if isinstance(self.kind_rule, str):
            return self.kind_rule
        kind = self.kind_rule(self.params(params))
        if kind not in KINDS:
            raise ValueError(f"{self.name}: kind rule gave {kind!r}, expected one of {KINDS}")
        return kind

    def preset(self, level: str = "paper") -> dict[str, str]:
        """The `--param` strings this poison takes at ladder `level` unless given."""
        return dict(self.presets[level])

    def params(self, params: dict[str, str] | Any | None = None, level: str = "paper") -> Any:
        """Typed parameters from `--param` strings (or a ready dataclass), filled in from the
        preset of `level`, then the paper's defaults. A ready dataclass is taken as it is."""
        if dataclasses.is_dataclass(params) and not isinstance(params, type):
            if not isinstance(params, self.params_cls):
                raise UnlearnableError(f"{self.name}: expected {self.params_cls.__name__}, "
                                       f"got {type(params).__name__}")
            return params
        return from_params(self.params_cls, {**self.preset(level), **(params or {})})

    def defaults(self) -> dict[str, Any]:
        """The params dataclass's field defaults by name (None for fields a level fills)."""
        return {f.name: f.default for f in dataclasses.fields(self.params_cls)}


POISONS: dict[str, PoisonInfo] = {}


def register_poison(name: str, params_cls: type, kind: KindRule, summary: str, paper: str = "",
                    uses_seed: bool = True, *, model_based: bool,
                    presets: Mapping[str, Mapping[str, str]] | None = None,
                    paper_name: str = "", additive: bool = True,
                    fills: Mapping[str, Mapping[str, Any]] | None = None,
                    recipes: Mapping[str, str] | None = None) -> Callable[[PoisonFn], PoisonFn]:
    """Register `fn(base, params, ctx) -> PoisonOutput` under `name` (used by CLI and tests).

    kind: "class-wise" | "sample-wise", or a function of the typed parameters giving one.
    model_based: whether it trains or queries a network (declared, so nothing has to guess).
    presets: {level: {param: string}} for levels that should run cheaper than the paper.
    paper_name: the method's row in the paper's tables (`reproduce` puts the paper's number there).
    additive: False for a method that transforms the image instead of adding a bounded delta.
    fills: {level: {field: value}} for a model-based method: what each of its parameters left at
    None takes at each level; every level names exactly those fields (checked here).
    recipes: {level: recipe preset} its own model trains with instead of the level's.
    Rows of unknown levels, broken presets and incomplete fills fail at import, not in a user's run.
    """
    if not callable(kind) and kind not in KINDS:
        raise ValueError(f"kind must be class-wise, sample-wise or a function, got {kind!r}")
    try:
        preset_row = PerLevel({lv: dict(p) for lv, p in (presets or {}).items()}, default={})
        fill_row = PerLevel(fills) if fills is not None else None
        recipe_row = PerLevel(recipes, default=None)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    for lv in preset_row:
        from_params(params_cls, preset_row[lv])
    if fill_row is not None:
        unset = {f.name for f in dataclasses.fields(params_cls) if f.default is None}
        for lv in LEVELS:
            if set(fill_row[lv]) != unset:
                raise ValueError(f"{name}: the {lv} level fills {sorted(fill_row[lv])}, not the fields left "
                                 f"unset {sorted(unset)}")

    def deco(fn: PoisonFn) -> PoisonFn:
        declare_method(name, additive)
        POISONS[name] = PoisonInfo(name, params_cls, fn, kind, summary, paper, uses_seed, model_based, preset_row,
                                   paper_name or name, additive, fill_row, recipe_row)
        return fn
    return deco


def get_poison(name: str) -> PoisonInfo:
    """The registry entry of poison `name`; an unknown name is an error that lists the known ones."""
    if name not in POISONS:
        raise UnlearnableError(f"unknown poison {name!r} (known: {', '.join(sorted(POISONS))})")
    return POISONS[name]


# ---------------------------------------------------------------------------------------------
# Helpers shared by the generators


def check_bound(eps: float, name: str = "eps") -> None:
    """The l_p bound of a perturbation in [0, 1] units: (0, 1], said in one line otherwise."""
    if not 0 < eps <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {eps}")



def apply_delta(x: torch.Tensor, delta: torch.Tensor, linf: float | None = None) -> np.ndarray:
    """uint8 NHWC of clip(x + delta) rounded to grey levels; x, delta float NCHW in [0, 1] units.

    With `linf`, the integer change per value is clamped to floor(255 * linf) so the stored
    images respect the l_inf bound even when 255 * linf is not a whole number of grey levels.
    Only clipping at 0 and 255 makes the stored delta differ from round(255 * delta).
    """
    # Round the perturbation, not the sum: x sits on the grey-level grid, so a class-wise delta
    # then moves every image of its class by the same integer (rounding x + delta would send
    # half-level deltas up or down depending on the pixel, round-half-to-even).
    x255 = x.mul(255).round_()
    d255 = delta.mul(255).round_()
    if linf is not None:
        k = math.floor(255 * linf + 1e-6)
        d255.clamp_(-k, k)
    out = (x255 + d255).clamp_(0, 255)
    return out.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def region_index(n: int, parts: int) -> torch.Tensor:
    """For each of `n` pixels along an axis, which of `parts` near-equal regions it falls in."""
    return torch.div(torch.arange(n) * parts, n, rounding_mode="floor")


def upsample_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., gh, gw) values -> (..., H, W), each value repeated over its near-equal region."""
    gh, gw = grid.shape[-2:]
    rows, cols = region_index(size[0], gh), region_index(size[1], gw)
    return grid[..., rows, :][..., cols]


def scale_to_norm(delta: torch.Tensor, norm: str, size: float) -> torch.Tensor:
    """Scale each sample of `delta` (N, ...) to ||delta||_norm = size (norm 'l2' or 'linf')."""
    flat = delta.reshape(len(delta), -1)
    if norm == "l2":
        n = flat.norm(dim=1)
    elif norm == "linf":
        n = flat.abs().amax(dim=1)
    else:
        raise UnlearnableError(f"norm must be l2 or linf, got {norm!r}")
    return delta * (size / n.clamp_min(1e-12)).view(-1, *([1] * (delta.dim() - 1)))


def poisoned_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """The seeded choice of round(fraction * n) samples to poison (bool mask of length n).

    Drawn from its own stream ([seed, 1]) so it never shifts the generator's draws: a poisoned
    sample is byte-identical to the same sample of the fraction=1 set made with the same seed.
    """
    if not 0.0 <= fraction <= 1.0:
        raise UnlearnableError(f"--fraction must be in [0, 1], got {fraction}")
    mask = np.zeros(n, dtype=bool)
    m = int(round(fraction * n))
    if m == n:
        mask[:] = True
    elif m > 0:
        mask[np.random.default_rng([seed, 1]).choice(n, size=m, replace=False)] = True
    return mask


def make_poison(method: str, base: ImageSet, params: dict[str, str] | Any | None = None,
                seed: int = 0, fraction: float = 1.0, ctx: PoisonContext | None = None) -> ImageSet:
    """The protected version of `base` made by poison `method`.

    Args:
        method: a key of `POISONS` (random-noise, regions, lsp, ops, ar, ...).
        base: clean training images (uint8 NHWC ImageSet; any channels, size, class count).
        params: `--param`-style strings or the method's params dataclass; missing keys take the
            preset of `ctx.level` (`POISONS[method].preset(level)`), then the original paper's
            defaults.
        seed: seed of every draw (ignored when `ctx` is given: `ctx.seed` wins).
        fraction: share of samples poisoned, chosen by `poisoned_mask(n, fraction, seed)`; the
            others stay byte-identical to `base`.
        ctx: device / progress / work_dir for model-based methods, and the compute level.

    Returns an ImageSet with the same labels, classes and indices, whose `meta["poison"]` holds
    method, kind, typed params, seed, fraction, the poisoned-mask checksum and the generator info.

    Example:
        >>> protected = make_poison("regions", load_data("digits"), {"p": "4"}, seed=0)
    """
    info = get_poison(method)
    ctx = ctx or PoisonContext(seed=seed)
    p = info.params(params, ctx.level)
    if len(base) == 0:
        raise UnlearnableError(f"{base.name or 'dataset'}: no images to poison")
    mask = poisoned_mask(len(base), fraction, ctx.seed)
    out = info.fn(base, p, ctx)
    if out.images.shape != base.images.shape or out.images.dtype != np.uint8:
        raise RuntimeError(f"poison {method} returned {out.images.dtype} {out.images.shape}, "
                           f"expected uint8 {base.images.shape}")
    images = out.images if mask.all() else np.where(mask[:, None, None, None], out.images, base.images)
    meta = dict(base.meta)
    meta["poison"] = {
        "method": method, "kind": info.kind_of(p), "params": to_dict(p), "seed": ctx.seed,
        "level": ctx.level, "fraction": fraction, "num_poisoned": int(mask.sum()),
        "poisoned_mask": {"rule": "unlearnable.poisons.poisoned_mask(num_samples, fraction, seed)",
                          "sha256": sha256_array(mask)},
        "info": out.info,
    }
    return base.replace(images, meta=meta)


def perturb_chunks(base: ImageSet, delta_fn: Callable[[slice, torch.Tensor], torch.Tensor],
                   linf: float | None = None, chunk: int = 8192) -> np.ndarray:
    """uint8 NHWC protected images, made `chunk` samples at a time to bound memory.

    `delta_fn(sl, x)` gets the slice of sample positions and their float NCHW images and returns
    their perturbations; it must draw nothing random itself (draw for the whole set up front),
    so the output does not depend on `chunk`.
    """
    out = np.empty_like(base.images)
    for s in range(0, len(base), chunk):
        sl = slice(s, min(s + chunk, len(base)))
        x = torch.from_numpy(base.images[sl]).permute(0, 3, 1, 2).float().div_(255)
        out[sl] = apply_delta(x, delta_fn(sl, x), linf)
    return out


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (restored after).

    For loops of thousands of small ops (the AR recurrence): thread hand-off costs more than the
    work, and on a shared machine 2 threads were 7x slower than 1 (47 s vs 6 s, Fashion-MNIST).
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
