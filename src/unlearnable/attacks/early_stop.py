"""Early stopping as an attack: keep the checkpoint a small clean validation set likes best.

A protected network often generalizes for an epoch or two before the shortcut takes over (the
DFR curves of the paper's Fig. 2 peak early too). An attacker who holds k clean images (default
500) trains as usual on the protected set, scores every epoch's checkpoint on those k images, and
keeps the best one (the earliest of equals). Its clean test accuracy is the attack's figure.

The k images come from the base's clean training pool: its validation part
(`data.clean.pool_split`), which leaves out DFR's subset and the images fine-tuning draws from,
so no analysis of one audit validates on another's training images.
They come from the base's whole clean training split when the manifest names one that loads
(so they need not be training images); otherwise from the aligned clean images `ctx.clean`:
in both cases the first k of that validation order the source holds.

Needs the clean base images. Costs one standard training plus k forward passes per epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.errors import UnlearnableError
from ..core.hashing import sha256_array
from ..data.clean import clean_side, pool_split
from ..data.imageset import ImageSet
from ..ladder import LADDER, LEVELS
from ..train.checkpoint import checkpoint_paths, load_weights, read_jsonl
from ..train.loop import evaluate
from ..train.run import as_tensors
from .base import AttackContext, register_attack, train_and_evaluate

log = logging.getLogger(__name__)


@dataclass
class EarlyStopParams:
    """Parameters of the `early-stop` attack: how many clean images validate, and which to leave out.

    k defaults to 500 images; dfr_n to DFR's subset size at the `paper` level (5000), and the ladder's
    presets set it to each level's (`ladder.LADDER[level].dfr_n`).
    """

    k: int = 500  # clean validation images
    dfr_n: int = 5000  # DFR's subset size at the audit's level, whose images are left out

    def __post_init__(self) -> None:
        if self.k < 1 or self.dfr_n < 0:
            raise ValueError(f"k must be >= 1 and dfr_n >= 0, got k={self.k}, dfr_n={self.dfr_n}")


def validation_set(ctx: AttackContext, p: EarlyStopParams) -> tuple[ImageSet, np.ndarray]:
    """The k clean validation images and their pool indices: from the base's whole training split
    when the manifest names one that loads, else from the aligned clean images `ctx.clean`."""
    pool = None
    if "manifest" in ctx.train.meta:
        try:
            pool = clean_side(ctx.train).pool
        except UnlearnableError:
            pool = None
    src = pool if pool is not None else ctx.clean
    base = ctx.train.meta.get("manifest", {}).get("base") or {}
    n_pool = len(pool) if pool is not None else \
        int(base.get("num_samples") or (int(src.indices.max()) + 1 if len(src) else 0))
    second = pool_split(n_pool, ctx.seed, p.dfr_n, ctx.dfr_indices).validation()
    where = {int(i): pos for pos, i in enumerate(src.indices)}
    chosen = [i for i in second if int(i) in where][:p.k]
    if not chosen:
        raise UnlearnableError("early-stop: no clean image is left for validation outside DFR's and "
                               f"fine-tuning's subsets (pool {n_pool}, dfr_n {p.dfr_n}); lower dfr_n")
    if len(chosen) < p.k:
        log.warning("early-stop: only %d of the %d validation images asked for are available", len(chosen), p.k)
    pool_idx = np.sort(np.asarray(chosen, dtype=np.int64))
    return src.subset(np.asarray([where[int(i)] for i in pool_idx], dtype=np.int64)), pool_idx


def pick_epoch(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch of the best validation accuracy; the earliest of equals (stopping there)."""
    return max(curve, key=lambda r: (r["val_accuracy"], -r["epoch"]))


@register_attack("early-stop", "standard training, keeping the checkpoint best on k clean validation images",
                 params_cls=EarlyStopParams, cost=1.05, prior=0.4, family="early-stopping", order=90, uses_clean_pool=True,
                 # dfr_n is DFR's subset size at each level, read off the ladder; `tiny` also
                 # validates on fewer images.
                 presets={lv: {"dfr_n": str(LADDER[lv].dfr_n), **({"k": "100"} if lv == "tiny" else {})}
                          for lv in LEVELS})
def early_stop(ctx: AttackContext, p: EarlyStopParams) -> dict[str, Any]:
    """Train on the protected set as usual and report the checkpoint best on k clean validation images.

    Paper: none of its own; after Sandoval-Segura et al., NeurIPS 2023, https://arxiv.org/abs/2305.19254, whose
        DFR curves (Fig. 2) peak early: a protected network often generalizes for an epoch or two before the
        shortcut takes over.
    Threat model: the protected training set plus k clean labelled images of the base's pool (needs
        ctx.clean); it chooses an epoch with them and never trains on them; test inputs untouched.
    Args:
        k (500): clean validation images
        dfr_n (5000): DFR's subset size at the audit's level, whose images are left out
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), used as given; ctx.clean the aligned
        clean images, same shapes; returns a dict with test_accuracy (fraction, clean test set, at the best
        epoch), best_epoch, val_accuracy, final_test_accuracy, val_n, val_indices, val_indices_sha256, curve
        (per epoch: epoch, val_accuracy, test_accuracy), train_accuracy and seconds_train.
    Example:
        unlearnable attack early-stop runs/lsp --recipe fast --out runs/lsp-early-stop
    """
    if ctx.clean is None:
        raise UnlearnableError("early-stop needs the clean base images (pass --clean DATA)")
    val, pool_idx = validation_set(ctx, p)
    model, trained = train_and_evaluate(ctx)
    run = ctx.out_dir / "train"
    metrics = {r["epoch"]: r for r in _metrics(run)}
    xv, yv = val.uint8_tensor(), torch.from_numpy(val.labels)
    curve = []
    for epoch, path in checkpoint_paths(run):
        load_weights(model, path)
        _, acc = evaluate(model, xv, yv, ctx.recipe.eval_batch_size)
        curve.append({"epoch": epoch, "val_accuracy": acc,
                      "test_accuracy": metrics.get(epoch, {}).get("test_accuracy")})
    best = pick_epoch(curve)
    if best["test_accuracy"] is None:  # a recipe that measures the test set after its last epoch only
        load_weights(model, dict(checkpoint_paths(run))[best["epoch"]])
        best["test_accuracy"] = evaluate(model, *as_tensors(ctx.test), ctx.recipe.eval_batch_size)[1]
    return {"test_accuracy": best["test_accuracy"], "best_epoch": best["epoch"],
            "val_accuracy": best["val_accuracy"], "final_test_accuracy": trained["test_accuracy"],
            "val_n": len(pool_idx), "val_indices_sha256": sha256_array(pool_idx),
            "val_indices": pool_idx.tolist(), "curve": curve, "train_accuracy": trained["train_accuracy"],
            "seconds_train": trained["seconds_train"]}


def _metrics(run) -> list[dict[str, Any]]:
    p = run / "metrics.jsonl"
    return read_jsonl(p) if p.exists() else []
