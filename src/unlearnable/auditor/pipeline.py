"""`unlearnable audit DATA --out DIR`: every analysis of a protected dataset, one verdict.

    unlearnable audit runs/regions --budget quick --out runs/regions-audit

Steps (each reused from DIR when a previous run finished it): standard training on the protected
set with a checkpoint per epoch; the same recipe on the clean images (the reference accuracy);
DFR over the checkpoints and on a random network; separability of the perturbations (when the
base is known) and of the images; every registered attack (orthogonal projection, class-mean
subtraction, adversarial training, the squeezing attacks); figures; `results.json`,
`report.html` (self-contained) and `report.md`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import UnlearnableError, atomic_file, read_json, versions, write_json
from ..attacks import ATTACKS, AttackContext, run_attack
from ..data.imageset import ImageSet
from ..data.resolve import load_base, load_data
from ..train.engine import Recipe, get_recipe
from ..train.run import spec_for, train_on
from .report import render_audit_html, render_audit_md
from .steps import Plan, Step, StepSkipped
from .verdict import Thresholds, verdict


@dataclass(frozen=True)
class Budget:
    """How much compute an audit spends; `paper` is the paper's protocol."""

    recipe: str
    epochs: int | None  # None: the recipe's own
    dfr_n: int
    separability_steps: int
    separability_repeats: int  # repeats for images (Table 6 uses 10)
    separability_n: int | None  # a seeded subset for separability; None: all
    attacks: tuple[str, ...]
    adv_recipe: str | None = None  # recipe for adv-train (the paper's: 100 epochs)


BUDGETS: dict[str, Budget] = {
    "paper": Budget("paper", None, 5000, 500, 10, None,
                    ("adv-train", "ortho-proj", "mean-sub", "jpeg", "bit-depth", "grayscale"), "adv"),
    # For 2 CPU cores: 3 epochs of the fast recipe.
    "quick": Budget("fast", 3, 2000, 100, 1, 10000,
                    ("ortho-proj", "mean-sub", "jpeg", "bit-depth", "grayscale", "adv-train")),
    # Seconds, for tests and trying the tool out.
    "tiny": Budget("tiny", None, 300, 20, 1, 2000, ("ortho-proj", "mean-sub", "jpeg")),
}


@dataclass
class AuditConfig:
    arch: str = "convnet"
    budget: str = "quick"
    seed: int = 0
    epochs: int | None = None  # overrides the budget's
    attacks: tuple[str, ...] | None = None  # overrides the budget's
    thresholds: Thresholds = field(default_factory=Thresholds)
    device: str = "auto"

    def budget_(self) -> Budget:
        if self.budget not in BUDGETS:
            raise UnlearnableError(f"unknown budget {self.budget!r} (known: {', '.join(BUDGETS)})")
        return BUDGETS[self.budget]

    def recipe(self) -> Recipe:
        b = self.budget_()
        r = get_recipe(b.recipe)
        epochs = self.epochs or b.epochs
        return r.replace(epochs=epochs) if epochs else r

    def attack_list(self) -> tuple[str, ...]:
        names = self.attacks if self.attacks is not None else self.budget_().attacks
        unknown = [a for a in names if a not in ATTACKS]
        if unknown:
            raise UnlearnableError(f"unknown attack(s) {unknown} (known: {', '.join(sorted(ATTACKS))})")
        return tuple(a for a in names if a != "none")  # "none" is the protected training itself

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["recipe"] = self.recipe().to_dict()
        d["attacks"] = list(self.attack_list())
        return d


@dataclass
class AuditInputs:
    protected: ImageSet
    test: ImageSet | None  # the clean test set; None when the base dataset cannot be found
    base: ImageSet | None  # clean images aligned with `protected`
    clean_full: ImageSet | None  # the whole clean training set (DFR draws its subset here)
    name: str
    notes: list[str]


def resolve_inputs(data: str | os.PathLike[str], clean: str | None = None,
                   data_root: str | os.PathLike[str] | None = None) -> AuditInputs:
    """The protected set, the clean test set and, where they can be found, the clean images."""
    protected = load_data(data, "train", data_root)
    notes: list[str] = []
    man = protected.meta.get("manifest", {})
    base_name = clean or man.get("base", {}).get("name")
    if base_name is None and "manifest" not in protected.meta:
        base_name = str(data)  # a clean dataset audited as is: its own base
    test = base = clean_full = None
    if base_name is None:
        notes.append("the manifest names no base dataset, so there is no clean test set (pass --clean DATA)")
        return AuditInputs(protected, None, None, None, man.get("name") or protected.name, notes)
    try:
        test = load_data(base_name, "test", data_root)
    except UnlearnableError as e:
        notes.append(f"no clean test set: {e}")
        return AuditInputs(protected, None, None, None, man.get("name") or protected.name, notes)
    try:
        clean_full = load_data(base_name, "train", data_root)
        if "manifest" in protected.meta:
            base = load_base(protected, full=clean_full)
            if base.images.shape != protected.images.shape:
                raise UnlearnableError(f"base images {base.images.shape} differ from protected {protected.images.shape}")
        else:
            base = protected
    except UnlearnableError as e:
        notes.append(f"clean training images unavailable ({e}); steps that need them are skipped")
    if test is not None and test.chw != protected.chw:
        raise UnlearnableError(f"test images {test.chw} differ in shape from the protected images {protected.chw}")
    name = man.get("name") or protected.name or Path(str(data)).name
    return AuditInputs(protected, test, base, clean_full, name, notes)


