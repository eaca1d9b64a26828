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

Writes RUN_DIR/dfr.json, RUN_DIR/dfr.png (Fig. 2), RUN_DIR/dfr_indices.npy (the subset) and a
per-epoch cache RUN_DIR/dfr_cache/epoch_NNN.json, so an interrupted audit resumes and a run
that gained epochs only computes the new ones. Accuracies are fractions in [0, 1];
`gain_over_random_init` is a fraction too (0.10 = 10 percentage points), and
`gain_over_random_init_points` says the same in points.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import (
    DataError, UnlearnableError, atomic_file, now_iso, read_json, sha256_array, sha256_file, versions,
    write_json,
)
from ..data.imageset import ImageSet
from ..train.engine import _progress_enabled, checkpoint_paths, load_weights, pick_device, read_jsonl
from ..train.run import load_run

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
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    mu = f_train.mean(0)
    sd = f_train.std(0)
    sd[sd < 1e-12] = 1.0
    a, b = (f_train - mu) / sd, (f_test - mu) / sd
    clf = LogisticRegression(max_iter=max_iter, C=c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(a, y_train)
    proba = np.zeros((len(b), num_classes))
    proba[:, clf.classes_] = clf.predict_proba(b)
    acc = float((proba.argmax(1) == y_test).mean())
    loss = float(log_loss(y_test, np.clip(proba, 1e-15, 1.0), labels=np.arange(num_classes)))
    return {"dfr_accuracy": acc, "dfr_loss": loss, "converged": bool(clf.n_iter_.max() < max_iter)}


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
    from ..data.clean import clean_side
    from ..data.resolve import load_data

    train = load_data(run_data, "train", data_root)
    side = clean_side(train, None if "manifest" in train.meta else str(run_data), data_root)
    if side.test is None or side.pool is None:
        raise UnlearnableError(f"{run_data}: no clean data to fit DFR heads on ({'; '.join(side.notes)}); "
                               "pass --clean DATA")
    return side.pool, side.test


def weights_sha256(model: torch.nn.Module) -> str:
    return sha256_array(np.concatenate([v.detach().cpu().float().numpy().ravel()
                                        for v in model.state_dict().values()]))


def random_init_dfr(spec: Any, clean_train: ImageSet, clean_test: ImageSet, n: int = 5000, seed: int = 0,
                    device: str = "auto", max_iter: int = 1000, c: float = 1.0,
                    batch_size: int = 500) -> dict[str, Any]:
    """DFR on the untrained network `spec.build()` (a RunSpec: its seed draws the weights): the
    baseline every DFR curve of that architecture and seed is compared with. Returns the head's
    accuracy and loss, and the `settings` a curve must share to use it."""
    x_tr, y_tr, x_te, y_te, settings, _ = _clean_subset(clean_train, clean_test, n, seed, max_iter, c)
    model = spec.build().to(pick_device(device))
    t0 = time.perf_counter()
    res = dfr_head(dfr_features(model, x_tr, batch_size), y_tr, dfr_features(model, x_te, batch_size),
                   y_te, spec.num_classes, max_iter, c)
    return {**res, "seconds": round(time.perf_counter() - t0, 3), "settings": settings,
            "weights_sha256": weights_sha256(model), "seed": spec.seed, "arch": spec.arch}


def _clean_subset(clean_train: ImageSet, clean_test: ImageSet, n: int, seed: int, max_iter: int, c: float):
    """The seeded clean subset of DFR's head and what identifies it."""
    n_used = min(int(n), len(clean_train))
    if n_used < 1:
        raise UnlearnableError("DFR needs at least one clean training image (--n)")
    idx = np.sort(np.random.default_rng(seed).choice(len(clean_train), n_used, replace=False))
    sub = clean_train.subset(idx)
    settings = {"n": n_used, "n_requested": int(n), "seed": seed, "max_iter": max_iter, "c": c,
                "clean_train": clean_train.name, "clean_test": clean_test.name,
                "indices_sha256": sha256_array(idx), "num_test": len(clean_test),
                "classifier": "sklearn LogisticRegression (multinomial, lbfgs) on standardized features"}
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
) -> dict[str, Any]:
    """Run the DFR audit over every epoch checkpoint of `run_dir`; write dfr.json (+ dfr.png).

    clean_train / clean_test default to the run's data spec (for a protected directory, the
    whole training split of its base dataset, and the base's test split). n: size of the clean
    subset (min(n, available)), drawn with `default_rng(seed)`, sorted, saved as
    dfr_indices.npy. The random-init baseline is the run's own initialization (`spec.build()`,
    seeded with the run's seed: epoch 0 of the curve). `random_init`: that baseline already
    computed by `random_init_dfr` for the same architecture, seed and clean subset (it does not
    depend on the training data, so audits of one base share it). Returns the dfr.json dict.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    t_start = time.perf_counter()
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
    x_tr, y_tr, x_te, y_te, settings, idx = _clean_subset(clean_train, clean_test, n, seed, max_iter, c)
    with atomic_file(run_dir / "dfr_indices.npy", "wb") as f:
        np.save(f, idx, allow_pickle=False)
    dev = pick_device(device)
    cache = run_dir / "dfr_cache"

    def evaluate_model(model: torch.nn.Module, tag: str, weights_sha: str) -> dict[str, Any]:
        key = {**settings, "weights_sha256": weights_sha}
        cfile = cache / f"{tag}.json"
        if cfile.exists():
            try:
                prev = read_json(cfile)
                if prev.get("key") == key and isinstance(prev.get("result"), dict):
                    return prev["result"]
            except DataError:
                pass  # a broken cache file is recomputed
        t0 = time.perf_counter()
        model.to(dev)
        res = dfr_head(dfr_features(model, x_tr, batch_size), y_tr, dfr_features(model, x_te, batch_size),
                       y_te, spec.num_classes, max_iter, c)
        res["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(cfile, {"key": key, "result": res})
        return res

    standard = _standard_curve(run_dir)
    curve = []
    bar = tqdm(ckpts, desc="DFR", disable=not _progress_enabled(progress), leave=False)
    for epoch, path in bar:
        model = load_weights(spec.build(), path)
        r = evaluate_model(model, f"epoch_{epoch:03d}", sha256_file(path))
        curve.append({"epoch": epoch, "test_accuracy": standard.get(epoch), **r})
        bar.set_postfix(epoch=epoch, dfr=f"{r['dfr_accuracy']:.3f}")
    if random_init is not None:
        if random_init.get("settings") != settings:
            raise UnlearnableError("DFR: the random-network baseline given was computed on another clean subset")
        rnd = random_init
    else:
        init = spec.build()
        rnd = evaluate_model(init, "random_init", weights_sha256(init))

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
        "curve": curve, "settings": settings, "indices_file": "dfr_indices.npy",
        "random_init": {"seed": spec.seed, "note": "the run's own initialization (epoch 0)",
                        "shared": random_init is not None},
        "seconds": round(time.perf_counter() - t_start, 3), "device": str(dev),
        "paper": PAPER, "finished": now_iso(), "versions": versions(),
    }
    write_json(run_dir / "dfr.json", report)
    if plot:
        from ..viz.plots import plot_dfr_curve

        plot_dfr_curve(curve, rnd["dfr_accuracy"], run_dir / "dfr.png",
                       f"DFR: {spec.arch} on {Path(spec.data).name or spec.data}")
    return report
