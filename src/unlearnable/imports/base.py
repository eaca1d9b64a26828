"""The import contract, the registry, and the checks every import goes through.

An importer reads one released format and returns an `Imported`: the protected images (uint8
NHWC), the index of each in the clean base set, the labels the files carry (if any), and every
file it read. `import_dataset` then does what is common to all formats: verifies shapes, labels
and indices against the base set, measures the perturbation, and writes the project format with
a manifest whose `verification` block says what was checked. Nothing is written unless every
check passes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import DataError, UnlearnableError
from ..core.files import check_out_dir, refuse_overlap
from ..core.hashing import sha256_file
from ..core.params import from_params, to_dict
from ..core.progress import progress_enabled
from ..core.safe import regular_file_size
from ..data.imageset import ImageSet
from ..data.resolve import load_data, read_paths
from ..data.sources import DATASETS
from ..data.store import perturbation_stats, save_dataset

# Images per step when a whole-dataset float computation is chunked: a CIFAR-10 float64 copy
# would be 1.2 GB, a chunk of 2,048 is 50 MB.
CHUNK = 2048


@dataclass
class Imported:
    """What an importer hands back; `import_dataset` checks and writes it."""

    images: np.ndarray  # uint8 (n, H, W, C), the protected images
    indices: np.ndarray  # int64 (n,), position of each image in the base set
    sources: list[Path]  # every file read, checksummed into the manifest
    labels: np.ndarray | None = None  # labels the files carry; None = take the base set's
    labels_source: Path | None = None  # the file the labels came from, for error messages
    details: dict[str, Any] = field(default_factory=dict)  # format facts for the manifest


ImportFn = Callable[[Path, ImageSet, Any, bool], Imported]


@dataclass(frozen=True)
class Importer:
    """A registered import format: its name, the function that reads it, its typed parameters,
    the test `auto` detection uses, and a summary and origin for the listing."""

    name: str
    fn: ImportFn  # fn(path, base, params, progress) -> Imported
    params: type  # dataclass of typed parameters (`--param k=v`), defaults = the original's
    detect: Callable[[Path], bool]  # does PATH (file or directory) hold this format?
    summary: str
    origin: str = ""  # the project that releases data this way


IMPORTERS: dict[str, Importer] = {}


def register_importer(name: str, params: type, detect: Callable[[Path], bool], summary: str,
                      origin: str = "") -> Callable[[ImportFn], ImportFn]:
    """Decorator: register the function as the importer of format `name` in `IMPORTERS`."""
    def deco(fn: ImportFn) -> ImportFn:
        IMPORTERS[name] = Importer(name, fn, params, detect, summary, origin)
        return fn
    return deco


@dataclass
class NoParams:
    """This format has no options."""


# ---------------------------------------------------------------------------------------------
# Helpers shared by the importers

def chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    """Slices covering range(n) in steps of `size`, for whole-dataset work done a chunk at a time."""
    for s in range(0, n, size):
        yield slice(s, min(s + size, n))


def find_one(path: Path, patterns: tuple[str, ...], what: str) -> Path:
    """PATH itself when it is a file, else the single file in PATH matching one of `patterns`."""
    if path.is_file():
        return path
    if not path.is_dir():
        if os.path.lexists(path):
            regular_file_size(path)  # a FIFO or device says what it is
        raise DataError(path, "no such file or directory")
    for pat in patterns:
        hits = sorted(p for p in path.glob(pat) if p.is_file())
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = ", ".join(p.name for p in hits[:5])
            raise DataError(path, f"{len(hits)} candidate {what} files ({names}); give the file itself")
    raise DataError(path, f"no {what} file ({' or '.join(patterns)})")


def check_finite(a: np.ndarray, path: Path) -> None:
    """Refuse a float array holding NaN or inf (a `DataError` naming `path` and the first such
    entry); other dtypes pass."""
    if not np.issubdtype(a.dtype, np.floating) or a.ndim == 0:
        return
    for sl in chunks(len(a)):
        bad = ~np.isfinite(a[sl])
        if bad.any():
            first = np.argwhere(bad)[0]
            first[0] += sl.start
            raise DataError(path, f"holds NaN or infinite values (first at {tuple(int(i) for i in first)})")


def require_float(a: np.ndarray, path: Path, what: str) -> None:
    """Refuse an array that is not floating point (a `DataError` naming `path` and `what`)."""
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(path, f"{what} must be floating point, got {a.dtype}")


def describe(a: np.ndarray) -> str:
    """An array's dtype and shape, for error messages."""
    return f"{a.dtype} array of shape {tuple(a.shape)}"


