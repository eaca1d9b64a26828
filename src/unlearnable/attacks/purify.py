"""What the purification family shares: a training set rewritten before training, kept as a
dataset of the project's format, and its figure.

    path = save_training_set(ctx, images, "dvae-purified", {"purified": {...}}, "purified")
    copy_training_set(RUN_DIR / "purified", "data/regions-dvae")      # `attack --save-purified`
    save_before_after(ctx.train, purified, ctx.out_dir / "purified.png", "purified")

The set written names the protected set's base as the protected set does (so `show`, `audit`
and `detect` read it with its clean test split), its base path rebased to where it is written,
and records what made it. ortho-proj's `--save-recovered` writes through the same function.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UnlearnableError
from ..data.identity import content_id
from ..data.imageset import ImageSet
from ..data.refs import follow_ref
from ..data.store import load_dataset_dir, save_dataset
from ..viz.grid import comparison_grid, save_png
from .base import AttackContext


def base_record(ds: ImageSet, fallback: str) -> dict[str, Any]:
    """The base `ds` names, its path resolved from `ds`'s own manifest (so a writer elsewhere
    can record it relative to itself), without the checksum `save_dataset` recomputes."""
    man = ds.meta.get("manifest") or {}
    base = dict(man.get("base") or {"name": fallback})
    if isinstance(base.get("name"), str) and ds.meta.get("path"):
        base["name"] = follow_ref(base["name"], Path(ds.meta["path"]) / "manifest.json")
    base.pop("sha256_images", None)
    return base


def save_training_set(ctx: AttackContext, images: np.ndarray, method: str, manifest: dict[str, Any],
                      dirname: str) -> Path:
    """Write `images` (uint8 NHWC, aligned with ctx.train) as the dataset `ctx.out_dir/dirname`:
    method `method`, the protected set's labels, indices and base, the perturbation measured
    against the aligned clean images when the context has them. Replaces an earlier one."""
    ds = ctx.train
    if images.shape != ds.images.shape or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 {ds.images.shape}, got {images.dtype} {images.shape}")
    src = ds.meta.get("manifest") or {}
    man = {"method": method, "seed": ctx.seed, "source_dataset": ctx.data_name or ds.name,
           "kind": src.get("kind"), "additive": False, "base": base_record(ds, ctx.data_name or ds.name),
           "derived_from": {"method": src.get("method"), "data": content_id(ds)}, **manifest}
    out = ds.replace(images, name=f"{ds.name}-{method}", meta={})
    clean = ctx.clean if ctx.clean is not None and ctx.clean.images.shape == ds.images.shape else None
    return save_dataset(ctx.out_dir / dirname, out, man, base=clean, overwrite=True)


def copy_training_set(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """The dataset at `src` (verified) written again at `dest`, its base rebased there; `dest`
    must not exist (nothing of the user's is replaced)."""
    refuse_existing(dest)
    ds = load_dataset_dir(src)
    man = {k: v for k, v in ds.meta["manifest"].items() if k not in ("arrays", "created", "versions")}
    man["base"] = base_record(ds, ds.name)
    return save_dataset(dest, ds.replace(ds.images, meta={}), man)


def refuse_existing(dest: str | os.PathLike[str] | None) -> None:
    """Before any work: a `--save-purified` destination that exists is refused in one line."""
    if dest is not None and os.path.lexists(dest):
        raise UnlearnableError(f"{dest}: exists; --save-purified writes a new dataset directory")


def save_before_after(before: ImageSet, after: ImageSet, path: Path, title: str) -> Path:
    """The figure: per class a protected image, what the purifier made of it, their difference."""
    return save_png(comparison_grid(before, after, titles=("protected", title, "change (amp.)")), path)
