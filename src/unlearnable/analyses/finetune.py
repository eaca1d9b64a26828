"""Fine-tuning analysis: how much clean data unlocks what a network learned from protected data.

The paper's summary names fine-tuning as its first algorithm (the same question as DFR, asked of
the whole network): a network f trained on the protected set is fine-tuned, all layers, on k clean
images; high clean test accuracy means f kept generalizable features. It is a finding only beside
two references trained with the same recipe on the same k images:

    protected  fine-tuned from the protected run's final checkpoint            (a)
    scratch    trained from the protected run's own random initialization      (b)
    clean      fine-tuned from the clean-trained reference's final checkpoint  (c)

    gain               = protected - scratch            (what the protected network brings)
    recovered_fraction = gain / (clean - scratch)       (of what a clean network brings; null
                                                         without a clean run)

    from unlearnable.analyses.finetune import finetune_curve
    r = finetune_curve("runs/lsp", clean_run_dir="runs/clean", sizes=(100, 500, 1000, 5000))
    r["rows"], r["recovered_fraction"], r["gain_points"]

Writes OUT/finetune.json, OUT/finetune.png (accuracy vs k, three curves, log x),
OUT/finetune_indices.npy (the clean subsets: subset k is the first k entries, so they are nested)
and a per-fine-tune cache OUT/finetune_cache/, so a killed analysis resumes. Fine-tuning is the
training engine's `fit` started from a checkpoint a train run wrote; nothing here is a second
training loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import DataError, UnlearnableError
from ..core.files import atomic_file, read_json, write_json
from ..core.provenance import now_iso, versions
from ..core.hashing import sha256_array
from ..data.clean import pool_split
from ..data.imageset import ImageSet
from ..ladder import PerLevel
from ..ladder import level as get_level
from ..runner.jobs import JobContext, Spec, job_key, register_job
from ..train.recipe import Recipe
from ..core.progress import progress_enabled
from ..train.checkpoint import checkpoint_paths, load_weights
from ..train.loop import evaluate, fit
from ..core.device import resolve_device
from ..train.run import RunSpec, adapt_recipe, load_run
from .dfr import resolve_clean, weights_sha256
from .steps import Row, StepSkipped, register_step

log = logging.getLogger(__name__)

PAPER = "Sandoval-Segura et al., NeurIPS 2023, summary (fine-tuning), arXiv:2305.19254"

# A recovered fraction divides by (clean - scratch): below this window the two references are
# within run-to-run noise of each other and the ratio means nothing.
MIN_WINDOW = 0.05


@dataclass
class FinetuneParams:
    """How each of the three networks is trained on the k clean images (one recipe for all).

    SGD momentum 0.9, cosine from `lr`, weight decay 5e-4 (not on BatchNorm or biases, as every
    training here), the base recipe's crop and flip as the data allows. lr 0.001, a hundredth of
    the paper's training lr: of the rates that still train the scratch reference, the one that
    costs a clean-trained network least. Whole-network fine-tuning on k images of the network's
    own distribution can only lose accuracy; on the 60,000-image quick ConvNet it loses 2.5 points
    at k = 100 and 0.5 at k = 1000 (lr 0.01: 6.9 and 1.0; BatchNorm's re-estimated statistics
    account for 0.2; docs/analyses.md). `epochs` passes over the k images, but at least
    `min_steps` SGD steps, so k = 100 (one batch) is not judged after a handful of steps.
    """

    sizes: tuple[int, ...] = (100, 500, 1000, 5000)
    epochs: int = 20
    min_steps: int = 200
    lr: float = 0.001
    batch_size: int = 128
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        if not self.sizes or any(int(k) < 1 for k in self.sizes):
            raise ValueError(f"sizes must be integers >= 1, got {self.sizes}")
        self.sizes = tuple(sorted({int(k) for k in self.sizes}))
        for name in ("epochs", "min_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")

    def epochs_for(self, k: int) -> int:
        return max(self.epochs, math.ceil(self.min_steps / math.ceil(k / self.batch_size)))

    def recipe(self, k: int, base: Recipe) -> Recipe:
        """The recipe on k images: `base`'s augmentation (crop, flip, extras), these optimizer
        settings, no warm-up (the network is trained already, or is judged with the same steps)."""
        return base.replace(epochs=self.epochs_for(k), lr=self.lr, batch_size=self.batch_size,
                            weight_decay=self.weight_decay, momentum=0.9, nesterov=False, schedule="cosine",
                            milestones=(), warmup_epochs=0.0, label_smoothing=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": list(self.sizes), "epochs": self.epochs, "min_steps": self.min_steps, "lr": self.lr,
                "batch_size": self.batch_size, "weight_decay": self.weight_decay}


# Fine-tuning's row of the ladder's table: 2 sizes at tiny, 3 at quick, the paper's 4.
LEVEL_PARAMS: PerLevel[FinetuneParams] = PerLevel({
    "tiny": FinetuneParams(sizes=(20, 100), epochs=3, min_steps=10, batch_size=32),
    # quick: the three smallest of the paper's sizes (k = 5000 alone cost as much as the other two).
    "quick": FinetuneParams(sizes=(100, 500, 1000), epochs=5, min_steps=100),
    "paper": FinetuneParams(),
})


# --- which clean images the attacker holds --------------------------------------------------------

def finetune_subsets(n_pool: int, sizes: tuple[int, ...], seed: int, dfr_n: int, cap: bool = False,
                     indices: np.ndarray | None = None) -> np.ndarray:
    """Fine-tuning's order of the pool (`data.clean.pool_split`): subset k is its first k entries,
    never one of early stopping's validation images. `cap`: sizes beyond what there is are the
    audit's to shrink (`capped`), not an error."""
    return pool_split(n_pool, seed, dfr_n, indices).finetune_order(max(sizes), cap)


