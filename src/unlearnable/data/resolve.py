"""Turn what a user typed (`fashion-mnist`, `cifar10`, `./runs/lsp`, `imagefolder:/data/x`) into data.

Search order for a registered dataset: `--data-root`, then `$UNLEARNABLE_DATA` (a list, like
$PATH), then the well-known system locations (Debian's dataset packages), then the user cache
(~/.cache/unlearnable/data, where `unlearnable datasets --download NAME` puts data by default).
Under each root the dataset's files may sit in the root itself or in one of its usual folder
names (fashion-mnist/, FashionMNIST/raw/, cifar-10-batches-py/, ...). A protected-dataset
directory names its base dataset in its manifest, which is how its clean test set and clean
images are found.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import DataError, UnlearnableError
from ..core.hashing import sha256_array
from ..core.safe import check_bytes
from .imageset import ImageSet
from .sources import DATASETS, Download, Source, load_image_folder
from .store import is_dataset_dir, load_dataset_dir, read_manifest

# How many protected sets may stand between a set and the clean data it names (a set made from
# an imported set is 2); a longer chain is taken for a loop made through links or mounts.
MAX_BASE_CHAIN = 16
# The largest official download (cifar-100-python.tar.gz) is 169 MB; a server sending more is
# not sending it.
MAX_DOWNLOAD_BYTES = 2 << 30
# Unpacked, the CIFAR archives hold under 200 MB.
MAX_EXTRACT_BYTES = 4 << 30


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


def get_source(name: str) -> Source:
    key = name.lower()
    if key not in DATASETS:
        known = ", ".join(sorted({s.name for s in DATASETS.values()}))
        raise UnlearnableError(f"unknown dataset {name!r} (known: {known}; or give a dataset directory)")
    return DATASETS[key]


def load_source(name: str, split: str = "train", data_root: str | os.PathLike[str] | None = None) -> ImageSet:
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


def _next_base(here: Path, man: dict, seen: tuple[Path, ...]) -> str | None:
    """The base `here`'s manifest names, refused when it leads back into the chain `seen`."""
    name = (man.get("base") or {}).get("name")
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
                _next_base(here, ds.meta["manifest"], seen)
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
    man = ds.meta.get("manifest", {})
    name = man.get("base", {}).get("name")
    if not name:
        raise DataError(Path(ds.meta.get("path", ds.name)) / "manifest.json", "manifest names no base dataset")
    return name


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


def default_download_root() -> Path:
    """Where `download` puts data when no root is given: the first $UNLEARNABLE_DATA entry, else
    the user cache (searched last, so downloaded data is found without any setting)."""
    env = [p for p in os.environ.get("UNLEARNABLE_DATA", "").split(os.pathsep) if p]
    return Path(env[0]) if env else user_cache_root()


def user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unlearnable" / "data"


def download(name: str, root: str | os.PathLike[str] | None = None, progress: bool | None = None) -> Path:
    """Fetch dataset `name` from its official source into `root` and return the directory the
    loader reads (ROOT/<name's folder>, e.g. ROOT/cifar-10-batches-py).

    Every file is checked against its published SHA-256 (and MD5 where one is published) before
    anything is put in place: files arrive in a temporary folder under `root`, archives are
    unpacked there (regular files only, no absolute or `..` paths), and only a complete, verified
    download is moved into place. A failure leaves nothing behind. Files already present with the
    right checksum are not fetched again. `file://` URLs work too (how the tests run offline).
    """
    src = get_source(name)
    if not src.downloads:
        raise UnlearnableError(f"no download known for {src.name!r}: {src.how_to_get}")
    root = Path(root) if root is not None else default_download_root()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / src.dirnames[0]
    stage = Path(tempfile.mkdtemp(prefix=f".download-{src.name}-", dir=root))
    try:
        fetched: list[tuple[Download, Path]] = []
        for dl in src.downloads:
            final = (root if dl.extract else dest) / dl.filename
            if final.is_file() and _mismatch(final, dl) is None:
                fetched.append((dl, final))
                continue
            fetched.append((dl, _fetch(dl, stage, src, progress)))
        # Everything is verified: put it in place.
        for dl, path in fetched:
            if dl.extract:
                unpacked = stage / "unpacked"
                _safe_extract(path, unpacked)
                for top in sorted(unpacked.iterdir()):
                    _replace(top, root / top.name)
                if path.parent == stage:
                    os.replace(path, root / dl.filename)
            elif path.parent == stage:
                dest.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest / dl.filename)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    where = locate(src, root)
    if where is None:
        raise DataError(dest, f"downloaded and verified, but the files {src.name} needs are not there")
    return where


def _fetch(dl: Download, stage: Path, src: Source, progress: bool | None) -> Path:
    """Download `dl` into `stage`, trying its mirrors in turn; the verified file's path."""
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    errors = []
    for url in (dl.url, *dl.mirrors):
        tmp = stage / dl.filename
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0) or None
                got = 0
                with tqdm(total=total, unit="B", unit_scale=True, desc=dl.filename, disable=not show,
                          leave=False) as bar:
                    while block := r.read(1 << 20):
                        got += len(block)
                        if got > MAX_DOWNLOAD_BYTES:
                            raise ValueError(f"sent more than {MAX_DOWNLOAD_BYTES} bytes; stopped")
                        f.write(block)
                        bar.update(len(block))
        except (OSError, ValueError) as e:  # URLError and socket errors are OSErrors
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        bad = _mismatch(tmp, dl)
        if bad is None:
            return tmp
        tmp.unlink()
        errors.append(f"{url}: {bad}")
    if all("mismatch" in e for e in errors):
        raise DataError(dl.url, f"{'; '.join(errors)}; nothing kept")
    raise UnlearnableError(f"download of {dl.filename} failed ({'; '.join(errors)}); "
                           f"the network may be off: {src.how_to_get}")


def _mismatch(path: Path, dl: Download) -> str | None:
    """None when `path` has `dl`'s checksums, else what differs."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            md5.update(block)
    if sha.hexdigest() != dl.sha256.lower():
        return f"SHA-256 mismatch (got {sha.hexdigest()}, expected {dl.sha256})"
    if dl.md5 and md5.hexdigest() != dl.md5.lower():
        return f"MD5 mismatch (got {md5.hexdigest()}, expected {dl.md5})"
    return None


def _safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a tar archive's regular files into `dest`, keeping their relative paths.

    Links, devices and any member whose path is absolute or climbs out with `..` are refused:
    the archive was checksum-verified, but a reader of untrusted archives should not depend on it.
    So is unpacking more than MAX_EXTRACT_BYTES, judged by each member's declared size first.
    """
    total = 0
    try:
        with tarfile.open(archive) as tar:
            for m in tar:
                parts = Path(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise DataError(archive, f"refused archive member with unsafe path {m.name!r}")
                if m.isdir():
                    continue
                if not m.isfile():
                    raise DataError(archive, f"refused archive member {m.name!r} (not a regular file)")
                total += m.size
                check_bytes(archive, total, MAX_EXTRACT_BYTES, "unpacking it")
                out = dest.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                f = tar.extractfile(m)
                with f, open(out, "wb") as o:
                    shutil.copyfileobj(f, o)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(archive, f"unreadable archive ({e})") from None


def _replace(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing whatever is there only once `new` is in hand."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    else:
        os.replace(new, target)


def random_subset(ds: ImageSet, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of `n` samples (uniform, not stratified)."""
    if n > len(ds):
        raise UnlearnableError(f"asked for {n} samples but {ds.name or 'the dataset'} has {len(ds)}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(ds), size=n, replace=False))