def run_audit(data: str | os.PathLike[str], out: str | os.PathLike[str], config: AuditConfig | None = None,
              clean: str | None = None, data_root: str | os.PathLike[str] | None = None,
              progress: bool | None = None, clean_reference: str | os.PathLike[str] | None = None,
              quiet: bool = False) -> dict[str, Any]:
    """Audit `data` into `out`; rerunning continues an interrupted audit.

    `clean_reference`: a finished run directory of the same recipe on the clean images, reused
    instead of training the reference again (the demo shares one across protected sets).
    """
    from ..analyses.dfr import dfr_curve
    from ..analyses.separability import separability_of

    from ..models import MODELS, arch_signature

    cfg = config or AuditConfig()
    if cfg.arch not in MODELS:
        raise UnlearnableError(f"unknown architecture {cfg.arch!r} (known: {', '.join(sorted(MODELS))})")
    out = Path(out)
    b = cfg.budget_()
    recipe = cfg.recipe()
    inp = resolve_inputs(data, clean, data_root)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    cfg_dict = cfg.to_dict()
    # The architecture's definition, not only its name: an audit made by another version of a
    # model must not be reused (the config holds it, so every step's key depends on it too).
    p = inp.protected
    cfg_dict["model_signature"] = arch_signature(cfg.arch, p.num_classes, p.channels, p.image_size)
    # What is audited, spelled one way: `runs/x`, `./runs/x` and its absolute path are the same
    # data (step keys and run specs hold this, so a rerun spelled differently reuses them).
    data_id = str(Path(data).resolve()) if Path(data).exists() else str(data)
    if results_path.exists():
        prev_record = read_json(results_path)
        if prev_record.get("data_id") not in (None, data_id):
            raise UnlearnableError(f"{out}: holds an audit of other data ({prev_record['data_id']}); "
                                   "use another --out")
        prev = prev_record.get("config")
        if prev is not None and prev != cfg_dict:
            if {**prev, "model_signature": None} != {**cfg_dict, "model_signature": None}:
                what = "other settings"
            elif prev.get("model_signature") is None:
                what = "an earlier version of unlearnable (no model signature recorded)"
            else:
                what = f"another definition of {cfg.arch!r} (another version of unlearnable)"
            raise UnlearnableError(f"{out}: holds an audit made with {what}; use another --out")
    spec = spec_for(inp.protected, cfg.arch, recipe, cfg.seed, data_id)

    def need_test() -> ImageSet:
        if inp.test is None:
            raise StepSkipped(inp.notes[0] if inp.notes else "no clean test set (pass --clean DATA)")
        return inp.test

    def need_base() -> ImageSet:
        need_test()
        if inp.base is None:
            raise StepSkipped("the clean base images are unknown (pass --clean DATA)")
        return inp.base

    def train_protected() -> dict[str, Any]:
        _, res = train_on(inp.protected, need_test(), spec, out / "train-protected", cfg.device, progress)
        return {"test_accuracy": res.test_accuracy, "train_accuracy": res.train_accuracy,
                "curve": [{"epoch": h["epoch"], "test_accuracy": h.get("test_accuracy")} for h in res.history]}

    def train_clean() -> dict[str, Any]:
        need_test()
        if clean_reference is not None:
            r = read_json(Path(clean_reference) / "result.json")
            return {"test_accuracy": r["test_accuracy"], "reused_from": str(clean_reference)}
        base = need_base()
        _, res = train_on(base, inp.test, spec_for(base, cfg.arch, recipe, cfg.seed, "clean"),
                          out / "train-clean", cfg.device, progress)
        return {"test_accuracy": res.test_accuracy}

    def dfr() -> dict[str, Any]:
        need_test()
        if plan.result("train-protected") is None:
            raise StepSkipped("the protected training did not finish")
        if inp.clean_full is None:
            raise StepSkipped("no clean training images for the DFR head (pass --clean DATA)")
        n = min(b.dfr_n, len(inp.clean_full))
        return dfr_curve(out / "train-protected", inp.clean_full, inp.test, n=n, seed=cfg.seed,
                         device=cfg.device, progress=progress)

    def separability(of: str) -> dict[str, Any]:
        base = need_base() if of == "perturbations" else None
        repeats = b.separability_repeats if of == "images" else 1
        n = b.separability_n if b.separability_n and b.separability_n < len(inp.protected) else None
        return separability_of(inp.protected, of, base=base, n=n, subset_seed=cfg.seed,
                               steps=b.separability_steps, repeats=repeats, seed=cfg.seed, progress=progress)

    def attack(name: str) -> dict[str, Any]:
        need_test()
        if name == "grayscale" and inp.protected.channels == 1:
            raise StepSkipped("grayscale is a no-op on 1-channel data")
        r = recipe
        if name == "adv-train" and b.adv_recipe:
            r = get_recipe(b.adv_recipe)
        ctx = AttackContext(inp.protected, inp.test, cfg.arch, r, cfg.seed, out / "attacks" / name,
                            cfg.device, progress, inp.base, data_id)
        return run_attack(name, ctx)

    n = len(inp.protected)
    epochs = recipe.epochs
    base_settings = {"config": cfg_dict, "data": data_id, "n": n}
    steps = [
        Step("train-protected", train_protected, n * epochs, base_settings, "standard training on the protected set"),
        Step("train-clean", train_clean, n * epochs, {**base_settings, "reference": str(clean_reference)},
             "the same recipe on the clean images (reference)"),
        Step("dfr", dfr, n * epochs * 0.3, base_settings, "DFR over every checkpoint, and a random network"),
        Step("separability-perturbations", lambda: separability("perturbations"), n * 0.2, base_settings,
             "linear separability of the perturbations"),
        Step("separability-images", lambda: separability("images"), n * 0.2, base_settings,
             "linear separability of the images"),
    ]
    for a in cfg.attack_list():
        cost = n * epochs * (4 if a == "adv-train" else 1.1)
        steps.append(Step(f"attack:{a}", (lambda a=a: attack(a)), cost, base_settings, f"attack: {a}"))
    plan = Plan(results_path, steps, quiet=quiet)
    plan.record["config"] = cfg_dict
    plan.record["data_id"] = data_id
    record = plan.run()
    return finish(out, record, inp, cfg, plan)


