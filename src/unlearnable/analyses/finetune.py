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

    from unlearnable.kinds import finetune_curve
    r = finetune_curve("runs/lsp", clean_run_dir="runs/clean", params=FinetuneParams(sizes=(100, 500)))
    r["rows"], r["recovered_fraction"], r["gain_points"]

This module is the analysis: which clean images (`finetune_subsets`, from the pool's one split
`data.clean.pool_split`), fine-tuning one starting network on them (`finetune_from`), the rows,
the summary a verdict weighs and the figure. Each starting network is a job of the runner
(`unlearnable.kinds.finetune`), so every audit of a base shares the scratch and clean references
and a rerun reuses what finished; `finetune_curve` there writes OUT/finetune.json,
OUT/finetune.png (accuracy vs k, three curves, log x) and OUT/finetune_indices.npy (the clean
subsets: subset k is the first k entries, so they are nested). Fine-tuning is the training
engine's `fit` started from a checkpoint a train run wrote; nothing here is a second training loop.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.device import resolve_device
from ..core.errors import DataError, UnlearnableError
from ..core.hashing import sha256_array
from ..core.progress import bar
from ..data.clean import pool_split
from ..data.imageset import ImageSet
from ..ladder import PerLevel
from ..train.checkpoint import checkpoint_paths
from ..train.loop import evaluate, fit
from ..train.recipe import Recipe
from ..train.run import RunSpec, load_run
from ..viz.plots import pyplot, save_figure
from .dfr import weights_sha256

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


def capped(p: FinetuneParams, n_pool: int, seed: int, dfr_n: int, indices: np.ndarray | None = None) -> FinetuneParams:
    """`p` with its sizes cut to what the pool holds (as DFR takes min(n, pool)): for the audit."""
    most = len(finetune_subsets(n_pool, p.sizes, seed, dfr_n, cap=True, indices=indices))
    return dataclasses.replace(p, sizes=tuple(sorted({min(k, most) for k in p.sizes})))


def scaled(p: FinetuneParams, factor: float) -> FinetuneParams:
    """`p` for an audit whose trainings run `factor` of their level's epochs (`--epochs`): its
    epochs and minimum steps at the same fraction, at least 1."""
    return dataclasses.replace(p, epochs=max(1, round(p.epochs * factor)),
                               min_steps=max(1, round(p.min_steps * factor)))


# --- the analysis -------------------------------------------------------------------------------

def final_checkpoint(run_dir: str | os.PathLike[str]) -> tuple[RunSpec, Path]:
    """The spec and the last epoch's checkpoint of a finished training run (a one-line error for
    one that has not finished its epochs)."""
    run_dir = Path(run_dir)
    spec, _ = load_run(run_dir)
    ckpts = checkpoint_paths(run_dir)
    if not ckpts or ckpts[-1][0] < spec.recipe.epochs:
        raise DataError(run_dir, f"the run has not finished its {spec.recipe.epochs} epochs "
                                 "(no final checkpoint); finish it with `unlearnable train` first")
    return spec, ckpts[-1][1]


def finetune_from(model: torch.nn.Module, name: str, clean_train: ImageSet, clean_test: ImageSet,
                  order: np.ndarray, params: FinetuneParams, base_recipe: Recipe, seed: int,
                  device: torch.device | str = "auto", progress: bool | None = False) -> dict[int, dict[str, Any]]:
    """Fine-tune copies of `model` (its weights as given: a checkpoint, or an initialization) on
    each subset k (the first k of `order`); return k -> clean test accuracy and what identifies
    the run (the start's weights, the subset's checksum)."""
    dev = resolve_device(device)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_sha = weights_sha256(model)
    x_te, y_te = clean_test.uint8_tensor(), torch.from_numpy(clean_test.labels)
    out: dict[int, dict[str, Any]] = {}
    with bar(total=len(params.sizes), desc=f"fine-tune {name}", progress=progress) as b:
        for k in params.sizes:
            idx = np.sort(order[:k])
            recipe = params.recipe(k, base_recipe)
            t0 = time.perf_counter()
            model.load_state_dict(start)
            sub = clean_train.subset(idx)
            fit(model.to(dev), (sub.uint8_tensor(), torch.from_numpy(sub.labels)), None, recipe, seed,
                None, dev, False, save_checkpoints=False, desc=f"{name} k={k}")
            loss, acc = evaluate(model, x_te, y_te, recipe.eval_batch_size)
            out[k] = {"test_accuracy": acc, "test_loss": loss, "epochs": recipe.epochs,
                      "indices_sha256": sha256_array(idx), "seconds": round(time.perf_counter() - t0, 3),
                      "start_sha256": start_sha}
            log.debug("fine-tune %s k=%d: %.4f", name, k, acc)
            b.update(1)
            b.set_postfix(k=k, acc=f"{acc:.3f}")
    return out


def check_sets(spec: RunSpec, clean_train: ImageSet, clean_test: ImageSet) -> None:
    """Refuse clean sets of another shape or class count than the run was trained on (one line)."""
    want = (spec.in_channels, *spec.image_size)
    for name, ds in (("clean training", clean_train), ("clean test", clean_test)):
        if ds.chw != want or ds.num_classes != spec.num_classes:
            raise UnlearnableError(f"{name} set is {ds.chw} with {ds.num_classes} classes but the run "
                                   f"was trained on {want} with {spec.num_classes}")


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
    """The fine-tuning figure: clean test accuracy against k (log scale) for the three starts."""
    plt = pyplot()
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


def finetune_passes(params: dict[str, Any], starts: int, n_test: int) -> float:
    """Training sample-passes of `starts` starting points (a test pass is a third of one)."""
    p = FinetuneParams(**params)
    return sum(starts * (p.epochs_for(k) * k + n_test / 3) for k in p.sizes)
