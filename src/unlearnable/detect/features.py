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

from ..core.linalg import projection_basis
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


def _blur_matrix(n: int, dtype: torch.dtype) -> torch.Tensor:
    """(n, n) B with (v @ B)[j] = v[j-1] / 4 + v[j] / 2 + v[j+1] / 4, the ends replicated."""
    b = torch.zeros(n, n, dtype=dtype)
    for j in range(n):
        for i, wt in ((max(j - 1, 0), 0.25), (j, 0.5), (min(j + 1, n - 1), 0.25)):
            b[i, j] += wt
    return b


def _blur(x: torch.Tensor) -> torch.Tensor:
    """A separable [1, 2, 1] / 4 blur per channel, replicating the border (NCHW, any float dtype):
    two small matrix products, so a float64 batch (`blur_rows` on a Gram matrix) is as fast as
    a float32 one."""
    h, w = x.shape[-2:]
    return _blur_matrix(h, x.dtype).T @ (x @ _blur_matrix(w, x.dtype))


def views(x: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """Flattened views of float NCHW images in [0, 1]: raw, coarser bit depth, high-pass (the blurred
    view is a linear map of the raw one: `blur_rows` on its moments)."""
    xd = x.double()  # the high-pass in float64: a float32 product rounds differently per vector width
    xd -= _blur(xd)
    levels = 2 ** bits - 1
    q = torch.round(x * levels) / levels
    n = len(x)
    return {"raw": x.reshape(n, -1), "quant": q.reshape(n, -1), "highpass": xd.reshape(n, -1)}


class Moments:
    """What a ridge fit needs from (x, y), in float64: n, the mean, the centred Gram matrix and the
    centred cross-moment with the one-hot labels.

    A linear view of the data (a blur, a projection) needs no pass over it: its moments are the
    map applied to these (`mapped`), which is how the blurred and projected classifiers cost a few
    d x d products instead of an n x d x d Gram each. Two halves' moments pool exactly (`pooled`)."""

    def __init__(self, n: int, mu: torch.Tensor, g: torch.Tensor, b: torch.Tensor, tbar: torch.Tensor):
        self.n, self.mu, self.g, self.b, self.tbar = n, mu, g, b, tbar

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, k: int) -> "Moments":
        """The moments of rows `x` (n, d) with labels `y` among `k` classes."""
        x = x.double()
        mu = x.mean(0)
        xc = x - mu
        t = F.one_hot(y, k).double()
        tbar = t.mean(0)
        return cls(len(x), mu, xc.T @ xc, xc.T @ (t - tbar), tbar)

    def mapped(self, rows) -> "Moments":
        """The moments of `rows(x)`, for a linear map `rows` of (m, d) row batches: x -> x A.
        (G A's transpose is A' G, G being symmetric, so two maps of rows give A' G A.)"""
        ga = rows(self.g)
        return Moments(self.n, rows(self.mu[None])[0], rows(ga.T.contiguous()), rows(self.b.T.contiguous()).T,
                       self.tbar)

    def pooled(self, other: "Moments") -> "Moments":
        """The moments of both sets together (Chan et al.'s merge of centred sums)."""
        n = self.n + other.n
        dx, dt = other.mu - self.mu, other.tbar - self.tbar
        f = self.n * other.n / n
        return Moments(n, self.mu + dx * other.n / n, self.g + other.g + f * torch.outer(dx, dx),
                       self.b + other.b + f * torch.outer(dx, dt), self.tbar + dt * other.n / n)


class Ridge:
    """A one-vs-rest least-squares classifier, W = (X'X + lam I)^-1 X'Y on centred X, in float64.

    lam is `alpha` times the mean eigenvalue of X'X (its trace over d), so it means the same on
    every scale of pixels. Built from data (`Ridge(x, y, k, alpha)`) or from `Ridge.from_moments`."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, k: int, alpha: float):
        self._fit(Moments.of(x, y, k), alpha)

    @classmethod
    def from_moments(cls, m: Moments, alpha: float) -> "Ridge":
        """The ridge fit of the data `m` summarizes, without the data."""
        r = cls.__new__(cls)
        r._fit(m, alpha)
        return r

    def _fit(self, m: Moments, alpha: float) -> None:
        self.mu = m.mu
        g = m.g.clone()
        lam = alpha * float(torch.trace(g)) / g.shape[0] + 1e-12
        g.diagonal().add_(lam)
        self.w = torch.linalg.solve(g, m.b)  # (d, k)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (n, k) of rows `x`, centred on the training mean."""
        return (x.double() - self.mu) @ self.w


def blur_rows(chw: tuple[int, int, int]):
    """The [1, 2, 1] blur as a map of flattened rows (`_blur` on each row seen as an image)."""
    def rows(m: torch.Tensor) -> torch.Tensor:
        return _blur(m.reshape(len(m), *chw)).reshape(len(m), -1)
    return rows


# A float64 solve leaves a dependent column at ~1e-13 of the largest (its error times the Gram
# matrix's conditioning), above the default rank rule's 1e-14: directions below 1e-8 are dependent.
DEPENDENT = 1e-8


def projection_rows(w: torch.Tensor):
    """Removing the span of w's columns (`core.linalg.projection_basis`: only the independent
    ones, so a ridge's K columns that sum to zero remove K - 1 directions, not a K-th made of
    rounding noise), as a map of rows: the paper's Algorithm 1 with a closed-form linear model."""
    q, _ = projection_basis(w.T, rtol=DEPENDENT)

    def rows(m: torch.Tensor) -> torch.Tensor:
        md = m.double()
        return md - (md @ q) @ q.T
    return rows


def margins(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample: the true class's score minus the best other class's (> 0: correct)."""
    own = s.gather(1, y[:, None])[:, 0]
    other = s.scatter(1, y[:, None], float("-inf")).max(1).values
    return own - other


def ncm_margins(xa: torch.Tensor, ya: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, k: int) -> torch.Tensor:
    """Nearest-class-mean margins of xb with class means from xa (a class absent from xa never wins)."""
    means = torch.zeros(k, xa.shape[1], dtype=torch.float64)
    counts = torch.bincount(ya, minlength=k).double()
    means.index_add_(0, ya, xa.double())
    present = counts > 0
    means[present] /= counts[present, None]
    d = torch.cdist(xb.double(), means, compute_mode="donot_use_mm_for_euclid_dist")  # exact: no rounding ties
    d[:, ~present] = float("inf")
    return margins(-d, yb)
