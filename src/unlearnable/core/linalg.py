"""Linear algebra that several concepts share: the row space of a set of linear classifiers.

    q, rank = projection_basis(w)     # w (K, d): Q (d, rank) orthonormal, float64

Orthogonal projection (the attack `ortho-proj`, the paper's Algorithm 1) removes span(Q) from
every image; the detector's projected view removes it from a ridge classifier's inputs. Both need
the span of exactly the independent rows: a ridge fitted to centred one-hot targets has K rows
summing to zero (rank K - 1), and a plain QR completes such a matrix with a direction made of
rounding noise, which differs from one CPU's vector width to another's.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import UnlearnableError


def projection_basis(w: torch.Tensor | np.ndarray, rtol: float | None = None) -> tuple[torch.Tensor, int]:
    """Orthonormal basis of the row space of W: (Q (d, rank) float64, rank).

    Rows are normalized to unit length (all-zero rows dropped), then a column-pivoted reduced QR
    of W^T in float64. Pivoting orders |R_ii| decreasingly, so a rank-deficient W (duplicate or
    dependent rows) keeps only its first `rank` columns: directions that are really in W's row
    space, never the arbitrary completions plain QR returns for dependent columns.
    rank = #{|R_ii| > rtol * |R_00|}, rtol defaulting to max(K, d) * float64 eps (numpy's
    matrix_rank rule).
    """
    import scipy.linalg

    a = np.asarray(w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else w, dtype=np.float64)
    if a.ndim != 2:
        raise UnlearnableError(f"projection_basis: W must be (K, d), got shape {a.shape}")
    norms = np.linalg.norm(a, axis=1)
    a = a[norms > 0] / norms[norms > 0, None]
    if len(a) == 0:
        return torch.zeros(w.shape[1], 0, dtype=torch.float64), 0
    q, r, _ = scipy.linalg.qr(a.T, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    tol = (rtol if rtol is not None else max(a.shape) * np.finfo(np.float64).eps) * diag[0]
    rank = int((diag > tol).sum())
    return torch.from_numpy(np.ascontiguousarray(q[:, :rank])), rank
