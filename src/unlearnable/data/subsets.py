"""The one seeded subset draw: which `n` of `n_total` samples, from a seed.

    seeded_subset(60000, 5000, seed=0)   # sorted indices, uniform without replacement
    random_subset(ds, 20000, seed=0)     # the same draw over a dataset, refused if it is smaller

A protected set's subset of its base (`poison --subset`), DFR's clean images, separability's
`--n`, a grid's clean row: every seeded choice of samples is this draw, so the same (size, n,
seed) is the same images everywhere.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UnlearnableError
from .imageset import ImageSet


def seeded_subset(n_total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform choice of `n` of `n_total` samples (no replacement)."""
    if n > n_total:
        raise UnlearnableError(f"asked for {n} samples of {n_total}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n, replace=False))


def random_subset(ds: ImageSet, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of `n` samples of `ds` (uniform, not stratified)."""
    if n > len(ds):
        raise UnlearnableError(f"asked for {n} samples but {ds.name or 'the dataset'} has {len(ds)}")
    return seeded_subset(len(ds), n, seed)
