"""What a dataset's images allow: the facts a training recipe consults before it augments.

A mirrored shirt is still a shirt, a mirrored 3 is no digit; a 4-pixel shift is little to a
32-pixel photograph and half of one of scikit-learn's 8x8 digits. Each registered dataset states
its facts (`Source.facts`); `facts_for` finds them for any `ImageSet`, a protected or imported
set through the base dataset its manifest names. `Recipe.for_data` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .imageset import ImageSet


@dataclass(frozen=True)
class DataFacts:
    hflip: bool = True  # a horizontal mirror keeps the label
    crop: bool = True  # a random shift of `crop_padding(size)` pixels keeps the label

    def crop_padding(self, size: int) -> int:
        """The most random-crop padding that suits images of side `size`: the paper's 4 px of
        32, an eighth of the side, for other sizes too (at least 1); 0 where shifts do not suit."""
        return max(1, round(size / 8)) if self.crop else 0


# Image folders and data of unknown origin: crop and flip, as CIFAR is trained.
UNKNOWN = DataFacts()


def facts_for(ds: ImageSet) -> DataFacts:
    """The facts of `ds`'s images, looked up by the registered dataset they come from."""
    from .sources import DATASETS  # sources.py builds its registry with DataFacts

    name = _origin(ds)
    src = DATASETS.get(name.lower()) if name else None
    return src.facts if src is not None else UNKNOWN


def _origin(ds: ImageSet) -> str | None:
    """The registered name `ds` may come from; None where its origin is known to be elsewhere."""
    man = ds.meta.get("manifest")
    base = man.get("base") if isinstance(man, dict) else None
    if isinstance(base, dict) and base.get("name"):
        # A protected set is its base dataset's images, changed within a small budget.
        name = base["name"]
        return name if isinstance(name, str) else None
    src = ds.meta.get("source")
    if isinstance(src, dict):
        # Set by the loaders: an image folder's name is only its directory's.
        name = src.get("dataset")
        return name if isinstance(name, str) else None
    return ds.name or None
