"""Turn what a user typed (`fashion-mnist`, `cifar10`, `./runs/lsp`, `imagefolder:/data/x`) into data.

Search order for a registered dataset: `--data-root`, then `$UNLEARNABLE_DATA` (a list, like
$PATH), then the well-known system locations (Debian's dataset packages), then the user cache
(~/.cache/unlearnable/data, where `unlearnable datasets --download NAME` puts data by default;
`fetch.py` fetches it).
Under each root the dataset's files may sit in the root itself or in one of its usual folder
names (fashion-mnist/, FashionMNIST/raw/, cifar-10-batches-py/, ...). A protected-dataset
directory names its base dataset in its manifest, which is how its clean test set and clean
images are found.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import DataError, UnlearnableError
from ..core.hashing import sha256_array
from .imageset import ImageSet
from .readers import load_image_folder
from .refs import follow_ref
from .sources import DATASETS, Source, get_source
from .store import is_dataset_dir, load_dataset_dir, read_manifest

# How many protected sets may stand between a set and the clean data it names (a set made from
# an imported set is 2); a longer chain is taken for a loop made through links or mounts.
MAX_BASE_CHAIN = 16


def data_roots(data_root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The user-given roots, in search order: `data_root`, then each $UNLEARNABLE_DATA entry."""
    roots = []
    if data_root:
        roots.append(Path(data_root))
    env = os.environ.get("UNLEARNABLE_DATA")
    if env:
        roots.extend(Path(p) for p in env.split(os.pathsep) if p)
    return roots


