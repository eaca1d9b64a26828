"""What a dataset's images allow, and what a protected set's manifest says it is.

A mirrored shirt is still a shirt, a mirrored 3 is no digit; a 4-pixel shift is little to a
32-pixel photograph and half of one of scikit-learn's 8x8 digits. Each registered dataset states
its facts (`Source.facts`, found for any set by `sources.facts_for`); `Recipe.for_data` applies
them. Whether a protected set adds a bounded delta (`is_additive`) is a fact of its format: the
manifest records it, and the analyses of delta read it there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DataFacts:
    """What training may do to a dataset's images: mirror them (`hflip`), shift them (`crop`)."""
    hflip: bool = True  # a horizontal mirror keeps the label
    crop: bool = True  # a random shift of `crop_padding(size)` pixels keeps the label

    def crop_padding(self, size: int) -> int:
        """The most random-crop padding that suits images of side `size`: the paper's 4 px of
        32, an eighth of the side, for other sizes too (at least 1); 0 where shifts do not suit."""
        return max(1, round(size / 8)) if self.crop else 0


# Image folders and data of unknown origin: crop and flip, as CIFAR is trained.
UNKNOWN = DataFacts()


# Method name -> whether its sets are additive, as each poison declares it when it registers
# (`poisons.register_poison`): what a manifest's `method` means when the manifest says no more.
METHOD_ADDITIVE: dict[str, bool] = {}


def declare_method(name: str, additive: bool) -> None:
    """Record what the sets of method `name` are (a poison's registration does it)."""
    METHOD_ADDITIVE[name] = additive


def is_additive(manifest: Mapping[str, Any] | None) -> bool:
    """Whether a protected set is x' = x + delta with a bounded delta (what analyses of delta
    need), as its manifest records it: the `additive` field written with every set, else the
    generator's own record (`info.additive`, in sets written before the field existed), else what
    its method is declared to make; a set of unknown origin (no manifest, an import) is additive."""
    if not manifest:
        return True
    if isinstance(manifest.get("additive"), bool):
        return manifest["additive"]
    info = manifest.get("info") or {}
    if isinstance(info, Mapping) and "additive" in info:
        return bool(info["additive"])
    return METHOD_ADDITIVE.get(manifest.get("method"), True)
