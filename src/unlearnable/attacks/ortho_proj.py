"""Orthogonal Projection: learn from a dataset protected by class-wise perturbations.

Sandoval-Segura, Singla, Geiping, Goldblum, Goldstein, "What Can We Learn from Unlearnable
Datasets?", NeurIPS 2023, Algorithm 1 (arXiv:2305.19254, https://arxiv.org/abs/2305.19254).

Threat model: the attacker holds the protected training set (images and labels) and nothing
else: no clean data, no knowledge of the poison. A class-wise perturbation is (nearly) linearly
separable, so a bias-free linear model trained on the raw pixels learns it first: its K rows
point along the planted patterns (Fig. 3). Removing those K directions from every image,

    X_r = X - (X Q) Q^T,   Q = orthonormal basis of the normalized rows of W   (d x rank),

removes the shortcut and leaves most of the image; a network trained on X_r generalizes.

    from unlearnable.attacks.ortho_proj import LinearParams, fit_linear, projection_basis, project
    x, y = protected.to_tensor()                                  # (N, C, H, W) in [0, 1]
    W = fit_linear(x.flatten(1), y, protected.num_classes, LinearParams(), seed=0)  # (K, d)
    Q, rank = projection_basis(W)                                 # (d, rank) float64
    x_r = project(x, Q)                                           # same shape, clipped to [0, 1]

Attack `ortho-proj` (`unlearnable attack ortho-proj DATA --out RUN_DIR`; its parameters are in
`_ortho_proj`'s docstring) reports `test_accuracy` (clean test set, unprojected: the paper's
figure) and `test_accuracy_transformed_test` (test inputs projected too: the attacker controls its
own inference; `test_accuracy_projected_test` is the same number under a second name).

The oracle (`--param directions=perturbations`, or the attack `ortho-proj-oracle`): the paper's
summary writes the projection for a *known* perturbation v as P = I - v v^T / ||v||^2. With the
clean base, the basis is the span of delta = x' - x: its K class means for a class-wise poison
(exactly the K patterns), else its top-K principal directions (`basis`, `k`); the rest of the
attack is unchanged. Whenever the base is known, `alignment` records the cosines of the
principal angles between span(W) and span(delta): how much of the shortcut the linear model found.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UnlearnableError
from ..core.files import atomic_file
from ..core.linalg import projection_basis
from ..core.params import to_dict
from ..core.progress import bar as progress_bar, progress_enabled
from ..data.facts import is_additive
from ..data.imageset import ImageSet, to_uint8
from ..viz.plots import plot_weight_rows
from .base import AttackContext, register_attack, train_and_evaluate
from .purify import save_training_set

PAPER = "Sandoval-Segura et al., NeurIPS 2023, Alg. 1, arXiv:2305.19254"

log = logging.getLogger(__name__)


@dataclass
class LinearParams:
    """The linear model of step 1 (the paper's App. A.1 and the released code).

    epochs None means 20, or 60 when there are >= 100 classes. The lr is multiplied by `gamma`
    at each fraction of the epochs in `milestones`. The released script uses plain SGD
    (momentum 0, no weight decay) and does not shuffle; we shuffle with the seed.
    """

    epochs: int | None = None
    lr: float = 0.1
    momentum: float = 0.0
    batch_size: int = 1024
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    def epochs_for(self, num_classes: int) -> int:
        """The epochs to train for `num_classes` classes: `epochs`, or its default when None."""
        return self.epochs if self.epochs is not None else (60 if num_classes >= 100 else 20)


def _as_float(xb: torch.Tensor) -> torch.Tensor:
    return xb.float().div_(255) if xb.dtype == torch.uint8 else xb.float()


def fit_linear(x_flat: torch.Tensor, y: torch.Tensor, num_classes: int,
               params: LinearParams | None = None, seed: int = 0,
               device: torch.device | str = "cpu", progress: bool = False) -> torch.Tensor:
    """Train a bias-free linear classifier on flattened pixels; return W (K, d) float32 on CPU.

    x_flat: (N, d) uint8 or float in [0, 1] (channel-major flattening of NCHW); y: (N,) int64.
    No normalization, no augmentation: cross-entropy, SGD, batches of a seeded permutation.
    The init is nn.Linear's (uniform in +-1/sqrt(d)) drawn from the seed. Same seed and device
    => identical W.
    """
    p = params or LinearParams()
    if x_flat.ndim != 2 or len(x_flat) != len(y):
        raise UnlearnableError(f"fit_linear: need x (N, d) and y (N,), got {tuple(x_flat.shape)} and {tuple(y.shape)}")
    dev = torch.device(device)
    n, d = x_flat.shape
    gen = torch.Generator().manual_seed(seed)
    w = ((torch.rand(num_classes, d, generator=gen) * 2 - 1) / d ** 0.5).to(dev).requires_grad_()
    opt = torch.optim.SGD([w], lr=p.lr, momentum=p.momentum)
    epochs = p.epochs_for(num_classes)
    steps = -(-n // p.batch_size)
    x_dev, y_dev = x_flat.to(dev), y.to(dev)
    bar = progress_bar(total=epochs * steps, desc="linear model", progress=progress)
    for epoch in range(epochs):
        lr = p.lr * p.gamma ** sum(epoch >= round(m * epochs) for m in p.milestones)
        for g in opt.param_groups:
            g["lr"] = lr
        perm = torch.randperm(n, generator=gen).to(dev)
        for s in range(steps):
            idx = perm[s * p.batch_size:(s + 1) * p.batch_size]
            loss = F.cross_entropy(_as_float(x_dev[idx]) @ w.T, y_dev[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    return w.detach().float().cpu()


@torch.no_grad()
def linear_accuracy(x_flat: torch.Tensor, y: torch.Tensor, w: torch.Tensor, chunk: int = 8192) -> float:
    """Accuracy of the bias-free linear model `w` (K, d) on (x_flat (N, d), y)."""
    w = w.to(x_flat.device).float()
    correct = 0
    for s in range(0, len(x_flat), chunk):
        correct += ((_as_float(x_flat[s:s + chunk]) @ w.T).argmax(1) == y[s:s + chunk].to(x_flat.device)).sum().item()
    return correct / max(len(x_flat), 1)


@torch.no_grad()
def project(x: torch.Tensor, q: torch.Tensor | np.ndarray, chunk: int = 4096, clip: bool = True,
            inplace: bool = False) -> torch.Tensor:
    """X_r = X - (X Q) Q^T for images x (N, ...) flattened channel-major to (N, d).

    q: (d, r) with orthonormal columns. Computed chunk by chunk in float64 (float32 on devices
    without float64), so memory is the float32 output plus one chunk: with `inplace` (x float32)
    the output is x itself, otherwise x (uint8 or float) is left alone and one float32 copy is
    made. `clip` clamps to [0, 1] (the released code's colour-jitter clamps too); clip=False
    keeps the exact projection, so (X_r Q) = 0 to rounding.
    """
    dev = x.device
    cdt = torch.float32 if dev.type == "mps" else torch.float64
    q = (torch.from_numpy(q) if isinstance(q, np.ndarray) else q).to(dev, cdt)
    n = len(x)
    d = x[0].numel() if n else q.shape[0]
    if q.shape[0] != d:
        raise UnlearnableError(f"project: basis has {q.shape[0]} rows but images have {d} values")
    if inplace and x.dtype != torch.float32:
        raise UnlearnableError("project: inplace needs a float32 tensor")
    out = x if inplace else torch.empty(x.shape, dtype=torch.float32, device=dev)
    flat_out = out.view(n, d)
    for s in range(0, n, chunk):
        xc = x[s:s + chunk].reshape(-1, d).to(cdt, copy=True)
        if x.dtype == torch.uint8:
            xc /= 255
        xc.addmm_(xc @ q, q.T, alpha=-1)  # in place: no second chunk-sized temporary
        if clip:
            xc.clamp_(0, 1)
        flat_out[s:s + chunk] = xc
    return out


DIRECTIONS = ("learned", "perturbations")
BASES = ("auto", "class-means", "pca")


@dataclass
class OrthoProjParams:
    """Parameters of the `ortho-proj` attack (see the module docstring).

    directions: `learned` (Algorithm 1: the rows of W) or `perturbations` (the oracle: the span of
    the known perturbations delta = x' - x, which needs the clean base). basis: how the oracle
    spans delta: `class-means` (the K class-mean perturbations: exactly the K patterns of a
    class-wise poison), `pca` (the top `k` principal directions of delta, for sample-wise
    poisons) or `auto` (class-means for a class-wise poison, as its manifest or the data says;
    pca otherwise). k: None means the number of classes.
    """

    linear_epochs: int | None = None
    linear_lr: float = 0.1
    linear_momentum: float = 0.0
    linear_batch_size: int = 1024
    clip: bool = True
    chunk: int = 4096
    save_recovered: bool = False
    linear_milestones: tuple[float, ...] = field(default=(0.5, 0.75))
    directions: str = "learned"
    basis: str = "auto"
    k: int | None = None

    def __post_init__(self) -> None:
        if self.directions not in DIRECTIONS:
            raise ValueError(f"directions must be one of {', '.join(DIRECTIONS)}, got {self.directions!r}")
        if self.basis not in BASES:
            raise ValueError(f"basis must be one of {', '.join(BASES)}, got {self.basis!r}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def linear(self) -> LinearParams:
        """The linear model's parameters (`LinearParams`) these fields name."""
        return LinearParams(self.linear_epochs, self.linear_lr, self.linear_momentum,
                            self.linear_batch_size, self.linear_milestones)


@dataclass
class OracleParams(OrthoProjParams):
    """`ortho-proj-oracle`: the same attack projecting the known perturbations by default."""

    directions: str = "perturbations"


# --- the oracle: the span of the known perturbations -------------------------------------------------

def is_class_wise(train: ImageSet, clean: ImageSet, chunk: int = 4096) -> bool:
    """Whether delta is one pattern per class: the manifest's kind when it says, else measured
    (every class's perturbations equal to within 1/255 where no pixel was clipped)."""
    man = train.meta.get("manifest", {})
    if man.get("kind") in ("class-wise", "sample-wise"):
        return man["kind"] == "class-wise"
    shape = (train.num_classes, *train.images.shape[1:])
    hi, lo = np.full(shape, -256, np.int16), np.full(shape, 256, np.int16)
    for s in range(0, len(train), chunk):
        x = train.images[s:s + chunk]
        d = x.astype(np.int16) - clean.images[s:s + chunk].astype(np.int16)
        inside = (x > 0) & (x < 255)  # a clipped pixel lost part of its pattern
        y = train.labels[s:s + chunk]
        for c in np.unique(y):
            dc, ic = d[y == c], inside[y == c]
            hi[c] = np.maximum(hi[c], np.where(ic, dc, -256).max(0))
            lo[c] = np.minimum(lo[c], np.where(ic, dc, 256).min(0))
    seen = hi >= lo
    return bool((hi - lo)[seen].max(initial=0) <= 1)


def perturbation_directions(train: ImageSet, clean: ImageSet, basis: str = "auto", k: int | None = None,
                            chunk: int = 4096) -> tuple[np.ndarray, str]:
    """Rows spanning the known perturbations delta = x' - x in [0, 1] units, flattened
    channel-major as W's rows are: ((r, d) float64, the basis used).

    class-means: the K class means of delta (for a class-wise poison, its K patterns up to
    clipping). pca: the top-k eigenvectors of delta^T delta, uncentred, since a perturbation shared
    by every image is part of what the network sees (accumulated in float64 chunk by chunk, so
    memory is d x d, not N x d).
    """
    if train.images.shape != clean.images.shape:
        raise UnlearnableError(f"the clean images {clean.images.shape} are not aligned with the protected "
                               f"ones {train.images.shape}")
    if basis == "auto":
        basis = "class-means" if is_class_wise(train, clean, chunk) else "pca"
    K = train.num_classes
    d = int(np.prod(train.chw))
    sums, counts = np.zeros((K, d)), np.zeros(K)
    gram = np.zeros((d, d)) if basis == "pca" else None
    xt, xc = train.uint8_tensor(), clean.uint8_tensor()
    for s in range(0, len(train), chunk):
        delta = (xt[s:s + chunk].flatten(1).double() - xc[s:s + chunk].flatten(1).double()).numpy() / 255
        if gram is not None:
            gram += delta.T @ delta
        else:
            y = train.labels[s:s + chunk]
            np.add.at(sums, y, delta)
            counts += np.bincount(y, minlength=K)
    if gram is None:
        return sums[counts > 0] / counts[counts > 0, None], basis
    vals, vecs = np.linalg.eigh(gram)
    top = np.argsort(vals)[::-1][:k or K]
    return vecs[:, top[vals[top] > 0]].T, basis


def alignment(q_a: torch.Tensor | np.ndarray, q_b: torch.Tensor | np.ndarray) -> list[float]:
    """Cosines of the principal angles between span(q_a) and span(q_b) (orthonormal columns),
    largest first: 1.0 for a shared direction, 0.0 for an orthogonal one; min(rank) of them."""
    a, b = (np.asarray(q.numpy() if isinstance(q, torch.Tensor) else q, dtype=np.float64) for q in (q_a, q_b))
    if a.shape[1] == 0 or b.shape[1] == 0:
        return []
    return [float(min(c, 1.0)) for c in np.linalg.svd(a.T @ b, compute_uv=False)]


def save_linear_weights(path: str | os.PathLike[str], w: torch.Tensor) -> None:
    """W as float32 .npy (readable with allow_pickle=False), written atomically."""
    with atomic_file(path, "wb") as f:
        np.save(f, w.numpy().astype(np.float32), allow_pickle=False)


def _ortho_proj(ctx: AttackContext, p: OrthoProjParams) -> dict[str, Any]:
    """Project out the directions a linear model learns (the oracle: the known perturbations), then train.

    Paper: Sandoval-Segura, Singla, Geiping, Goldblum, Goldstein, "What Can We Learn from Unlearnable
        Datasets?", NeurIPS 2023, Algorithm 1, https://arxiv.org/abs/2305.19254.
    Threat model: `ortho-proj`: only the protected training set; may project its own test inputs.
        `ortho-proj-oracle` (or directions=perturbations): also knows the clean images (oracle), hence
        delta = x' - x; an upper bound, not an attacker.
    Args:
        linear_epochs (None): the linear model's epochs; None means 20, or 60 with >= 100 classes
        linear_lr (0.1): its learning rate
        linear_momentum (0.0): its SGD momentum (0, as released)
        linear_batch_size (1024): its batch size
        clip (True): clamp the projected images to [0, 1]
        chunk (4096): images per projection pass
        save_recovered (False): also write the projected training set (8-bit) under recovered/
        linear_milestones ((0.5, 0.75)): fractions of the linear epochs where its lr drops x0.1
        directions ("learned"; "perturbations" for ortho-proj-oracle): the rows of W, or the span of delta
        basis ("auto"): how the oracle spans delta: class-means, pca, or auto (class-means for a class-wise poison)
        k (None): pca's number of directions; None means the number of classes
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), flattened channel-major to (N, d) and
        trained on as float32 (N, C, H, W) in [0, 1]; ctx.clean aligned, same shapes (oracle); returns a dict
        with test_accuracy (fraction, clean test set), test_accuracy_transformed_test (= test_accuracy_projected_test),
        test_loss, test_loss_transformed_test, train_accuracy, seconds_train, linear_train_accuracy, rank,
        num_classes, directions, learned_rank, alignment, perturbation_basis and perturbation_rank (when the
        clean images are known), linear_epochs, seconds_linear, seconds_projection, params_resolved and,
        with save_recovered, recovered (its path); writes weights.png and linear_weights.npy.
    Example:
        unlearnable attack ortho-proj runs/lsp --recipe fast --out runs/lsp-ortho-proj
        unlearnable attack ortho-proj-oracle runs/lsp --recipe fast --out runs/lsp-ortho-proj-oracle
    """
    dev = ctx.device
    ds = ctx.train
    known = ctx.clean is not None and ctx.clean.images.shape == ds.images.shape
    if p.directions == "perturbations" and not known:
        raise UnlearnableError("directions=perturbations needs the clean base images, aligned with the "
                               "protected ones (pass --clean DATA)")
    if p.directions == "perturbations":
        if not is_additive(ds.meta.get("manifest")):
            raise UnlearnableError("directions=perturbations: not applicable: the perturbation is a convolution, "
                                   "not an additive delta")
    x_u8 = ds.uint8_tensor()  # (N, C, H, W): flattening it is channel-major
    y = torch.from_numpy(ds.labels)
    t0 = time.perf_counter()
    # W is fitted in both modes: its picture, and its alignment with the perturbations.
    w = fit_linear(x_u8.flatten(1), y, ds.num_classes, p.linear(), ctx.seed, dev,
                   progress_enabled(ctx.progress))
    lin_acc = linear_accuracy(x_u8.flatten(1), y, w)
    seconds_linear = time.perf_counter() - t0
    save_linear_weights(ctx.out_dir / "linear_weights.npy", w)
    plot_weight_rows(w.numpy(), ds.chw, ds.classes, ctx.out_dir / "weights.png",
                     f"rows of the linear model ({ds.name or ctx.data_name}; train acc {100 * lin_acc:.1f}%)")

    t0 = time.perf_counter()
    q, rank = projection_basis(w)
    extra: dict[str, Any] = {"directions": p.directions, "learned_rank": rank}
    if known:
        rows, used = perturbation_directions(ds, ctx.clean, p.basis, p.k, p.chunk)
        q_pert, pert_rank = projection_basis(rows) if len(rows) else (torch.zeros(q.shape[0], 0), 0)
        extra.update({"alignment": alignment(q, q_pert), "perturbation_basis": used,
                      "perturbation_rank": pert_rank})
        if pert_rank == 0:
            log.warning("ortho-proj: the perturbations are all zero; nothing to project")
        if p.directions == "perturbations":
            q, rank = q_pert, pert_rank
            save_linear_weights(ctx.out_dir / "perturbation_directions.npy", torch.from_numpy(rows).float())
    x_r = project(x_u8, q, p.chunk, p.clip)
    seconds_projection = time.perf_counter() - t0

    # The attacker controls its own inference, so it may project test inputs too: both figures.
    _, trained = train_and_evaluate(ctx, (x_r, y), test_transform=lambda xb: project(xb, q, p.chunk, p.clip))
    out: dict[str, Any] = {
        **trained, "test_accuracy_projected_test": trained["test_accuracy_transformed_test"],
        "linear_train_accuracy": lin_acc, "rank": rank, "num_classes": ds.num_classes, **extra,
        "linear_epochs": p.linear().epochs_for(ds.num_classes),
        "seconds_linear": round(seconds_linear, 3), "seconds_projection": round(seconds_projection, 3),
        "params_resolved": to_dict(p),
    }
    if p.save_recovered:
        out["recovered"] = str(save_recovered(ctx, x_r, to_dict(p), rank))
    return out


ARTIFACTS = {"weights": "weights.png", "linear_weights": "linear_weights.npy"}
register_attack("ortho-proj", "Orthogonal Projection: remove the directions a linear model learns, then train",
                PAPER, params_cls=OrthoProjParams, cost=1.1, prior=0.6, family="projection", order=20, transforms_test=True,
                artifacts=ARTIFACTS,
                # The paper's Table 3 (CIFAR-10): it breaks all 5 class-wise poisons (87-90 %) and 1 of
                # the 5 sample-wise ones (NTGA; UE 65 %, AP 15 %, AR 13 %, REM 26 %).
                suits={"kind:class-wise": 1.6, "kind:sample-wise": 0.4})(_ortho_proj)
# The oracle as an attack of its own, so an audit can list it beside the learned one (`--attacks
# ortho-proj,ortho-proj-oracle`): it knows delta, so it is an upper bound, not an attacker.
register_attack("ortho-proj-oracle", "Orthogonal Projection of the known perturbations (needs the base): "
                "the upper bound of ortho-proj", PAPER, params_cls=OracleParams, cost=1.1, prior=1.0, family="oracle", order=21,
                transforms_test=True, artifacts=ARTIFACTS, oracle=True)(_ortho_proj)


def save_recovered(ctx: AttackContext, x_r: torch.Tensor, params: dict[str, Any], rank: int) -> Path:
    """Write X_r (rounded to 8 bits) in the project format as method "ortho-proj-recovered"."""
    return save_training_set(ctx, to_uint8(x_r), "ortho-proj-recovered", {
        "params": params, "rank": rank, "paper": PAPER,
        "note": "projected images rounded to 8 bits; the attack itself trains on float32"}, "recovered")
