"""The audit's steps: one registry, `AUDITS`, that the audit, the grids, the cost model and the
report all iterate. A step turns one training set (a `Row`) at a ladder level into a job spec.

    @register_step("my-step", "what the report calls it", order=50,
                   headline=lambda r: f"{100 * r['score']:.1f}%", record=("my_step",))
    def my_step(row: Row) -> Spec:
        return {"kind": "my-kind", "data": row.data, "seed": row.seed}   # a kind in runner.JOBS

Every registered attack is a step too (`attack:NAME`, see `attack_step`), with its recipe for
the level and its preset parameters from the attack registry. A step that cannot run on a row
raises `StepSkipped` with the reason; the audit records the reason and goes on. Each entry also
says where its result goes in results.json (`record`), whether the verdict weighs it (`weighs`)
and which pictures it leaves (`figures`), so the audit's record is assembled from the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analyses.finetune import LEVEL_PARAMS, PAPER as FINETUNE_PAPER, FinetuneParams, finetune_passes, scaled
from ..attacks import get_attack, level_cost, ordered
from ..core.registry import lookup
from ..data.facts import is_additive
from ..data.imageset import ImageSet
from ..kinds.detect import calibration_id
from ..ladder import Level, recipe_for
from ..poisons import POISONS
from ..runner.jobs import Spec
from ..train.run import adapt_recipe


class StepSkipped(Exception):
    """Raised by a step that cannot run on a row (no clean base, 1-channel data, ...): says why."""


@dataclass
class Row:
    """One training set as the steps see it: every field a spec or a plain value.

    data: the training set's data spec (kinds/data.py); clean: the aligned clean images' data
    spec, or None when unknown; base: the base dataset's name (clean test split, DFR pool), or
    None; sample: an ImageSet of the row's shape and classes (applicability checks); level: the
    ladder's rung, resolved once for the whole audit.
    """

    data: Spec
    clean: Spec | None
    base: str | None
    sample: ImageSet
    level: Level
    arch: str = "convnet"
    model: str = ""  # the architecture's signature for this shape and class count
    seed: int = 0
    epochs: int | None = None  # overrides the level's, for every training
    attacks: tuple[str, ...] = ()
    has_pool: bool = True  # the base's whole clean training split can be loaded
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # attack -> parameters
    why_no_base: str = "no clean test set (pass --clean DATA)"  # the reason, when `base` is None
    dfr_procedure: str = "paper"  # paper | released (analyses/dfr.py)
    dfr_indices: dict[str, str] | None = None  # {"sha256", "_path"}: the clean subset from a file
    # The base's clean test split and whole training split by content (`split_ref`), so a job's
    # key changes with either: a base whose test labels changed never reuses a cached reference.
    test_ref: Spec | None = None
    pool_ref: Spec | None = None

    @property
    def test(self) -> Spec | str | None:
        """The clean test split as specs name it: by content, else by the base's name."""
        return self.test_ref or self.base

    @property
    def pool(self) -> Spec | str | None:
        """The base's whole clean training split as specs name it (DFR's pool, fine-tuning's)."""
        return self.pool_ref or self.base

    def recipe(self, attack: str | None = None) -> dict[str, Any]:
        """The level's recipe for this row's data (its dataset's facts applied), as it will train."""
        return adapt_recipe(recipe_for(self.level, attack=attack, epochs=self.epochs), self.sample).to_dict()

    def train_spec(self, data: Spec) -> Spec:
        """The standard training of `data` (this row's set or its clean images) at the row's level."""
        if self.base is None:
            raise StepSkipped(self.why_no_base)
        return {"kind": "train", "data": data, "test": self.test, "arch": self.arch, "model": self.model,
                "recipe": self.recipe(), "seed": self.seed}

    def with_pool_split(self, spec: Spec) -> Spec:
        """`spec` with the clean pool's split an analysis of this row shares with DFR: DFR's subset
        size at the level, and the `--dfr-indices` file's subset when one is named."""
        spec = {**spec, "dfr_n": self.level.dfr_n}
        if self.dfr_indices:
            spec["dfr_indices"] = dict(self.dfr_indices)
        return spec


def _no_figures(result: dict[str, Any], job_dir: Path) -> dict[str, Path]:
    return {}


@dataclass(frozen=True)
class StepInfo:
    """spec(row) -> the job that computes the step. cost(row) -> its wall time in standard trainings
    of the row (the progress estimate). headline(result) -> one line for reports and tables.
    record: where the result goes in results.json (a path of keys; () for nowhere). weighs:
    whether the verdict weighs it, so it cannot judge while this step failed. figures(result,
    job directory) -> picture name -> PNG file, for the report."""

    name: str
    title: str
    spec: Callable[[Row], Spec]
    order: int = 100
    cost: Callable[[Row], float] = lambda row: 0.1
    headline: Callable[[dict[str, Any]], str] = lambda r: ""
    paper: str = ""
    record: tuple[str, ...] = ()
    weighs: bool = False
    figures: Callable[[dict[str, Any], Path], dict[str, Path]] = _no_figures