def read_paths(spec: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> list[Path]:
    """The files and directories that dataset `spec` (a name, a directory, `imagefolder:PATH`)
    is read from; `meta`, the loaded ImageSet's, adds where a dataset given by name was found."""
    s = str(spec)
    found = [s.split(":", 1)[1] if s.startswith("imagefolder:") else s]
    meta = meta or {}
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    found += [meta.get("path"), source.get("imagefolder")]
    if source.get("path") != ".":  # what an embedded dataset records: it has no files
        found.append(source.get("path"))
    return [Path(p) for p in found if isinstance(p, str) and p and os.path.lexists(p)]


def _has_marker(d: Path, marker: str) -> bool:
    if not d.is_dir():
        return False
    return any(fnmatch.fnmatch(p.name, marker) for p in d.iterdir())


def locate(src: Source, data_root: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory holding `src`'s files, or None when it is nowhere to be found."""
    if src.embedded:
        return Path(".")
    for root in data_roots(data_root):
        for cand in (root, *(root / d for d in src.dirnames)):
            if _has_marker(cand, src.marker):
                return cand
    for d in src.system_dirs:
        if _has_marker(Path(d), src.marker):
            return Path(d)
    cache = user_cache_root()
    for cand in (cache / d for d in src.dirnames):
        if _has_marker(cand, src.marker):
            return cand
    return None


def load_source(name: str, split: str = "train", data_root: str | os.PathLike[str] | None = None) -> ImageSet:
    """Split `split` of the registered dataset `name`, from wherever `locate` finds it."""
    src = get_source(name)
    where = locate(src, data_root)
    if where is None:
        looked = [str(r) for r in data_roots(data_root)] + list(src.system_dirs) + [str(user_cache_root())]
        raise UnlearnableError(
            f"dataset {src.name!r} not found (looked in: {', '.join(looked)}); to get it: {src.how_to_get}"
        )
    ds = src.loader(where, split)
    ds.name = src.name
    ds.meta.setdefault("source", {"dataset": src.name, "split": split, "path": str(where)})
    return ds


def load_data(spec: str | os.PathLike[str], split: str = "train",
              data_root: str | os.PathLike[str] | None = None) -> ImageSet:
    """Load a split of a dataset given by name, by project-format directory, or by image folder.

    For a project-format (protected) directory, "train" is the directory's own samples and
    "test" is the clean test split of the base dataset named in its manifest.
    """
    return _load_data(spec, split, data_root, ())


def _as_dir(spec: str) -> Path | None:
    """The directory `load_data` takes `spec` for (resolved), or None for a dataset name."""
    if spec.startswith("imagefolder:"):
        return Path(spec.split(":", 1)[1]).resolve()
    p = Path(spec)
    return p.resolve() if p.is_dir() or os.sep in spec or spec.startswith(".") else None


def _next_base(here: Path, man: dict, seen: tuple[Path, ...], follow: bool = True) -> str | None:
    """The base `here`'s manifest names, refused when it leads back into the chain `seen`.
    Not `follow`ing (the set's own training split is read): a base that would be refused when
    followed (an absolute path, a URL) is not checked for loops, since nothing reads it."""
    name = (man.get("base") or {}).get("name")
    if name:
        try:
            name = follow_ref(name, here / "manifest.json")
        except DataError:
            if follow:
                raise
            return None
    nxt = _as_dir(name) if name else None
    if nxt is not None and (nxt == here or nxt in seen):
        what = "itself" if nxt == here else f"{nxt}, which leads back to it"
        raise DataError(here / "manifest.json", f"base {name!r} names {what} (a loop in the base chain)")
    if len(seen) >= MAX_BASE_CHAIN:
        raise DataError(here / "manifest.json", f"more than {MAX_BASE_CHAIN} datasets in its base chain")
    return name


def _load_data(spec: str | os.PathLike[str], split: str, data_root: str | os.PathLike[str] | None,
               seen: tuple[Path, ...]) -> ImageSet:
    s = str(spec)
    if s.startswith("imagefolder:"):
        return load_image_folder(Path(s.split(":", 1)[1]), split)
    p = Path(s)
    if p.is_dir() or os.sep in s or s.startswith("."):
        if not p.exists():
            raise DataError(p, "no such directory")
        if is_dataset_dir(p):
            here = p.resolve()
            if split == "train":
                ds = load_dataset_dir(p)
                _next_base(here, ds.meta["manifest"], seen, follow=False)
                return ds
            # Only the manifest is needed to follow the chain to the clean test split.
            name = _next_base(here, read_manifest(p), seen)
            if not name:
                raise DataError(p / "manifest.json", "manifest names no base dataset")
            return _load_data(name, split, data_root, (*seen, here))
        if (p / "train").is_dir():
            return load_image_folder(p, split)
        # A folder that merely shares a registered name (./fashion-mnist holding the raw IDX
        # files) must not shadow the name.
        if s.lower() not in DATASETS:
            raise DataError(p, "not a dataset directory (no manifest.json, and no train/CLASS/ image folders)")
    return load_source(s, split, data_root)


def base_name(ds: ImageSet) -> str:
    """The base dataset a protected set's manifest names, or a one-line error naming the manifest."""
    man = ds.meta.get("manifest", {})
    name = man.get("base", {}).get("name")
    where = Path(ds.meta.get("path", ds.name)) / "manifest.json"
    if not name:
        raise DataError(where, "manifest names no base dataset")
    return follow_ref(name, where)


def load_base(protected: ImageSet, data_root: str | os.PathLike[str] | None = None,
              clean: str | os.PathLike[str] | None = None, full: ImageSet | None = None) -> ImageSet:
    """The clean images the protected samples were made from, aligned sample for sample.

    `full` is the whole clean training set when the caller already holds it (not read again).
    The aligned images are checked against the SHA-256 the manifest recorded for them, so a
    different base dataset, or one in another order, is an error rather than wrong deltas.
    """
    if full is None:
        full = load_data(clean or base_name(protected), "train", data_root)
    where = protected.meta.get("path", protected.name)
    idx = protected.indices
    if len(idx) and idx.max() >= len(full):
        raise DataError(where, f"indices reach {idx.max()} but the base set has {len(full)} images")
    base = full.subset(idx, name=full.name)
    want = protected.meta.get("manifest", {}).get("base", {}).get("sha256_images")
    if want and sha256_array(base.images) != want:
        raise DataError(where, f"the base images from {full.name!r} do not match the SHA-256 recorded "
                               "in the manifest (another dataset, version or order)")
    return base


@dataclass
class Located:
    """Where a registered dataset was found (`path`, None when nowhere) and how to get it."""
    name: str
    path: str | None
    how_to_get: str
    embedded: bool


def survey(data_root: str | os.PathLike[str] | None = None) -> list[Located]:
    """Every registered dataset: where it was found, or how to get it."""
    out, seen = [], set()
    for src in DATASETS.values():
        if src.name in seen:
            continue
        seen.add(src.name)
        where = locate(src, data_root)
        out.append(Located(src.name, None if where is None else str(where), src.how_to_get, src.embedded))
    return out


def user_cache_root() -> Path:
    """The user cache for datasets: $XDG_CACHE_HOME/unlearnable/data, else ~/.cache/unlearnable/data."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unlearnable" / "data"
