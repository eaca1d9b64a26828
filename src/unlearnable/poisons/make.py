"""`poison_dataset`: load a base training set, protect it, write it in the project format.

The written manifest says how to remake the set exactly: method, kind, typed parameters (after
defaults), seed, the l_p bound ("bound"), the compute level ("level"), fraction with the count
and checksum of the poisoned mask (recomputed by `poisoned_mask(num_samples, fraction, seed)`),
the subset (size and its own seed, 0 unless given, so that sets made with several poison seeds
protect the same images; `indices.npy` says which base samples), the base dataset (name,
split, full size, checksum of the aligned clean images), the generator's info (patterns,
coefficients, chosen pixels) and timing. (Older manifests name the bound "budget" and the level
"compute_budget"; `data.store.manifest_bound` and `manifest_level` read both spellings.)

Model-based methods keep resumable state in a work directory, by default `OUT.work` beside OUT
(OUT itself is written atomically at the end): kept when a run dies, resumed with
`resume=True`, removed once OUT is written.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UnlearnableError
from ..core.files import check_out_dir, refuse_overlap
from ..core.hashing import sha256_array
from ..data.imageset import ImageSet
from ..data.resolve import load_data, read_paths
from ..data.sources import DATASETS
from ..data.store import is_dataset_dir, load_dataset_dir, save_dataset
from ..data.subsets import random_subset
from .base import PoisonContext, get_poison, make_poison, poisoned_mask


def poison_dataset(
    method: str,
    data_spec: str | os.PathLike[str],
    out: str | os.PathLike[str],
    seed: int = 0,
    params: dict[str, str] | Any | None = None,
    fraction: float = 1.0,
    subset: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    ctx: PoisonContext | None = None,
    resume: bool = False,
    subset_seed: int = 0,
) -> Path:
    """Make the protected training set of `data_spec` with poison `method` and write it to `out`.

    Args:
        method: a key of `POISONS`.
        data_spec: a clean dataset name (fashion-mnist, cifar10, digits, ...) or
            `imagefolder:PATH`; its "train" split is protected, its test split stays clean.
        out: the dataset directory to write (atomically; refused if it exists unless `overwrite`).
        seed: seed of the poison's draws and the fraction mask.
        params: `--param` strings or the method's params dataclass (paper defaults otherwise).
        fraction: share of samples poisoned (the rest byte-identical to the base).
        subset: protect a random subset of this many base samples (`random_subset`), drawn with
            `subset_seed`, not `seed`: sets made with several seeds protect the same images.
        ctx: device / progress / work_dir / level (its seed must equal `seed`). With no
            `ctx.work_dir`, a model-based method keeps its state in `default_work_dir(out)`;
            an explicit `ctx.work_dir` is the caller's: always resumed from, never removed.
        resume: continue a killed run from the state in `default_work_dir(out)`; without it an
            existing state there is refused (so an old run is never continued by surprise).
        subset_seed: the seed of the subset (default 0), recorded in the manifest.

    Returns the path written. Example:
        `poison_dataset("lsp", "fashion-mnist", "data/fmnist-lsp", seed=0, subset=20000)`
    """
    t0 = time.perf_counter()
    check_out_dir(out, overwrite)  # before hours of crafting, not after
    info = get_poison(method)
    ctx = ctx or PoisonContext(seed=seed)
    p = info.params(params, ctx.level)  # bad parameters fail before any data is read
    if ctx.seed != seed:
        raise UnlearnableError(f"seed {seed} differs from the context's seed {ctx.seed}")
    own_work = None
    if info.model_based and ctx.work_dir is None:
        own_work = default_work_dir(out)
        if own_work.exists() and not resume:
            raise UnlearnableError(f"{own_work}: state of an unfinished run exists; resume it "
                                   "(--resume, resume=True) or delete it to start over")
        ctx = dataclasses.replace(ctx, work_dir=own_work)  # the caller's ctx stays as it was
    spec = str(data_spec)
    if is_dataset_dir(spec):
        raise UnlearnableError(f"{spec}: is already a protected dataset ({_method_of(spec)}); "
                               "poison a clean dataset instead")
    # `--overwrite` must never delete the clean images (imagefolder:OUT), nor a write add a class
    # folder to them; checked again once a dataset given by name has been found.
    refuse_overlap(out, [("the clean dataset", p) for p in read_paths(spec)])
    full = load_data(spec, "train", data_root)
    refuse_overlap(out, [("the clean dataset", p) for p in read_paths(spec, full.meta)])
    base_name = full.name if spec.lower() in DATASETS else _absolute(spec)
    base = full
    if subset is not None:
        if subset < 1:
            raise UnlearnableError(f"--subset must be at least 1, got {subset}")
        base = full.subset(random_subset(full, subset, subset_seed))
    t1 = time.perf_counter()
    protected = make_poison(method, base, p, seed, fraction, ctx)
    t2 = time.perf_counter()
    poison = protected.meta["poison"]
    manifest = {
        "name": Path(out).name,
        "method": method,
        "kind": poison["kind"],
        "additive": info.additive,
        "summary": info.summary,
        "paper": info.paper,
        "params": poison["params"],
        "seed": seed,
        "bound": _bound(poison["info"]),
        "level": ctx.level,
        "fraction": fraction,
        "num_poisoned": poison["num_poisoned"],
        "poisoned_mask": poison["poisoned_mask"],
        "subset": None if subset is None else {"n": subset, "seed": subset_seed,
                                              "rule": "unlearnable.data.random_subset(base, n, seed)"},
        "base": {"name": base_name, "split": "train", "num_samples": len(full)},
        "info": poison["info"],
        "timing": {"load_seconds": round(t1 - t0, 3), "generate_seconds": round(t2 - t1, 3)},
    }
    clean = base.replace(base.images, name=base_name)
    path = save_dataset(out, protected.replace(protected.images, name=Path(out).name, meta={}),
                        manifest, base=clean, overwrite=overwrite)
    if own_work is not None:
        shutil.rmtree(own_work, ignore_errors=True)
    return path


def default_work_dir(out: str | os.PathLike[str]) -> Path:
    """Where `poison_dataset` keeps a model-based method's resumable state for output `out`:
    the sibling `OUT.work` (not inside OUT, which is only written, atomically, at the end)."""
    out = Path(out)
    return out.with_name(out.name + ".work")


def stored_poisoned_mask(ds: ImageSet) -> np.ndarray:
    """The poisoned-sample mask of a written protected set, recomputed and checked.

    `ds` comes from `load_dataset_dir`; raises if the manifest's checksum does not match.
    """
    man = ds.meta.get("manifest", {})
    if "fraction" not in man or "seed" not in man:
        raise UnlearnableError(f"{ds.meta.get('path', ds.name)}: manifest records no poisoned fraction")
    mask = poisoned_mask(len(ds), float(man["fraction"]), int(man["seed"]))
    want = man.get("poisoned_mask", {}).get("sha256")
    if want is not None and sha256_array(mask) != want:
        raise UnlearnableError(f"{ds.meta.get('path', ds.name)}: poisoned mask does not match its checksum")
    return mask


def _absolute(spec: str) -> str:
    """An image-folder spec with an absolute path, so `load_base` works from any directory."""
    if spec.startswith("imagefolder:"):
        return "imagefolder:" + str(Path(spec.split(":", 1)[1]).resolve())
    return str(Path(spec).resolve())


def _bound(info: dict[str, Any]) -> dict[str, Any]:
    """The l_p bound a generator reports in its info: norm and size (pixels for l0)."""
    norm = info.get("norm", "none")
    b: dict[str, Any] = {"norm": norm}
    for key in ("eps", "linf", "l2"):
        if key in info:
            b[key] = info[key]
    if norm == "l0":
        b["pixels_per_image"] = info.get("pixels_per_image")
    return b


def _method_of(path: str) -> str:
    try:
        return str(load_dataset_dir(path, verify=False).meta["manifest"].get("method", "unknown method"))
    except UnlearnableError:
        return "unreadable manifest"
