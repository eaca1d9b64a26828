"""core.linalg: the row space of linear classifiers, only their independent rows."""

from __future__ import annotations

import torch

from unlearnable.core.linalg import projection_basis


def test_rank_deficient_weights_keep_only_independent_directions():
    w = torch.randn(4, 50, dtype=torch.float64)
    dup = torch.cat([w, w[:2] * 3.0, w[:1] + w[1:2]])  # 7 rows spanning 4 dimensions
    q, rank = projection_basis(dup)
    assert rank == 4 and q.shape == (50, 4)
    assert torch.allclose(q.T @ q, torch.eye(4, dtype=torch.float64), atol=1e-12)
    # span(Q) == row space of W: each row is reproduced by its projection onto Q
    assert torch.allclose(dup @ q @ q.T, dup, atol=1e-10)
    assert projection_basis(torch.zeros(3, 5))[1] == 0


def test_a_ridge_on_centred_targets_spans_k_minus_1_directions():
    # K one-vs-rest columns fitted to centred one-hot targets sum to zero: rank K - 1. The default
    # rule (max(K, d) eps) can keep a K-th direction made of the solve's rounding; a tolerance
    # above that error drops it, and the basis still spans every column.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 40, generator=g, dtype=torch.float64)
    y = torch.arange(500) % 10
    t = torch.nn.functional.one_hot(y, 10).double()
    xc = x - x.mean(0)
    w = torch.linalg.solve(xc.T @ xc + 0.1 * torch.eye(40, dtype=torch.float64), xc.T @ (t - t.mean(0)))
    assert w.sum(1).abs().max() < 1e-12
    q, rank = projection_basis(w.T, rtol=1e-8)
    assert rank == 9 and q.shape == (40, 9)
    assert torch.allclose(w.T @ q @ q.T, w.T, atol=1e-10)
