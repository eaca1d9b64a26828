"""Deep Feature Reweighting (DFR) audit: how much a network trained on protected data learned.

Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?", NeurIPS 2023, §4.2,
App. A.1, Table 1, Fig. 2 (arXiv:2305.19254, https://arxiv.org/abs/2305.19254); DFR is from
Kirichenko, Izmailov, Wilson, "Last Layer Re-Training is Sufficient for Robustness to Spurious
Correlations", ICLR 2023 (arXiv:2204.02937).

Threat model (of the protection): the data owner publishes a protected training set; the
question is whether a network trained on it still learns *features* that are useful on clean
data. For every epoch checkpoint of such a run, the feature extractor is frozen and only a new
linear head is fitted, on a small clean subset (N images of the clean training set, seeded and
recorded). If that head reaches clean test accuracy far above what the same head on a *random*
network reaches, the protection did not prevent feature learning.

    from unlearnable.analyses import dfr_curve
    report = dfr_curve("runs/lsp", clean_train, clean_test, n=5000, seed=0)
    report["max_dfr_accuracy"], report["gain_over_random_init"]

Two procedures fit the head (`procedure=`):
- "paper" (default): what the paper's text describes. Features in eval mode (BatchNorm uses the
  running statistics of the training it audits), standardized, and a fresh scikit-learn
  multinomial `LogisticRegression` (lbfgs, L2 with C=1).
- "released": what the released `dfr_step_2.py` does. The *trained* head is refitted with
  `torch.optim.LBFGS(lr=0.5)` (torch's max_iter 20, history 100, no line search) on the raw
  features, without L2, for 15 epochs of shuffled batches of 1,024 augmented clean images (the
  run's crop and flip), the L-BFGS state carried across batches, with the network in train mode,
  so every forward pass re-estimates the BatchNorm running statistics on the clean images.
  Then it evaluates in eval mode. Its random-init baseline is a fresh network refitted the same way.
`indices=` takes the clean subset from an index array (the released `train_5000samples.npy`,
`load_indices`) instead of drawing it.

Writes RUN_DIR/dfr.json (dfr-released.json for the released procedure), RUN_DIR/dfr.png (Fig. 2)
and RUN_DIR/dfr_indices.npy (the subset). In an audit the curve is one job of the runner, whose
store keeps the finished result (`unlearnable.kinds.dfr`). Accuracies are fractions in [0, 1];
`gain_over_random_init` is a fraction too (0.10 = 10 percentage points), and
`gain_over_random_init_points` says the same in points.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.device import resolve_device
from ..core.errors import DataError, UnlearnableError
from ..core.files import atomic_file, write_json
from ..core.hashing import sha256_array
from ..core.progress import bar as progress_bar
from ..core.provenance import now_iso, versions
from ..core.safe import DEFAULT_MAX_BYTES, NpyHeader, read_npy
from ..data.clean import clean_side, pool_split
from ..data.imageset import ImageSet
from ..data.resolve import load_data
from ..train.augment import batch_crop, batch_flip_lr
from ..train.checkpoint import checkpoint_paths, load_weights, read_jsonl
from ..train.run import load_run
from ..viz.plots import plot_dfr_curve

PAPER = "Sandoval-Segura et al., NeurIPS 2023, §4.2 and Fig. 2, arXiv:2305.19254"


@torch.no_grad()
def dfr_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Penultimate embeddings (N, feature_dim) float64 of uint8/[0, 1] images x (N, C, H, W),
    in eval mode (BatchNorm uses its running statistics), batched, without gradients."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(dev)
        xb = xb.float().div_(255) if xb.dtype == torch.uint8 else xb.float()
        out.append(model.features(xb).float().cpu())
    model.train(was)
    return torch.cat(out).double().numpy() if out else np.zeros((0, 0))


def dfr_head(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
             num_classes: int, max_iter: int = 1000, c: float = 1.0) -> dict[str, float]:
    """Fit a multinomial logistic-regression head (scikit-learn, lbfgs, L2 strength 1/c) on
    standardized features; return clean test accuracy and log-loss.

    Standardization uses the training subset's mean and std (a constant feature, e.g. a dead
    ReLU, keeps std 1 so it stays 0 rather than dividing by zero).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from threadpoolctl import threadpool_limits

    mu = f_train.mean(0)
    sd = f_train.std(0)
    sd[sd < 1e-12] = 1.0
    a, b = (f_train - mu) / sd, (f_test - mu) / sd
    clf = LogisticRegression(max_iter=max_iter, C=c)
    # One BLAS thread: after torch's forward passes its OpenMP threads still spin on the cores, and
    # OpenBLAS's own threads then wait on them; on 2 cores that made this fit 30x slower (6.0 s
    # against 0.21 s for 2,000 x 64 features; benchmarks/RESULTS.md, audit cost). Same result.
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(a, y_train)
    proba = np.zeros((len(b), num_classes))
    proba[:, clf.classes_] = clf.predict_proba(b)
    acc = float((proba.argmax(1) == y_test).mean())
    loss = float(log_loss(y_test, np.clip(proba, 1e-15, 1.0), labels=np.arange(num_classes)))
    return {"dfr_accuracy": acc, "dfr_loss": loss, "converged": bool(clf.n_iter_.max() < max_iter)}


