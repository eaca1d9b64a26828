"""The clean side of any training set, resolved in one place.

    side = clean_side(protected)               # or clean_side(ds, clean="fashion-mnist")
    side.test    # the clean test split of its base dataset (None: unknown, see side.notes)
    side.base    # the clean images behind each training sample, aligned (checked by SHA-256)
    side.pool    # the base dataset's whole clean training split (DFR draws its subset here)

A protected or imported set names its base in its manifest; a registered dataset, or a set of
the project format without a manifest base, is its own base. `clean` overrides the manifest.
Everything that needs clean data (the audit, the attacks' CLI, the job runner, DFR,
separability) asks this function, so they agree on what "clean" means.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core.errors import UnlearnableError
from .imageset import ImageSet
from .resolve import load_base, load_data


@dataclass
class CleanSide:
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
        return train.meta.get("source") or train.name or None  # a clean dataset is its own base
    return (man.get("base") or {}).get("name")


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