AUDITS: dict[str, StepInfo] = {}


def register_step(name: str, title: str, order: int = 100, cost: Callable[[Row], float] | None = None,
                  headline: Callable[[dict[str, Any]], str] | None = None, paper: str = "",
                  record: tuple[str, ...] = (), weighs: bool = False,
                  figures: Callable[[dict[str, Any], Path], dict[str, Path]] | None = None):
    """Register `fn(row) -> Spec` as audit step `name` with its facts (see `StepInfo`)."""
    def deco(fn: Callable[[Row], Spec]) -> Callable[[Row], Spec]:
        AUDITS[name] = StepInfo(name, title, fn, order, cost or (lambda row: 0.1), headline or (lambda r: ""),
                                paper, record, weighs, figures or _no_figures)
        return fn
    return deco


def attack_step(name: str) -> StepInfo:
    """The step of attack `name` (its facts from the attack registry)."""
    info = get_attack(name)

    def spec(row: Row) -> Spec:
        why = info.applies_to(row.sample)
        if why:
            raise StepSkipped(why)
        if row.base is None:
            raise StepSkipped(row.why_no_base)
        if info.oracle:  # it projects the known perturbations: it needs them, and needs them additive
            if row.clean is None:
                raise StepSkipped("the clean base images are unknown (pass --clean DATA)")
            if not row_is_additive(row):
                raise StepSkipped(NOT_ADDITIVE)
        params = {**info.preset(row.level.name), **row.params.get(name, {})}
        s: Spec = {"kind": "attack", "attack": name, "params": params, "data": row.data, "test": row.test,
                   "arch": row.arch, "model": row.model, "recipe": row.recipe(name), "seed": row.seed}
        if info.uses_clean_pool and row.dfr_indices:
            s["dfr_indices"] = dict(row.dfr_indices)
        return s

    def cost(row: Row) -> float:
        return level_cost(name, row.level.name, row.epochs)

    def figures(result: dict[str, Any], job_dir: Path) -> dict[str, Path]:
        return {fig: job_dir / rel for fig, rel in info.artifacts.items() if rel.endswith(".png")}

    return StepInfo(f"attack:{name}", f"attack: {name}", spec, 1000 + info.order, cost,
                    lambda r: f"{100 * r['test_accuracy']:.1f}%", info.paper, ("attacks", name), True, figures)


def steps_for(row: Row) -> list[StepInfo]:
    """The row's steps in order: the registered analyses, then its attacks."""
    steps = sorted(AUDITS.values(), key=lambda s: (s.order, s.name))
    return steps + [attack_step(a) for a in ordered(row.attacks) if a != "none"]


def get_step(name: str) -> StepInfo:
    """Step `name`, or `attack:NAME` for any attack; a one-line error naming the known ones."""
    if name.startswith("attack:"):
        return attack_step(name.split(":", 1)[1])
    return lookup(AUDITS, name, "audit step", "attack:NAME")


# --- the paper's analyses -------------------------------------------------------------------------