def finish(out: Path, record: dict[str, Any], inp: AuditInputs, cfg: AuditConfig, plan: Plan) -> dict[str, Any]:
    """Assemble results.json from the step results, draw the figures, render the reports."""
    from .figures import samples_figure, separability_figure

    man = inp.protected.meta.get("manifest", {})
    attacks: dict[str, dict[str, Any]] = {}
    prot = plan.result("train-protected")
    if prot:
        attacks["none"] = {"test_accuracy": prot["test_accuracy"]}
    for name in cfg.attack_list():
        r = plan.result(f"attack:{name}")
        if r:
            attacks[name] = r
    clean_ref = plan.result("train-clean")
    dfr = plan.result("dfr")
    gain = None
    if dfr and dfr.get("max_dfr_accuracy") is not None and dfr.get("random_init_dfr_accuracy") is not None:
        gain = 100 * (dfr["max_dfr_accuracy"] - dfr["random_init_dfr_accuracy"])
    sep = {k.split("-", 1)[1]: v for k in ("separability-perturbations", "separability-images")
           if (v := plan.result(k))}
    figures: dict[str, str | None] = {
        "dfr": "train-protected/dfr.png" if (out / "train-protected" / "dfr.png").exists() else None,
        "weights": "attacks/ortho-proj/weights.png" if (out / "attacks/ortho-proj/weights.png").exists() else None,
    }
    w_path = out / "attacks" / "ortho-proj" / "linear_weights.npy"
    figures["samples"] = samples_figure(inp.protected, inp.base, w_path if w_path.exists() else None,
                                        out / "samples.png")
    figures["separability"] = separability_figure(sep, inp.protected.num_classes, out / "separability.png") \
        if sep else None
    record.update({
        "dataset": {"name": inp.name, "method": man.get("method"), "kind": man.get("kind"),
                    "num_samples": len(inp.protected), "shape": list(inp.protected.chw),
                    "num_classes": inp.protected.num_classes, "base": man.get("base", {}).get("name"),
                    "notes": inp.notes},
        "clean_reference": clean_ref,
        "protected_training": prot,
        "dfr": dfr,
        "separability": sep,
        "attacks": attacks,
        "figures": {k: v for k, v in figures.items() if v},
        "verdict": verdict(clean_ref["test_accuracy"] if clean_ref else None, attacks, gain, cfg.thresholds,
                           inp.protected.num_classes),
        "versions": versions(),
    })
    write_json(out / "results.json", record)
    with atomic_file(out / "report.html", "w") as f:
        f.write(render_audit_html(record, out))
    with atomic_file(out / "report.md", "w") as f:
        f.write(render_audit_md(record))
    return record

