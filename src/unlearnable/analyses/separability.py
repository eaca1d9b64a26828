"""Linear separability audit: can a linear model (or a tiny MLP) fit the perturbations?

Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?", NeurIPS 2023, §4.3,
Table 2 and App. A.3.2 Table 6 (arXiv:2305.19254, https://arxiv.org/abs/2305.19254); the
procedure follows Yu et al., "Availability Attacks Create Shortcuts", KDD 2022
(arXiv:2111.00898).

Threat model: none; it is a diagnostic of a protected dataset. Many poisons work because their
perturbations δ = x' - x are linearly separable by class (a shortcut). The paper shows this is
not necessary: AR perturbations are not linearly separable (39.58 % train accuracy) yet protect.

Procedure: flatten, min-max scale *globally* to [0, 1], then a linear layer with bias (hidden=0)
or Linear -> tanh -> Linear with `hidden` units, trained full batch with `torch.optim.LBFGS`
(lr 0.5, history 100) on cross-entropy; report the *training* accuracy, mean and std over
`repeats` seeded initializations.

The defaults are the released script's (`test_linear_separability.py`): 500 calls of
`LBFGS.step` with torch's default `max_iter=20` (up to 20 loss-and-gradient evaluations each, so
up to 10,000 full-batch passes), and no early stop. `max_iter=1` makes one step one evaluation
(500 steps = 500 passes); `early_stop=True` ends a run as soon as it classifies every training
sample correctly (100 % is then the answer; later steps could only lower it by oscillating).
Those two are what the cheaper ladder levels use; every result records its `optimizer`.

A high number alone says little: at N = 10,000 Fashion-MNIST images (d = 784) the *clean*
images are 100 % linearly separable under the released optimiser. So `baseline` (the clean
images at the same N and settings) goes with every audit result, and a result whose baseline
reaches `UNINFORMATIVE_AT` is reported as uninformative at that N.

    from unlearnable.analyses.separability import separability
    r = separability(delta.flatten(1), y, num_classes=10, hidden=0, steps=500, repeats=3, seed=0)
    r["train_accuracy_mean"], r["train_accuracy_std"]
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import resolve_device
from ..core.errors import UnlearnableError
from ..core.progress import bar as progress_bar
from ..data.clean import clean_side
from ..data.imageset import ImageSet
from ..data.subsets import random_subset

PAPER = "Sandoval-Segura et al., NeurIPS 2023, §4.3 Table 2 and App. A.3.2 Table 6, arXiv:2305.19254"
# A clean-image baseline at or above this makes the test uninformative at that sample size.
UNINFORMATIVE_AT = 0.95


def optimizer_settings(steps: int = 500, lr: float = 0.5, max_iter: int = 20, early_stop: bool = False) -> dict[str, Any]:
    """What a result records about its optimiser (the released script's at the defaults)."""
    return {"optimizer": "lbfgs", "lr": lr, "max_iter": max_iter, "steps": steps, "early_stop": early_stop,
            "history_size": 100, "line_search": None}


def minmax01(x: torch.Tensor) -> torch.Tensor:
    """(x - min) / (max - min) over the whole tensor, in place for float32 input; a constant
    tensor maps to zeros."""
    x = x if x.dtype == torch.float32 else x.float()
    lo, hi = x.min(), x.max()
    x.sub_(lo)
    if hi > lo:
        x.div_(hi - lo)
    return x


def _model(d: int, k: int, hidden: int, seed: int) -> nn.Module:
    # nn.Linear's default init drawn from the seed without touching the global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hidden:
            return nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, k))
        return nn.Linear(d, k)


