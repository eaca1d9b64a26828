"""How a file names other data: a registered name as is, a path relative to the file itself.

    record_ref("imagefolder:../photos", out_dir)   # -> "imagefolder:../../photos" (from out_dir)
    follow_ref(name, manifest_path)                # -> the path it names, resolved from the manifest

A protected set's manifest names its base dataset, and `load_data` follows it to the clean test
split. A path there used to be resolved against the current directory, so one audit run from two
directories read two different bases and gave two verdicts. Now a path is written relative to the
file that names it and read the same way, so a set and its base can move together. An absolute
path or a URL inside a downloaded file would make the toolkit read whatever its author chose;
it is refused unless the user allows it (`ALLOW_ENV`) or names the base themselves (`--clean`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import DataError

ALLOW_ENV = "UNLEARNABLE_ALLOW_ABSOLUTE_PATHS"
IMAGEFOLDER = "imagefolder:"


def is_path_ref(name: str) -> bool:
    """Whether `name` names files (an image folder, a directory, a URL) rather than a registered
    dataset: what `load_data` would take for a path, judged from the text alone."""
    return name.startswith((IMAGEFOLDER, ".", os.sep)) or os.sep in name or "://" in name


def _split(name: str) -> tuple[str, str]:
    return (IMAGEFOLDER, name[len(IMAGEFOLDER):]) if name.startswith(IMAGEFOLDER) else ("", name)


def record_ref(name: str, where: str | os.PathLike[str]) -> str:
    """What a file in directory `where` records for the data the user called `name`: a registered
    name as typed, a path (or a directory in the current one) relative to `where`."""
    bare = Path(name)
    # A bare word is a path only where `load_data` takes it for one: a dataset or image folder
    # here ("./fashion-mnist" holding raw IDX files does not shadow the registered name).
    if "://" in name or not (is_path_ref(name) or (bare / "manifest.json").is_file() or (bare / "train").is_dir()):
        return name
    prefix, path = _split(name)
    rel = os.path.relpath(Path(path).resolve(), Path(where).resolve())
    return prefix + (rel if rel.startswith(".") else f".{os.sep}{rel}")  # "./x": a path, never a name


def follow_ref(name: str, file: str | os.PathLike[str], absolute_ok: bool = False) -> str:
    """The data that `file` (a manifest) names as `name`, resolved from `file`'s directory; a
    URL, or an absolute path unless `absolute_ok` (a record this toolkit wrote of what its user
    typed, such as run.json) or $UNLEARNABLE_ALLOW_ABSOLUTE_PATHS=1, is a DataError naming `file`."""
    if not is_path_ref(name):
        return name
    if "://" in name:
        raise DataError(file, f"names the URL {name!r} as its base; a dataset's files are never fetched "
                              "from what a manifest says (pass --clean DATA)")
    prefix, path = _split(name)
    if os.path.isabs(path):
        if absolute_ok or os.environ.get(ALLOW_ENV) == "1":
            return name
        raise DataError(file, f"names the absolute path {path!r} as its base; a dataset names its base relative "
                              f"to itself (pass --clean {name}, or set {ALLOW_ENV}=1 to follow it)")
    return prefix + str((Path(file).parent / path).resolve())
