"""Download a registered dataset from its official source, checked against published checksums.

    unlearnable datasets --download cifar10        # the command
    download("cifar10")                            # ROOT/cifar-10-batches-py, verified

Every file is checked against its SHA-256 (and MD5 where one is published) before anything is
put in place; archives are unpacked with every member checked; a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from ..core.errors import DataError, UnlearnableError
from ..core.files import REPLACE, put_in_place, remove_stale, temp_prefix
from ..core.progress import bar
from ..core.safe import check_bytes
from .resolve import locate, user_cache_root
from .sources import Download, Source, get_source

# The largest official download (cifar-100-python.tar.gz) is 169 MB; a server sending more is
# not sending it.
MAX_DOWNLOAD_BYTES = 2 << 30
# Unpacked, the CIFAR archives hold under 200 MB.
MAX_EXTRACT_BYTES = 4 << 30


def default_download_root() -> Path:
    """Where `download` puts data when no root is given: the first $UNLEARNABLE_DATA entry, else
    the user cache (searched last, so downloaded data is found without any setting)."""
    env = [p for p in os.environ.get("UNLEARNABLE_DATA", "").split(os.pathsep) if p]
    return Path(env[0]) if env else user_cache_root()


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
    # Named as every temporary of `dest` is, so a killed download's leftovers go with the next one.
    remove_stale(dest)
    stage = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".tmp", dir=root))
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
                    put_in_place(top, root / top.name, REPLACE)
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
    errors = []
    for url in (dl.url, *dl.mirrors):
        tmp = stage / dl.filename
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0) or None
                got = 0
                with bar(total=total, desc=dl.filename, progress=progress, unit="B", unit_scale=True) as b:
                    while block := r.read(1 << 20):
                        got += len(block)
                        if got > MAX_DOWNLOAD_BYTES:
                            raise ValueError(f"sent more than {MAX_DOWNLOAD_BYTES} bytes; stopped")
                        f.write(block)
                        b.update(len(block))
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