def capped(p: FinetuneParams, n_pool: int, seed: int, dfr_n: int) -> FinetuneParams:
    """`p` with its sizes cut to what the pool holds (as DFR takes min(n, pool)): for the audit."""
    most = len(finetune_subsets(n_pool, p.sizes, seed, dfr_n, cap=True))
    return dataclasses.replace(p, sizes=tuple(sorted({min(k, most) for k in p.sizes})))


def scaled(p: FinetuneParams, factor: float) -> FinetuneParams:
    """`p` for an audit whose trainings run `factor` of their level's epochs (`--epochs`): its
    epochs and minimum steps at the same fraction, at least 1."""
    return dataclasses.replace(p, epochs=max(1, round(p.epochs * factor)),
                               min_steps=max(1, round(p.min_steps * factor)))


# --- the analysis -------------------------------------------------------------------------------

def _final_checkpoint(run_dir: Path) -> tuple[RunSpec, Path]:
    spec, _ = load_run(run_dir)
    ckpts = checkpoint_paths(run_dir)
    if not ckpts or ckpts[-1][0] < spec.recipe.epochs:
        raise DataError(run_dir, f"the run has not finished its {spec.recipe.epochs} epochs "
                                 "(no final checkpoint); finish it with `unlearnable train` first")
    return spec, ckpts[-1][1]