PROCEDURES = ("paper", "released")


def released_head(model: torch.nn.Module, x_tr: torch.Tensor, y_tr: np.ndarray, x_te: torch.Tensor,
                  y_te: np.ndarray, num_classes: int, crop_padding: int = 4, flip: bool = True, seed: int = 0,
                  epochs: int = 15, batch_size: int = 1024, lr: float = 0.5,
                  eval_batch_size: int = 500) -> dict[str, Any]:
    """The released step 2 (see the module docstring) on `model` in place; returns the clean
    test accuracy and loss afterwards, and how far the BatchNorm running means moved."""
    dev = next(model.parameters()).device
    bn_before = _bn_means(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.LBFGS(model.head.parameters(), lr=lr)  # torch's defaults: max_iter 20, history 100
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.as_tensor(y_tr, dtype=torch.long)
    model.train()  # BatchNorm: batch statistics, and running statistics re-estimated on these images
    for _ in range(epochs):
        perm = torch.randperm(len(x_tr), generator=gen)
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            xb = x_tr[idx].float().div_(255) if x_tr.dtype == torch.uint8 else x_tr[idx].float()
            if crop_padding:
                xb = batch_crop(xb, gen, crop_padding)
            if flip:
                xb = batch_flip_lr(xb, gen)
            xb, yb = xb.to(dev), y_all[idx].to(dev)

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                return loss

            opt.step(closure)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    correct, total_loss = 0, 0.0
    y_test = torch.as_tensor(y_te, dtype=torch.long)
    with torch.no_grad():
        for s in range(0, len(x_te), eval_batch_size):
            xb = x_te[s:s + eval_batch_size].to(dev)
            xb = xb.float().div_(255) if xb.dtype == torch.uint8 else xb.float()
            logits = model(xb).float()
            yb = y_test[s:s + eval_batch_size].to(dev)
            total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += int((logits.argmax(1) == yb).sum())
    bn_after = _bn_means(model)
    moved = float(max((a - b).abs().max().item() for a, b in zip(bn_after, bn_before))) if bn_before else 0.0
    return {"dfr_accuracy": correct / max(len(x_te), 1), "dfr_loss": total_loss / max(len(x_te), 1),
            "bn_running_mean_change": moved}


def _bn_means(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.detach().clone() for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


def fit_head(procedure: str, model: torch.nn.Module, x_tr: torch.Tensor, y_tr: np.ndarray, x_te: torch.Tensor,
             y_te: np.ndarray, num_classes: int, max_iter: int = 1000, c: float = 1.0, batch_size: int = 500,
             crop_padding: int = 4, flip: bool = True, seed: int = 0) -> dict[str, Any]:
    """DFR's head on `model` by `procedure` ("paper" or "released"): accuracy and loss."""
    if procedure == "paper":
        return dfr_head(dfr_features(model, x_tr, batch_size), y_tr, dfr_features(model, x_te, batch_size),
                        y_te, num_classes, max_iter, c)
    if procedure == "released":
        return released_head(model, x_tr, y_tr, x_te, y_te, num_classes, crop_padding, flip, seed,
                             eval_batch_size=batch_size)
    raise UnlearnableError(f"DFR --procedure must be one of {', '.join(PROCEDURES)}, got {procedure!r}")


def load_indices(path: str | os.PathLike[str], pool_size: int | None) -> np.ndarray:
    """A clean-subset index file (.npy of distinct integers in [0, pool_size)), checked before use
    (`pool_size` None: the range is checked where the pool is known)."""
    def check(h: NpyHeader) -> None:
        if h.dtype.kind not in "iu" or len(h.shape) != 1:
            raise DataError(path, f"DFR indices must be a 1-D integer array, got {h.dtype} of shape {h.shape}")

    limit = 8 * max(pool_size, 1) + 1024 if pool_size is not None else DEFAULT_MAX_BYTES
    idx = np.asarray(read_npy(path, max_bytes=limit, check=check)).astype(np.int64)
    if len(idx) == 0:
        raise DataError(path, "no indices")
    if pool_size is not None and (idx.min() < 0 or idx.max() >= pool_size):
        raise DataError(path, f"indices must lie in [0, {pool_size}) (the clean training set's size), "
                              f"got {idx.min()}..{idx.max()}")
    if len(np.unique(idx)) != len(idx):
        raise DataError(path, "indices repeat")
    return idx


def _standard_curve(run_dir: Path) -> dict[int, float]:
    """Standard (whole-network) clean test accuracy per epoch, from metrics.jsonl."""
    out: dict[int, float] = {}
    p = run_dir / "metrics.jsonl"
    if p.exists():
        for r in read_jsonl(p):
            if isinstance(r.get("test_accuracy"), (int, float)):
                out[int(r["epoch"])] = float(r["test_accuracy"])
    return out


def resolve_clean(run_data: str, data_root: str | os.PathLike[str] | None = None) -> tuple[ImageSet, ImageSet]:
    """The clean train and test sets behind a run's data: for a protected directory, the whole
    training split of its base dataset (the pool DFR draws its clean subset from)."""

    train = load_data(run_data, "train", data_root)
    side = clean_side(train, None if "manifest" in train.meta else str(run_data), data_root)
    if side.test is None or side.pool is None:
        raise UnlearnableError(f"{run_data}: no clean data to fit DFR heads on ({'; '.join(side.notes)}); "
                               "pass --clean DATA")
    return side.pool, side.test


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights in float32 (the identity of a fine-tuning or DFR start)."""
    return sha256_array(np.concatenate([v.detach().cpu().float().numpy().ravel()
                                        for v in model.state_dict().values()]))


def random_init_dfr(spec: Any, clean_train: ImageSet, clean_test: ImageSet, n: int = 5000, seed: int = 0,
                    device: str = "auto", max_iter: int = 1000, c: float = 1.0,
                    batch_size: int = 500, procedure: str = "paper",
                    indices: np.ndarray | None = None) -> dict[str, Any]:
    """DFR on the untrained network `spec.build()` (a RunSpec: its seed draws the weights): the
    baseline every DFR curve of that architecture and seed is compared with. Returns the head's
    accuracy and loss, and the `settings` a curve must share to use it."""
    x_tr, y_tr, x_te, y_te, settings, _ = _clean_subset(clean_train, clean_test, n, seed, max_iter, c,
                                                        indices, procedure)
    model = spec.build().to(resolve_device(device))
    sha = weights_sha256(model)
    t0 = time.perf_counter()
    res = fit_head(procedure, model, x_tr, y_tr, x_te, y_te, spec.num_classes, max_iter, c, batch_size,
                   spec.recipe.crop_padding, spec.recipe.flip, seed)
    return {**res, "seconds": round(time.perf_counter() - t0, 3), "settings": settings,
            "weights_sha256": sha, "seed": spec.seed, "arch": spec.arch}


def _clean_subset(clean_train: ImageSet, clean_test: ImageSet, n: int, seed: int, max_iter: int, c: float,
                  indices: np.ndarray | None = None, procedure: str = "paper"):
    """The clean subset of DFR's head (seeded, or the given indices) and what identifies it."""
    if indices is None and min(int(n), len(clean_train)) < 1:
        raise UnlearnableError("DFR needs at least one clean training image (--n)")
    idx = pool_split(len(clean_train), seed, n, indices).dfr
    n_used = len(idx)
    sub = clean_train.subset(idx)
    classifier = ("sklearn LogisticRegression (multinomial, lbfgs) on standardized features" if procedure == "paper"
                  else "the trained head refitted: LBFGS lr 0.5, 15 epochs of batches of 1024, crop+flip, "
                       "BatchNorm in train mode")
    settings = {"n": n_used, "n_requested": int(n), "seed": seed, "max_iter": max_iter, "c": c,
                "clean_train": clean_train.name, "clean_test": clean_test.name,
                "indices_sha256": sha256_array(idx), "num_test": len(clean_test),
                "indices_from": "file" if indices is not None else "seed",
                "procedure": procedure, "classifier": classifier}
    return sub.uint8_tensor(), sub.labels, clean_test.uint8_tensor(), clean_test.labels, settings, idx


def dfr_curve(
    run_dir: str | os.PathLike[str],
    clean_train: ImageSet | None = None,
    clean_test: ImageSet | None = None,
    n: int = 5000,
    seed: int = 0,
    device: str = "auto",
    progress: bool | None = None,
    data_root: str | os.PathLike[str] | None = None,
    max_iter: int = 1000,
    c: float = 1.0,
    batch_size: int = 500,
    plot: bool = True,
    random_init: dict[str, Any] | None = None,
    procedure: str = "paper",
    indices: np.ndarray | None = None,
) -> dict[str, Any]:
    """Run the DFR audit over every epoch checkpoint of `run_dir`; write dfr.json (+ dfr.png).

    clean_train / clean_test default to the run's data spec (for a protected directory, the
    whole training split of its base dataset, and the base's test split). n: size of the clean
    subset (min(n, available)), drawn with `default_rng(seed)`, sorted, saved as
    dfr_indices.npy. The random-init baseline is the run's own initialization (`spec.build()`,
    seeded with the run's seed: epoch 0 of the curve). `random_init`: that baseline already
    computed by `random_init_dfr` for the same architecture, seed and clean subset (it does not
    depend on the training data, so audits of one base share it). `procedure`: "paper" or
    "released" (module docstring); `indices`: the clean subset as indices into clean_train.
    Returns the dfr.json dict (dfr-released.json for the released procedure).
    """
    if procedure not in PROCEDURES:
        raise UnlearnableError(f"DFR --procedure must be one of {', '.join(PROCEDURES)}, got {procedure!r}")
    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    stem = "dfr" if procedure == "paper" else f"dfr-{procedure}"
    spec, _ = load_run(run_dir)
    ckpts = checkpoint_paths(run_dir)
    if not ckpts:
        raise DataError(run_dir / "checkpoints", "no per-epoch checkpoints (epoch_NNN.pt); "
                        "DFR needs a run trained with checkpoints saved")
    if clean_train is None or clean_test is None:
        tr, te = resolve_clean(spec.data, data_root)
        clean_train = clean_train if clean_train is not None else tr
        clean_test = clean_test if clean_test is not None else te
    want = (spec.in_channels, *spec.image_size)
    for name, ds in (("clean training", clean_train), ("clean test", clean_test)):
        if ds.chw != want or ds.num_classes != spec.num_classes:
            raise UnlearnableError(f"{name} set is {ds.chw} with {ds.num_classes} classes but the run "
                                   f"was trained on {want} with {spec.num_classes}")
    x_tr, y_tr, x_te, y_te, settings, idx = _clean_subset(clean_train, clean_test, n, seed, max_iter, c,
                                                          indices, procedure)
    with atomic_file(run_dir / "dfr_indices.npy", "wb") as f:
        np.save(f, idx, allow_pickle=False)
    dev = resolve_device(device)

    def evaluate_model(model: torch.nn.Module) -> dict[str, Any]:
        # Each head's figures only (its time is not a result: a rerun gives the same curve); the
        # report's `seconds` says what the whole curve took.
        model.to(dev)
        return fit_head(procedure, model, x_tr, y_tr, x_te, y_te, spec.num_classes, max_iter, c, batch_size,
                        spec.recipe.crop_padding, spec.recipe.flip, seed)

    standard = _standard_curve(run_dir)
    curve = []
    bar = progress_bar(ckpts, desc="DFR", progress=progress)
    for epoch, path in bar:
        model = load_weights(spec.build(), path)
        r = evaluate_model(model)
        curve.append({"epoch": epoch, "test_accuracy": standard.get(epoch), **r})
        bar.set_postfix(epoch=epoch, dfr=f"{r['dfr_accuracy']:.3f}")
    if random_init is not None:
        if random_init.get("settings") != settings:
            raise UnlearnableError("DFR: the random-network baseline given was computed on another clean subset")
        rnd = random_init
    else:
        rnd = evaluate_model(spec.build())

    best = max(curve, key=lambda r: r["dfr_accuracy"])
    low = min(curve, key=lambda r: r["dfr_loss"])
    gain = best["dfr_accuracy"] - rnd["dfr_accuracy"]
    report = {
        "audit": "dfr", "run_dir": str(run_dir), "arch": spec.arch, "data": spec.data,
        "max_dfr_accuracy": best["dfr_accuracy"], "max_dfr_epoch": best["epoch"],
        "min_dfr_loss": low["dfr_loss"], "min_dfr_epoch": low["epoch"],
        "random_init_dfr_accuracy": rnd["dfr_accuracy"], "random_init_dfr_loss": rnd["dfr_loss"],
        "gain_over_random_init": gain, "gain_over_random_init_points": round(100 * gain, 2),
        "final_standard_test_accuracy": curve[-1]["test_accuracy"],
        "curve": curve, "settings": settings, "indices_file": "dfr_indices.npy", "procedure": procedure,
        "random_init": {"seed": spec.seed, "note": "the run's own initialization (epoch 0)",
                        "shared": random_init is not None},
        "seconds": round(time.perf_counter() - t_start, 3), "device": str(dev),
        "paper": PAPER, "finished": now_iso(), "versions": versions(),
    }
    write_json(run_dir / f"{stem}.json", report)
    if plot:
        plot_dfr_curve(curve, rnd["dfr_accuracy"], run_dir / f"{stem}.png",
                       f"DFR: {spec.arch} on {Path(spec.data).name or spec.data}")
    return report
