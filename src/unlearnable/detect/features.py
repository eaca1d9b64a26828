"""The detector's measurements: closed-form linear classifiers on views of the data, cross-fitted
between two halves of the set itself, so every number compares the data with itself.

A shortcut (the thing an unlearnable set plants) is a small-amplitude signal that predicts the
label almost perfectly and generalises from one half of the set to the other. Natural class
information lives mostly in large, smooth structure. So the measurements are held-out errors of a
ridge classifier on the raw pixels against the same classifier on views that remove a shortcut
but keep most natural content (a blur, a coarser bit depth, the classifier's own top directions
projected out: the paper's Algorithm 1), and the error of the nearest class mean on the
high-pass residual (a class-wise pattern is the class mean of its residuals).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet


def content_order(ds: ImageSet, seed: int = 0) -> np.ndarray:
    """A permutation of `ds` fixed by the seed and each sample's bytes and label, not by its
    position: the subset and the halves drawn from it are the same whatever order the samples
    come in (identical samples of one label tie, which changes no measurement)."""
    salt = int(seed).to_bytes(8, "little")
    keys = np.empty(len(ds), dtype=np.uint64)
    for i in range(len(ds)):
        h = hashlib.blake2b(ds.images[i].tobytes(), digest_size=8, key=salt + ds.labels[i].tobytes())
        keys[i] = np.frombuffer(h.digest(), dtype=np.uint64)[0]
    return np.argsort(keys, kind="stable")


def _blur(x: torch.Tensor) -> torch.Tensor:
    """A separable [1, 2, 1] / 4 blur per channel, reflecting at the border (NCHW)."""
    c = x.shape[1]
    k = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype)
    kh = k.view(1, 1, 1, 3).repeat(c, 1, 1, 1)
    kv = k.view(1, 1, 3, 1).repeat(c, 1, 1, 1)
    y = F.conv2d(F.pad(x, (1, 1, 0, 0), mode="replicate"), kh, groups=c)
    return F.conv2d(F.pad(y, (0, 0, 1, 1), mode="replicate"), kv, groups=c)


def views(x: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """Flattened views of float NCHW images in [0, 1]: raw, blurred, coarser bit depth, high-pass."""
    b = _blur(x)
    levels = 2 ** bits - 1
    q = torch.round(x * levels) / levels
    n = len(x)
    return {"raw": x.reshape(n, -1), "blur": b.reshape(n, -1), "quant": q.reshape(n, -1),
            "highpass": (x - b).reshape(n, -1)}


class Ridge:
    """A one-vs-rest least-squares classifier, W = (X'X + lam I)^-1 X'Y on centred X, in float64.

    lam is `alpha` times the mean eigenvalue of X'X (its trace over d), so it means the same on
    every scale of pixels."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, k: int, alpha: float):
        x = x.double()
        self.mu = x.mean(0)
        xc = x - self.mu
        g = xc.T @ xc
        lam = alpha * float(torch.trace(g)) / g.shape[0] + 1e-12
        g.diagonal().add_(lam)
        t = F.one_hot(y, k).double()
        t = t - t.mean(0)
        self.w = torch.linalg.solve(g, xc.T @ t)  # (d, k)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() - self.mu) @ self.w


def margins(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample: the true class's score minus the best other class's (> 0: correct)."""
    own = s.gather(1, y[:, None])[:, 0]
    other = s.scatter(1, y[:, None], float("-inf")).max(1).values
    return own - other


def project_out(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x minus its component in the span of the columns of w (rows normalised, then QR):
    the paper's Algorithm 1 with a closed-form linear model."""
    wn = w / w.norm(dim=0, keepdim=True).clamp_min(1e-12)
    q, _ = torch.linalg.qr(wn)
    xd = x.double()
    return (xd - (xd @ q) @ q.T).to(x.dtype)


def ncm_margins(xa: torch.Tensor, ya: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, k: int) -> torch.Tensor:
    """Nearest-class-mean margins of xb with class means from xa (a class absent from xa never wins)."""
    means = torch.zeros(k, xa.shape[1], dtype=torch.float64)
    counts = torch.bincount(ya, minlength=k).double()
    means.index_add_(0, ya, xa.double())
    present = counts > 0
    means[present] /= counts[present, None]
    d = torch.cdist(xb.double(), means)
    d[:, ~present] = float("inf")
    return margins(-d, yb)
