"""The clean side of any training set, resolved in one place.

    side = clean_side(protected)               # or clean_side(ds, clean="fashion-mnist")
    side.test    # the clean test split of its base dataset (None: unknown, see side.notes)
    side.base    # the clean images behind each training sample, aligned (checked by SHA-256)
    side.pool    # the base dataset's whole clean training split (DFR draws its subset here)

A protected or imported set names its base in its manifest; a registered dataset, or a set of
the project format without a manifest base, is its own base. `clean` overrides the manifest.
Everything that needs clean data (the audit, the attacks' CLI, the job runner, DFR,
separability) asks this function, so they agree on what "clean" means.

    split = pool_split(len(side.pool), seed=0, dfr_n=2000)   # or indices=the --dfr-indices file's
    split.dfr                      # DFR's head subset
    split.finetune_order(1000)     # fine-tuning's nested subsets: subset k is the first k
    split.validation()             # early stopping's validation images

The pool is shared by the analyses of one audit: `pool_split` is the one place that decides
which images each takes, so no analysis validates or fits on another's training images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import UnlearnableError
from .imageset import ImageSet
from .refs import follow_ref
from .resolve import load_base, load_data
from .subsets import seeded_subset

log = logging.getLogger(__name__)


@dataclass
class CleanSide:
    """What `clean_side` found behind a training set; None where it could not, with the reason
    in `notes`."""

    base_name: str | None
    test: ImageSet | None
    base: ImageSet | None
    pool: ImageSet | None
    notes: list[str] = field(default_factory=list)


def base_name_of(train: ImageSet, clean: str | None = None) -> str | None:
    """The name of the dataset `train` was made from (None when nothing says)."""
    if clean:
        return clean
    man = train.meta.get("manifest")
    if man is None:
        src = train.meta.get("source")  # a clean dataset is its own base: the loaders record it
        name = src.get("dataset") if isinstance(src, dict) else src
        return name if isinstance(name, str) and name else (train.name or None)
    name = (man.get("base") or {}).get("name")
    # A path there is the manifest's, relative to its own directory (data/refs.py).
    return follow_ref(name, Path(train.meta.get("path", ".")) / "manifest.json") if name else None


def clean_side(train: ImageSet, clean: str | None = None,
               data_root: str | os.PathLike[str] | None = None) -> CleanSide:
    """The clean test set, the aligned clean images and the whole clean training split behind
    `train`; what cannot be found is None, with the reason in `notes`."""
    name = base_name_of(train, clean)
    side = CleanSide(name, None, None, None)
    if name is None:
        side.notes.append("the manifest names no base dataset, so there is no clean test set (pass --clean DATA)")
        return side
    try:
        side.test = load_data(name, "test", data_root)
    except UnlearnableError as e:
        side.notes.append(f"no clean test set: {e}")
        return side
    if side.test.chw != train.chw:
        raise UnlearnableError(f"test images {side.test.chw} differ in shape from the training images {train.chw}")
    try:
        side.pool = load_data(name, "train", data_root)
        if "manifest" in train.meta:
            side.base = load_base(train, full=side.pool)
            if side.base.images.shape != train.images.shape:
                raise UnlearnableError(f"base images {side.base.images.shape} differ from the training "
                                       f"images {train.images.shape}")
        else:
            side.base = train
    except UnlearnableError as e:
        side.base = None
        side.notes.append(f"clean training images unavailable ({e}); steps that need them are skipped")
    return side


@dataclass(frozen=True)
class PoolSplit:
    """Which images of a base's clean training split (the pool) each analysis of an audit takes.

    dfr: DFR's head subset, pool indices (a seeded draw of `dfr_n`, or the `--dfr-indices`
    file's, in its order). attacker: a seeded order of every other pool index, the clean data an
    attacker holds: fine-tuning takes nested subsets from its first half (`finetune_order`),
    early stopping validates on its second half (`validation`). So the three never share an image.
    """

    n_pool: int
    seed: int
    dfr: np.ndarray
    attacker: np.ndarray

    def finetune_order(self, want: int, cap: bool = False) -> np.ndarray:
        """The first `want` of fine-tuning's order: the first half of `attacker`, then (only for a
        pool too small to keep them apart, with a warning) DFR's images; subset k is its first k.
        Never the second half, where early stopping validates. `cap`: more than there is is the
        audit's to shrink to what there is, not an error."""
        first = self.attacker[:len(self.attacker) // 2]
        usable = np.concatenate([first, np.random.default_rng([self.seed, 16]).permutation(np.sort(self.dfr))])
        if want > len(usable):
            if not cap or not len(usable):
                raise UnlearnableError(f"fine-tuning size {want} is more than the {len(usable)} clean images "
                                       f"available (the pool of {self.n_pool} less the half early stopping "
                                       "validates on); pass smaller --sizes")
            want = len(usable)
        if want > len(first):
            log.warning("fine-tuning on %d images uses some of DFR's %d (the pool of %d is too small to keep them "
                        "apart)", want, len(self.dfr), self.n_pool)
        return usable[:want]

    def validation(self) -> np.ndarray:
        """Early stopping's validation order: the second half of `attacker`, from the far end (the
        images fine-tuning would reach last)."""
        return self.attacker[len(self.attacker) // 2:][::-1]


def pool_split(n_pool: int, seed: int, dfr_n: int, indices: np.ndarray | None = None) -> PoolSplit:
    """The split of a pool of `n_pool` clean images for `seed`: DFR's subset (`indices` when
    given, else a seeded draw of min(dfr_n, n_pool)), and the attacker's seeded order of the rest."""
    if indices is not None:
        dfr = np.asarray(indices, dtype=np.int64)
        if len(dfr) == 0 or dfr.min() < 0 or dfr.max() >= n_pool or len(np.unique(dfr)) != len(dfr):
            raise UnlearnableError(f"DFR indices must be distinct and in [0, {n_pool})")
    else:
        dfr = seeded_subset(n_pool, min(int(dfr_n), n_pool), seed)
    left = np.setdiff1d(np.arange(n_pool), dfr)
    return PoolSplit(n_pool, seed, dfr, left[np.random.default_rng([seed, 15]).permutation(len(left))])