def per_sample_or_class(a: np.ndarray, base: ImageSet, path: Path, mode: str,
                        what: str = "perturbations") -> str:
    """'sample' when `a` has one entry per base image, 'class' when one per class."""
    n, k = len(base), base.num_classes
    if mode not in {"auto", "samplewise", "classwise"}:
        raise UnlearnableError(f"mode must be auto, samplewise or classwise, got {mode!r}")
    if mode == "samplewise" or (mode == "auto" and len(a) == n):
        if len(a) != n:
            raise DataError(path, f"{len(a)} {what} but the base set has {n} images (samplewise)")
        return "sample"
    if len(a) == k:
        return "class"
    raise DataError(path, f"{len(a)} {what}: expected {n} (one per base image) or {k} (one per class)")


# ---------------------------------------------------------------------------------------------
# Format detection

def detect_format(path: str | os.PathLike[str]) -> str:
    """The one registered format PATH looks like; ambiguity or no match is a clear error."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "no such file or directory")
    hits = [name for name, imp in IMPORTERS.items() if imp.detect(p)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise DataError(p, "cannot tell the format (none of: " + ", ".join(IMPORTERS)
                        + "); name it instead of auto")
    raise DataError(p, f"ambiguous format: looks like {', '.join(hits)}; name one instead of auto")


# ---------------------------------------------------------------------------------------------
# The import itself

def resolve_base(spec: str | os.PathLike[str], data_root: str | os.PathLike[str] | None
                 ) -> tuple[ImageSet, str]:
    """The clean training set and how the manifest should name it so `load_base` finds it again."""
    s = str(spec)
    base = load_data(s, "train", data_root)
    if s.startswith("imagefolder:"):
        ref = "imagefolder:" + str(Path(s.split(":", 1)[1]).resolve())
    elif s.lower() in DATASETS:
        ref = base.name
    else:
        ref = str(Path(s).resolve())
    return base, ref


def import_dataset(
    fmt: str,
    path: str | os.PathLike[str],
    base: str | os.PathLike[str],
    out: str | os.PathLike[str],
    params: dict[str, str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    trust_labels: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Import a released protected dataset into the project format at `out`.

    fmt: a key of `IMPORTERS` or "auto" (detected from PATH's contents).
    path: the released file or directory. base: the clean training set the poison was made
    from (dataset name or directory); shapes, class count and labels are checked against it.
    params: format options as strings (`--param k=v`). trust_labels: keep labels a format
    carries even when they disagree with the base set (the disagreement count is recorded).
    Raises `DataError` naming the offending file; `out` is only created when everything passed.

    Example: `import_dataset("rem-pkl", "rem.pkl", "cifar10", "runs/rem")`.
    """
    path, out = Path(path), Path(out)
    check_out_dir(out, overwrite)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    reads = [("the released data", path), *(("the base set", p) for p in read_paths(base))]
    refuse_overlap(out, reads)
    name = detect_format(path) if fmt == "auto" else fmt
    if name not in IMPORTERS:
        raise UnlearnableError(f"unknown import format {fmt!r} (known: auto, {', '.join(IMPORTERS)})")
    imp = IMPORTERS[name]
    opts = from_params(imp.params, params)
    clean, base_ref = resolve_base(base, data_root)
    refuse_overlap(out, [("the base set", p) for p in read_paths(base, clean.meta)])  # found by name
    got = imp.fn(path, clean, opts, progress_enabled(progress))
    protected, aligned, label_info = _verify(got, clean, path, trust_labels)
    stats = perturbation_stats(protected.images, aligned.images, protected.labels)
    manifest = {
        "method": f"import:{name}",
        "params": to_dict(opts),
        "source": {"format": name, "format_detected": fmt == "auto", "path": str(path.resolve()),
                   "files": [str(f.resolve()) for f in got.sources]},
        "base": {"name": base_ref, "num_samples": len(clean)},
        "verification": {
            "base": base_ref,
            "num_samples": len(protected),
            "base_num_samples": len(clean),
            "full_base": len(protected) == len(clean),
            "images_changed": stats["images_changed"],
            "class_wise": stats["class_wise"],
            "perturbation": {k: stats[k] for k in ("linf_max", "linf_mean", "l2_mean", "l2_max")},
            "labels": label_info,
            "source_sha256": {_rel(f, path): sha256_file(f) for f in got.sources},
            **got.details,
        },
    }
    return save_dataset(out, protected, manifest, base=aligned, overwrite=overwrite)