def _key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def finetune_from(model: torch.nn.Module, name: str, clean_train: ImageSet, clean_test: ImageSet,
                  order: np.ndarray, params: FinetuneParams, base_recipe: Recipe, seed: int, cache: Path,
                  device: torch.device, bar: Any = None) -> dict[int, dict[str, Any]]:
    """Fine-tune copies of `model` (its weights as given: a checkpoint, or an initialization) on
    each subset k (the first k of `order`); return k -> clean test accuracy and what identifies
    the run. A result in `cache` with the same start weights, subset, recipe and seed is reused."""
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_sha = weights_sha256(model)
    x_te, y_te = clean_test.uint8_tensor(), torch.from_numpy(clean_test.labels)
    out: dict[int, dict[str, Any]] = {}
    for k in params.sizes:
        idx = np.sort(order[:k])
        recipe = params.recipe(k, base_recipe)
        key = {"start": start_sha, "recipe": recipe.to_dict(), "indices_sha256": sha256_array(idx),
               "seed": seed, "test": clean_test.name, "num_test": len(clean_test)}
        cfile = cache / f"k{k}-{_key_hash(key)}.json"  # by content: equal starts share it
        res = None
        if cfile.exists():
            try:
                prev = read_json(cfile)
                res = prev["result"] if prev.get("key") == key else None
            except (DataError, KeyError):
                res = None  # a broken cache file is recomputed
        if res is None:
            t0 = time.perf_counter()
            model.load_state_dict(start)
            sub = clean_train.subset(idx)
            fit(model.to(device), (sub.uint8_tensor(), torch.from_numpy(sub.labels)), None, recipe, seed,
                None, device, False, save_checkpoints=False, desc=f"{name} k={k}")
            loss, acc = evaluate(model, x_te, y_te, recipe.eval_batch_size)
            res = {"test_accuracy": acc, "test_loss": loss, "epochs": recipe.epochs,
                   "indices_sha256": key["indices_sha256"], "seconds": round(time.perf_counter() - t0, 3)}
            write_json(cfile, {"key": key, "result": res})
        out[k] = {**res, "start_sha256": start_sha}
        log.debug("fine-tune %s k=%d: %.4f", name, k, res["test_accuracy"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(start=name, k=k, acc=f"{res['test_accuracy']:.3f}")
    return out


def _check_sets(spec: RunSpec, clean_train: ImageSet, clean_test: ImageSet) -> None:
    want = (spec.in_channels, *spec.image_size)
    for name, ds in (("clean training", clean_train), ("clean test", clean_test)):
        if ds.chw != want or ds.num_classes != spec.num_classes:
            raise UnlearnableError(f"{name} set is {ds.chw} with {ds.num_classes} classes but the run "
                                   f"was trained on {want} with {spec.num_classes}")


def finetune_curve(
    run_dir: str | os.PathLike[str],
    clean_run_dir: str | os.PathLike[str] | None = None,
    clean_train: ImageSet | None = None,
    clean_test: ImageSet | None = None,
    params: FinetuneParams | None = None,
    seed: int = 0,
    dfr_n: int = 5000,
    out_dir: str | os.PathLike[str] | None = None,
    each_checkpoint: bool = False,
    device: str = "auto",
    progress: bool | None = None,
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Fine-tune from `run_dir`'s final checkpoint (and, with `each_checkpoint`, from every epoch's)
    on nested seeded clean subsets; compare with scratch and with `clean_run_dir`. Writes
    finetune.json (+ .png, indices) into `out_dir` (default: run_dir); returns its dict.

    clean_train / clean_test default to the run's clean side (the base's whole training split,
    the pool the subsets come from, and its test split). `seed` draws the subsets and every
    fine-tune's batches and augmentation; `dfr_n` is DFR's subset size, whose images are left out.
    `cache_dir` (default OUT/finetune_cache) keeps each fine-tune's result: give several analyses
    of one base the same one and the scratch and clean references are computed once.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    p = params or FinetuneParams()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    spec, final = _final_checkpoint(run_dir)
    starts: list[tuple[str, RunSpec, Path | None]] = [("protected", spec, final), ("scratch", spec, None)]
    if clean_run_dir is not None:
        cspec, cfinal = _final_checkpoint(Path(clean_run_dir))
        if (cspec.arch, cspec.num_classes, cspec.in_channels, tuple(cspec.image_size)) != \
                (spec.arch, spec.num_classes, spec.in_channels, tuple(spec.image_size)):
            raise UnlearnableError(f"{clean_run_dir}: the clean run is a {cspec.arch} on {cspec.image_size} "
                                   f"images, the protected run a {spec.arch} on {spec.image_size}")
        starts.append(("clean", cspec, cfinal))
    if each_checkpoint:
        starts += [(f"protected-epoch{e}", spec, path) for e, path in checkpoint_paths(run_dir)[:-1]]
    if clean_train is None or clean_test is None:
        tr, te = resolve_clean(spec.data, data_root)
        clean_train = clean_train if clean_train is not None else tr
        clean_test = clean_test if clean_test is not None else te
    _check_sets(spec, clean_train, clean_test)
    order = finetune_subsets(len(clean_train), p.sizes, seed, dfr_n)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "finetune_indices.npy", "wb") as f:
        np.save(f, order, allow_pickle=False)
    base_recipe = adapt_recipe(spec.recipe, clean_train)
    dev = resolve_device(device)
    cache = Path(cache_dir) if cache_dir is not None else out / "finetune_cache"
    bar = tqdm(total=len(starts) * len(p.sizes), desc="fine-tune", disable=not progress_enabled(progress),
               leave=False)
    acc = {}
    for name, rs, path in starts:
        model = rs.build() if path is None else load_weights(rs.build(), path)
        acc[name] = finetune_from(model, name, clean_train, clean_test, order, p, base_recipe, seed, cache, dev, bar)
    bar.close()
    report = {"audit": "finetune", "run_dir": str(run_dir),
              "clean_run_dir": str(clean_run_dir) if clean_run_dir is not None else None,
              "arch": spec.arch, "data": spec.data,
              **assemble(acc, p, {"seed": seed, "dfr_n": dfr_n, "clean_train": clean_train.name,
                                  "clean_test": clean_test.name, "num_test": len(clean_test),
                                  "pool": len(clean_train), "base_recipe": base_recipe.to_dict(),
                                  "each_checkpoint": each_checkpoint}),
              "seconds": round(time.perf_counter() - t_start, 3), "device": str(dev),
              "finished": now_iso(), "versions": versions()}
    write_json(out / "finetune.json", report)
    if plot:
        plot_finetune(report["rows"], out / "finetune.png",
                      f"fine-tuning: {spec.arch} on {Path(spec.data).name or spec.data}")
    return report