def separability(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    hidden: int = 0,
    steps: int = 500,
    lr: float = 0.5,
    repeats: int = 1,
    seed: int = 0,
    max_iter: int = 20,
    early_stop: bool = False,
    device: str = "cpu",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Training accuracy of a linear model (hidden=0) or a 1-hidden-layer tanh MLP on x.

    x: (N, ...) float (perturbations or images; flattened here); y: (N,) int64. Repeat r is
    seeded with seed + r. Returns train_accuracy_mean / _std (fractions), `runs` (per repeat:
    seed, final accuracy, best accuracy seen, steps taken, final loss), `optimizer`
    (`optimizer_settings`), settings and seconds.
    """
    if len(x) != len(y) or len(x) == 0:
        raise UnlearnableError(f"separability: {len(x)} samples but {len(y)} labels")
    if hidden < 0 or steps < 1 or repeats < 1:
        raise UnlearnableError("separability: need hidden >= 0, steps >= 1, repeats >= 1")
    t_start = time.perf_counter()
    dev = resolve_device(device)
    xs = minmax01(x.reshape(len(x), -1).to(dev, torch.float32, copy=True))
    ys = y.to(dev)
    runs = []
    for r in range(repeats):
        t0 = time.perf_counter()
        net = _model(xs.shape[1], num_classes, hidden, seed + r).to(dev)
        opt = torch.optim.LBFGS(net.parameters(), lr=lr, max_iter=max_iter, history_size=100)
        state = {"acc": 0.0}

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            logits = net(xs)
            loss = F.cross_entropy(logits, ys)
            loss.backward()
            # The accuracy at the point just evaluated: free, no extra pass over the data.
            state["acc"] = (logits.detach().argmax(1) == ys).float().mean().item()
            return loss

        best, taken = 0.0, 0
        bar = progress_bar(range(steps), desc=f"L-BFGS {r + 1}/{repeats}", progress=progress)
        for _ in bar:
            opt.step(closure)
            taken += 1
            best = max(best, state["acc"])
            if early_stop and state["acc"] >= 1.0:
                break
        bar.close()
        with torch.no_grad():
            logits = net(xs)
            final_loss = F.cross_entropy(logits, ys).item()
            final = (logits.argmax(1) == ys).float().mean().item()
        runs.append({"seed": seed + r, "train_accuracy": final, "best_train_accuracy": max(best, final),
                     "steps": taken, "train_loss": final_loss, "seconds": round(time.perf_counter() - t0, 3)})
    accs = np.array([r["train_accuracy"] for r in runs])
    return {
        "train_accuracy_mean": float(accs.mean()), "train_accuracy_std": float(accs.std()),
        "runs": runs, "n": len(xs),
        "optimizer": optimizer_settings(steps, lr, max_iter, early_stop),
        "settings": {"model": f"mlp(tanh, {hidden})" if hidden else "linear", "hidden": hidden,
                     "steps": steps, "lr": lr, "max_iter": max_iter, "history_size": 100,
                     "early_stop": early_stop, "repeats": repeats, "seed": seed,
                     "num_samples": len(xs), "dim": xs.shape[1], "num_classes": num_classes,
                     "scaling": "global min-max to [0, 1]", "device": str(dev)},
        "seconds": round(time.perf_counter() - t_start, 3),
    }


def with_baseline(result: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """`result` with the clean-image `baseline` (a `separability` result at the same N and
    settings, or None when the clean images are unknown) and whether the test says anything."""
    out = dict(result)
    if baseline is None:
        out["baseline"] = None
        out["informative"] = None
        return out
    b = baseline["train_accuracy_mean"]
    out["baseline"] = {"of": "clean images", "train_accuracy_mean": b,
                       "train_accuracy_std": baseline["train_accuracy_std"], "n": baseline.get("n"),
                       "optimizer": baseline.get("optimizer"), "repeats": len(baseline.get("runs", []))}
    out["informative"] = bool(b < UNINFORMATIVE_AT)
    out["uninformative_at"] = UNINFORMATIVE_AT
    return out


def perturbations(protected: ImageSet, base: ImageSet, chunk: int = 8192) -> torch.Tensor:
    """δ = x' - x in [0, 1] units, (N, C*H*W) float32 channel-major, chunked from uint8."""
    if protected.images.shape != base.images.shape:
        raise UnlearnableError(f"protected images {protected.images.shape} and base {base.images.shape} differ")
    n = len(protected)
    out = torch.empty(n, int(np.prod(protected.chw)), dtype=torch.float32)
    for s in range(0, n, chunk):
        a = torch.from_numpy(protected.images[s:s + chunk]).permute(0, 3, 1, 2).to(torch.int16)
        b = torch.from_numpy(base.images[s:s + chunk]).permute(0, 3, 1, 2).to(torch.int16)
        out[s:s + chunk] = (a - b).reshape(len(a), -1).float().div_(255)
    return out


def _clean_base(data: ImageSet, data_root: str | os.PathLike[str] | None) -> ImageSet | None:
    """The clean images aligned with a protected set (from its manifest), or None."""
    if not data.meta.get("manifest", {}).get("base", {}).get("name"):
        return None

    return clean_side(data, data_root=data_root).base


def separability_of(
    data: ImageSet,
    of: str = "perturbations",
    base: ImageSet | None = None,
    data_root: str | os.PathLike[str] | None = None,
    n: int | None = None,
    subset_seed: int = 0,
    baseline: bool = False,
    **kw: Any,
) -> dict[str, Any]:
    """`separability` of a dataset's perturbations (δ = x' - x, base from the manifest unless
    given) or of its images; `n` draws a seeded subset first. With `baseline`, also the clean
    images at the same N and settings (`with_baseline`; a set without a known base is clean, so
    its own images are its baseline). Keyword args go to `separability`."""
    if of not in ("perturbations", "images"):
        raise UnlearnableError(f"--of must be perturbations or images, got {of!r}")
    if base is None and (of == "perturbations" or baseline):
        base = _clean_base(data, data_root)
        if of == "perturbations" and base is None:
            if not data.meta.get("manifest", {}).get("base", {}).get("name"):
                raise UnlearnableError(f"{data.name}: no base dataset is known, so there are no "
                                       "perturbations to measure; use --of images")

            raise UnlearnableError(f"{data.name}: {'; '.join(clean_side(data, data_root=data_root).notes)}")
    if n is not None and n < len(data):
        idx = random_subset(data, n, subset_seed)
        data, base = data.subset(idx), (base.subset(idx) if base is not None else None)
    x = perturbations(data, base) if of == "perturbations" else data.to_tensor()[0]
    res = separability(x, torch.from_numpy(data.labels), data.num_classes, **kw)
    res.update({"audit": "separability", "of": of, "data": data.name, "paper": PAPER})
    if n is not None:
        res["settings"]["subset"] = {"n": len(data), "seed": subset_seed}
    if baseline:
        if base is None and "manifest" in data.meta:
            res = with_baseline(res, None)  # protected, but its clean images cannot be found
        elif base is None or (of == "images" and base is data):
            res = with_baseline(res, res)  # a clean set: its own baseline
        else:
            b = separability(base.to_tensor()[0], torch.from_numpy(base.labels), base.num_classes, **kw)
            res = with_baseline(res, b)
    return res