def _rel(f: Path, root: Path) -> str:
    try:
        return str(f.resolve().relative_to(root.resolve() if root.is_dir() else root.resolve().parent))
    except ValueError:
        return str(f.resolve())


def _verify(got: Imported, base: ImageSet, path: Path, trust_labels: bool
            ) -> tuple[ImageSet, ImageSet, dict[str, Any]]:
    """Check an importer's output against the base set; build the protected and aligned sets."""
    where = got.sources[0] if got.sources else path
    x = got.images
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
        raise RuntimeError(f"importer returned {describe(x)}, expected uint8 NHWC")  # a bug, not input
    if x.shape[1:] != base.images.shape[1:]:
        raise DataError(where, f"images of shape {x.shape[1:]} (H, W, C), the base set's are "
                               f"{base.images.shape[1:]}")
    idx = np.asarray(got.indices, dtype=np.int64)
    if idx.shape != (len(x),):
        raise DataError(where, f"{len(x)} images but {idx.shape} indices")
    if len(idx) == 0:
        raise DataError(where, "no images")
    if idx.min() < 0 or idx.max() >= len(base):
        bad = int(idx[(idx < 0) | (idx >= len(base))][0])
        raise DataError(where, f"index {bad} is outside the base set (0..{len(base) - 1})")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise DataError(where, f"index {int(uniq[counts > 1][0])} appears {int(counts.max())} times")
    base_labels = base.labels[idx]
    info: dict[str, Any] = {"from": "base", "disagreements": 0}
    labels = base_labels
    if got.labels is not None:
        src = got.labels_source or where
        lab = np.asarray(got.labels)
        if lab.shape != (len(x),):
            raise DataError(src, f"{lab.shape} labels for {len(x)} images")
        if len(lab) and (lab.min() < 0 or lab.max() >= base.num_classes):
            raise DataError(src, f"labels range over [{lab.min()}, {lab.max()}] but the base set "
                                 f"has {base.num_classes} classes")
        wrong = np.flatnonzero(lab != base_labels)
        info = {"from": "file", "file": src.name, "disagreements": int(len(wrong))}
        if len(wrong) and not trust_labels:
            i = int(wrong[0])
            raise DataError(src, f"{len(wrong)} of {len(lab)} labels disagree with the base set (first: "
                                 f"base index {int(idx[i])} is {lab[i]} here, {base_labels[i]} in the base); "
                                 f"the sample order probably differs; --trust-labels keeps these labels")
        labels = lab.astype(np.int64)
    protected = ImageSet(x, labels, list(base.classes), base.name, idx)
    aligned = base.subset(idx)
    return protected, aligned, info