def assemble(acc: dict[str, dict[int, dict[str, Any]]], p: FinetuneParams, settings: dict[str, Any]) -> dict[str, Any]:
    """rows (one per k), the summary figures and the settings, from start -> k -> result."""
    rows = []
    for k in p.sizes:
        prot, scratch = acc["protected"][k]["test_accuracy"], acc["scratch"][k]["test_accuracy"]
        clean = acc["clean"][k]["test_accuracy"] if "clean" in acc else None
        window = None if clean is None else clean - scratch
        row = {"k": k, "protected": prot, "scratch": scratch, "clean": clean, "gain": prot - scratch,
               "recovered_fraction": (prot - scratch) / window if window else None,
               "epochs": acc["protected"][k]["epochs"]}
        by_epoch = {n.rsplit("epoch", 1)[1]: r[k]["test_accuracy"] for n, r in acc.items()
                    if n.startswith("protected-epoch")}
        if by_epoch:
            row["protected_by_epoch"] = by_epoch
        rows.append(row)
    first = p.sizes[0]
    return {"rows": rows, **summarize(rows),
            "start_sha256": {n: r[first]["start_sha256"] for n, r in acc.items()},
            "settings": {**p.to_dict(), **settings, "min_window": MIN_WINDOW,
                         "subsets": "finetune_indices.npy: pool indices; subset k is its first k entries"},
            "indices_file": "finetune_indices.npy", "figure": "finetune.png", "paper": PAPER}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures a verdict weighs, from the rows.

    recovered_fraction: the largest row value among the sizes whose clean-vs-scratch window is
    at least MIN_WINDOW (5 points), with the k it came from; null without a clean run or when no
    window is that wide. gain_points: the largest gain over scratch, in points, and its k.
    """
    ok = [r for r in rows if r["clean"] is not None and r["clean"] - r["scratch"] >= MIN_WINDOW]
    best = max(ok, key=lambda r: r["recovered_fraction"]) if ok else None
    top = max(rows, key=lambda r: r["gain"])
    return {"recovered_fraction": best["recovered_fraction"] if best else None,
            "recovered_fraction_k": best["k"] if best else None,
            "gain_points": round(100 * top["gain"], 2), "gain_k": top["k"]}


def plot_finetune(rows: list[dict[str, Any]], path: str | os.PathLike[str], title: str) -> Path:
    from ..viz.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ks = [r["k"] for r in rows]
    for key, label, style in (("clean", "from the clean network (c)", "s-"),
                              ("protected", "from the protected network (a)", "o-"),
                              ("scratch", "from scratch, same init (b)", "^--")):
        vals = [r[key] for r in rows]
        if all(v is not None for v in vals):
            ax.plot(ks, [100 * v for v in vals], style, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("clean training images k (log)")
    ax.set_ylabel("clean test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# --- the job kinds and the audit step --------------------------------------------------------------
#
# One `finetune-start` job per starting point, so the references are shared: the scratch start
# depends on the architecture, shapes and seed only, the clean one on the clean run, so every
# audit of one base computes them once (the shared cache); only the protected start is the
# audit's own. The `finetune` job assembles the rows and draws the figure.

def _run_dir_of(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> Path:
    from ..runner.kinds import _train

    d = Path(deps[job_key(spec)]["run_dir"]) if job_key(spec) in deps else ctx.dir_of(spec)
    if not (d / "result.json").exists():  # a worker without the driver's disk
        d = Path(_train(spec, ctx, {})["run_dir"])
    return d


def _start_job(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    from ..runner.kinds import named_split

    if spec.get("from") is not None:
        rs, path = _final_checkpoint(_run_dir_of(spec["from"], ctx, deps))
        model = load_weights(rs.build(), path)
    else:  # the seeded initialization every run of this architecture, shape and seed starts from
        c, h, w = spec["shape"]
        model = RunSpec(spec["arch"], int(spec["num_classes"]), c, (h, w), Recipe(), int(spec["seed"])).build()
    pool, test = named_split(spec["pool"], "train", ctx), named_split(spec["test"], "test", ctx)
    p = capped(FinetuneParams(**spec["params"]), len(pool), int(spec["seed"]), int(spec["dfr_n"]))
    if model.head.out_features != pool.num_classes:
        raise UnlearnableError(f"the network has {model.head.out_features} classes, {spec['pool']} {pool.num_classes}")
    order = finetune_subsets(len(pool), p.sizes, int(spec["seed"]), int(spec["dfr_n"]))
    res = finetune_from(model, spec.get("_name", "start"), pool, test, order, p, Recipe.from_dict(spec["recipe"]),
                        int(spec["seed"]), ctx.dir_of(spec) / "cache", resolve_device(ctx.device))
    for r in res.values():
        r.pop("seconds", None)  # results are content: timings live in the store
    return {"by_k": {str(k): r for k, r in res.items()}, "order_sha256": sha256_array(order)}


def _start_deps(spec: Spec) -> list[Spec]:
    return [spec["from"]] if spec.get("from") is not None else []


def _finetune_job(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    from ..runner.kinds import named_split

    pool = named_split(spec["starts"]["scratch"]["pool"], "train", ctx)
    p = capped(FinetuneParams(**spec["params"]), len(pool), int(spec["seed"]), int(spec["dfr_n"]))
    acc = {}
    for name in ("protected", "scratch", "clean"):
        s = spec["starts"].get(name)
        if s is not None:
            r = deps[job_key(s)] if job_key(s) in deps else _start_job(s, ctx, deps)
            acc[name] = {int(k): v for k, v in r["by_k"].items()}
    out = ctx.dir_of(spec)
    out.mkdir(parents=True, exist_ok=True)
    order = finetune_subsets(len(pool), p.sizes, int(spec["seed"]), int(spec["dfr_n"]))
    with atomic_file(out / "finetune_indices.npy", "wb") as f:
        np.save(f, order, allow_pickle=False)
    r = assemble(acc, p, {"seed": spec["seed"], "dfr_n": spec["dfr_n"], "pool": len(pool),
                          "base_recipe": spec["starts"]["scratch"]["recipe"]})
    write_json(out / "finetune.json", r)
    plot_finetune(r["rows"], out / "finetune.png", "fine-tuning on k clean images")
    return {**r, "dir": str(out)}


def finetune_passes(params: dict[str, Any], starts: int, n_test: int) -> float:
    """Training sample-passes of `starts` starting points (a test pass is a third of one)."""
    p = FinetuneParams(**params)
    return sum(starts * (p.epochs_for(k) * k + n_test / 3) for k in p.sizes)


register_job("finetune-start", _start_job, deps=_start_deps,
             passes=lambda spec, n, t: finetune_passes(spec["params"], 1, t),
             title="fine-tuning one starting network on k clean images")
register_job("finetune", _finetune_job, deps=lambda spec: [s for s in spec["starts"].values() if s is not None],
             title="fine-tuning: protected vs scratch vs clean")


def finetune_spec(row: Row, params: FinetuneParams) -> Spec:
    """The fine-tuning job of a row: its three starts, with the level's DFR size left out."""
    if not row.has_pool or row.base is None:
        raise StepSkipped("no clean training images to fine-tune on (pass --clean DATA)")
    common = {"kind": "finetune-start", "pool": row.base, "test": row.base, "params": params.to_dict(),
              "recipe": row.recipe(), "seed": row.seed, "dfr_n": get_level(row.level.name).dfr_n}
    s = row.sample
    starts = {"protected": {**common, "_name": "protected", "from": row.train_spec(row.data)},
              "scratch": {**common, "_name": "scratch", "from": None, "arch": row.arch, "model": row.model,
                          "shape": list(s.chw), "num_classes": s.num_classes},
              "clean": {**common, "_name": "clean", "from": row.train_spec(row.clean)} if row.clean else None}
    return {"kind": "finetune", "starts": starts, "params": params.to_dict(), "seed": row.seed,
            "dfr_n": common["dfr_n"]}


def _cost(row: Row) -> float:
    from ..ladder import recipe_for

    n = len(row.sample)
    standard = n * recipe_for(row.level.name, epochs=row.epochs).epochs
    return max(finetune_passes(level_params(row).to_dict(), 3, min(n, 10000)) / max(standard, 1), 0.01)


def _headline(r: dict[str, Any]) -> str:
    rf = r.get("recovered_fraction")
    frac = f", recovers {100 * rf:.0f}% of clean (k={r['recovered_fraction_k']})" if rf is not None else ""
    return f"{r['gain_points']:+.1f} pts over scratch at k={r['gain_k']}{frac}"


@register_step("finetune", "fine-tuning on k clean images vs scratch and the clean network", order=5, cost=_cost,
               headline=_headline, paper=PAPER)
def finetune_step(row: Row) -> Spec:
    return finetune_spec(row, level_params(row))


def level_params(row: Row) -> FinetuneParams:
    """The level's fine-tuning, scaled with the audit's `--epochs` as every training is."""
    from ..ladder import recipe_for

    p = LEVEL_PARAMS[row.level.name]
    if row.epochs is None:
        return p
    return scaled(p, row.epochs / recipe_for(row.level.name).epochs)