def _pct(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: "" if r.get(key) is None else f"{100 * r[key]:.1f}%"


@register_step("train-protected", "standard training on the protected set", order=0,
               cost=lambda row: 1.0, headline=_pct("test_accuracy"), record=("protected_training",), weighs=True)
def train_protected(row: Row) -> Spec:
    """Standard training on the protected set, a checkpoint per epoch."""
    return row.train_spec(row.data)


@register_step("train-clean", "the same recipe on the clean images (reference)", order=1,
               cost=lambda row: 1.0, headline=_pct("test_accuracy"), record=("clean_reference",), weighs=True)
def train_clean(row: Row) -> Spec:
    """The same recipe on the clean images behind the set: the reference accuracy."""
    if row.clean is None:
        raise StepSkipped("the clean base images are unknown (pass --clean DATA)")
    return row.train_spec(row.clean)


# Random initializations DFR's baseline is measured on: its seed-to-seed spread is what a gain
# must clear before the verdict calls it a leak.
DFR_RANDOM_INITS = 3


def dfr_random_spec(row: Row, seed: int | None = None) -> Spec:
    """DFR on an untrained network: it depends on the architecture, seed and clean subset only,
    so every audit of one base shares it."""
    s = row.sample
    spec: Spec = {"kind": "dfr-random", "arch": row.arch, "model": row.model, "shape": list(s.chw),
                  "num_classes": s.num_classes, "seed": row.seed if seed is None else seed, "pool": row.pool,
                  "test": row.test, "n": row.level.dfr_n, "subset_seed": row.seed}
    return _with_procedure(row, spec)


def _with_procedure(row: Row, spec: Spec) -> Spec:
    # Only a non-default procedure enters the identity: the paper's jobs keep the keys they had.
    if row.dfr_procedure != "paper":
        rec = row.recipe()
        spec.update({"procedure": row.dfr_procedure, "crop_padding": rec["crop_padding"], "flip": rec["flip"]})
    if row.dfr_indices:
        spec["indices"] = dict(row.dfr_indices)
    return spec


def dfr_spec(row: Row, run: Spec) -> Spec:
    """DFR over every checkpoint of the training `run`, with the random-network baselines."""
    if not row.has_pool or row.base is None:
        raise StepSkipped("no clean training images for the DFR head (pass --clean DATA)")
    spec = {"kind": "dfr", "run": run, "pool": row.pool, "n": row.level.dfr_n, "seed": row.seed,
            "random": dfr_random_spec(row),
            "spread": [dfr_random_spec(row, row.seed + i) for i in range(1, DFR_RANDOM_INITS)]}
    return _with_procedure(row, spec)


def _dfr_headline(r: dict[str, Any]) -> str:
    rnd = r.get("random_mean", r["random_init_dfr_accuracy"])
    return f"max {100 * r['max_dfr_accuracy']:.1f}% vs random {100 * rnd:.1f}%"


def _dfr_figure(result: dict[str, Any], job_dir: Path) -> dict[str, Path]:
    stem = "dfr" if result.get("procedure", "paper") == "paper" else f"dfr-{result['procedure']}"
    return {"dfr": Path(result["run_dir"]) / f"{stem}.png"} if result.get("run_dir") else {}


@register_step("dfr", "DFR over every checkpoint, and random networks", order=2, cost=lambda row: 0.3,
               headline=_dfr_headline, paper="Sandoval-Segura et al., NeurIPS 2023, §4.2, Fig. 2",
               record=("dfr",), weighs=True, figures=_dfr_figure)
def dfr(row: Row) -> Spec:
    """DFR over every checkpoint of the protected training, with the random-network baselines."""
    return dfr_spec(row, row.train_spec(row.data))


@register_step("dfr-clean", "DFR on the clean-trained reference (the top of the window)", order=2,
               cost=lambda row: 0.3, headline=_dfr_headline, record=("dfr_clean",), weighs=True)
def dfr_clean(row: Row) -> Spec:
    """DFR on the clean-trained reference: the top of DFR's window."""
    if row.clean is None:
        raise StepSkipped("the clean base images are unknown (pass --clean DATA)")
    return dfr_spec(row, row.train_spec(row.clean))


NOT_ADDITIVE = "not applicable: the perturbation is a convolution"


def row_is_additive(row: Row) -> bool:
    """Whether the row's set is x + delta (a poison spec's method, else the loaded manifest)."""
    if "method" in row.data:
        info = POISONS.get(row.data["method"])
        return info.additive if info is not None else True
    return is_additive(row.sample.meta.get("manifest"))


def separability_spec(row: Row, of: str, repeats: int | None = None, baseline: bool = True) -> Spec:
    """The separability job of the row's perturbations or images at the row's level; with
    `baseline`, it depends on the same fit of the clean images (same N, settings and repeats),
    which every audit of one base shares. A clean set audited as is is its own baseline."""
    lv = row.level
    spec: Spec = {"kind": "separability", "data": row.data, "of": of, "steps": lv.separability_steps,
                  "max_iter": lv.separability_max_iter, "early_stop": lv.separability_early_stop,
                  "repeats": repeats if repeats is not None else (lv.separability_repeats if of == "images" else 1),
                  "n": lv.separability_n, "seed": row.seed}
    if baseline and row.clean is not None:
        if row.clean == row.data and of == "images":
            spec["baseline"] = "self"
        else:
            spec["baseline"] = {**spec, "data": row.clean, "of": "images",
                                "repeats": repeats if repeats is not None else lv.separability_repeats}
    if of == "perturbations" and row.clean is not None and row.clean.get("_base_of"):
        # The audit's own clean images (what --clean named, checked by content), not the base
        # the set's manifest names, which may be one the user chose not to follow.
        spec["clean"] = row.clean
    return spec


def _sep_headline(r: dict[str, Any]) -> str:
    own = f"{100 * r['train_accuracy_mean']:.1f}%"
    b = r.get("baseline")
    if not b:
        return own
    note = "" if r.get("informative", True) else ": uninformative at this N"
    return f"{own} (clean images {100 * b['train_accuracy_mean']:.1f}%{note})"


CLEAN_SET = "the set is its own clean base: its perturbation is zero, there is nothing to separate"


@register_step("separability-perturbations", "linear separability of the perturbations", order=3,
               headline=_sep_headline, paper="Sandoval-Segura et al., NeurIPS 2023, Table 2",
               record=("separability", "perturbations"))
def separability_perturbations(row: Row) -> Spec:
    """Linear separability of the perturbations delta = x' - x (Table 2)."""
    if row.clean is None:
        raise StepSkipped("the clean base images are unknown (pass --clean DATA)")
    if row.clean == row.data:
        raise StepSkipped(CLEAN_SET)
    if not row_is_additive(row):
        raise StepSkipped(NOT_ADDITIVE)
    return separability_spec(row, "perturbations")


@register_step("separability-images", "linear separability of the images", order=4,
               headline=_sep_headline, paper="Sandoval-Segura et al., NeurIPS 2023, Table 6",
               record=("separability", "images"))
def separability_images(row: Row) -> Spec:
    """Linear separability of the protected images (Table 6)."""
    return separability_spec(row, "images")


# --- fine-tuning on k clean images ---------------------------------------------------------------

def level_params(row: Row) -> FinetuneParams:
    """The level's fine-tuning, scaled with the audit's `--epochs` as every training is."""
    p = LEVEL_PARAMS[row.level.name]
    if row.epochs is None:
        return p
    return scaled(p, row.epochs / recipe_for(row.level).epochs)


def finetune_spec(row: Row, params: FinetuneParams) -> Spec:
    """The fine-tuning job of a row: its three starts, sharing the clean pool's split with DFR."""
    if not row.has_pool or row.base is None:
        raise StepSkipped("no clean training images to fine-tune on (pass --clean DATA)")
    common = row.with_pool_split({"kind": "finetune-start", "pool": row.pool, "test": row.test,
                             "params": params.to_dict(), "recipe": row.recipe(), "seed": row.seed})
    s = row.sample
    starts = {"protected": {**common, "_name": "protected", "from": row.train_spec(row.data)},
              "scratch": {**common, "_name": "scratch", "from": None, "arch": row.arch, "model": row.model,
                          "shape": list(s.chw), "num_classes": s.num_classes},
              "clean": {**common, "_name": "clean", "from": row.train_spec(row.clean)} if row.clean else None}
    return row.with_pool_split({"kind": "finetune", "starts": starts, "params": params.to_dict(), "seed": row.seed})


def _finetune_cost(row: Row) -> float:
    n = len(row.sample)
    standard = n * recipe_for(row.level, epochs=row.epochs).epochs
    return max(finetune_passes(level_params(row).to_dict(), 3, min(n, 10000)) / max(standard, 1), 0.01)


def _finetune_headline(r: dict[str, Any]) -> str:
    rf = r.get("recovered_fraction")
    frac = f", recovers {100 * rf:.0f}% of clean (k={r['recovered_fraction_k']})" if rf is not None else ""
    return f"{r['gain_points']:+.1f} pts over scratch at k={r['gain_k']}{frac}"


def _finetune_figure(result: dict[str, Any], job_dir: Path) -> dict[str, Path]:
    return {"finetune": job_dir / result["figure"]} if result.get("figure") else {}


@register_step("finetune", "fine-tuning on k clean images vs scratch and the clean network", order=5,
               cost=_finetune_cost, headline=_finetune_headline, paper=FINETUNE_PAPER, record=("finetune",),
               weighs=True, figures=_finetune_figure)
def finetune_step(row: Row) -> Spec:
    """Fine-tuning on k clean images from the protected network, from scratch, and from the clean
    network."""
    return finetune_spec(row, level_params(row))


# --- detectable without the clean data ------------------------------------------------------------

def _detect_headline(r: dict[str, Any]) -> str:
    said = {True: "yes", False: "no"}.get(r["protected"], "cannot judge")  # None: no evidence either way
    return f"detectable: {said} ({r['score']:.2f})"


@register_step("detect", "detectable without the clean data (would a data collector notice?)", order=6,
               cost=lambda row: 0.05, headline=_detect_headline, record=("detect",),
               paper="Zhu et al., AAAI 2024 (UDP); Sandoval-Segura et al., NeurIPS 2023, Table 6, Alg. 1")
def detect_step(row: Row) -> Spec:
    """Would a data collector notice the protection without the clean data (`unlearnable.detect`)?"""
    return {"kind": "detect", "data": row.data, "level": row.level.name, "seed": row.seed,
            "calibration": calibration_id()}
