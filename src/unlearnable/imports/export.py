"""Export a dataset to the layouts other tools read; each round-trips through `import_dataset`.

    png-folder   OUT/data/{index}.png + OUT/labels.csv (the released poisons' layout)
    imagefolder  OUT/CLASS/{index}.png (torchvision ImageFolder; the index keeps the alignment)
    npz          OUT/dataset.npz with images (uint8 NHWC), labels, indices

Every export writes OUT/export.json (what was exported, its checksums, versions) and is atomic.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.errors import UnlearnableError
from ..core.files import atomic_dir, check_out_dir, refuse_overlap, write_json
from ..core.hashing import sha256_array
from ..core.progress import bar
from ..core.provenance import now_iso, versions
from ..data.imageset import ImageSet
from ..data.resolve import load_data, read_paths
from .images import class_dir_name


def _save_png(img: np.ndarray, f: Path) -> None:
    Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(f, format="PNG")


def _bar(items: Any, desc: str, progress: bool | None) -> Any:
    return bar(items, total=len(items) if hasattr(items, "__len__") else None, desc=desc, progress=progress)


def _png_folder(ds: ImageSet, tmp: Path, progress: bool | None) -> None:
    (tmp / "data").mkdir()
    for i in _bar(range(len(ds)), "write PNG", progress):
        _save_png(ds.images[i], tmp / "data" / f"{ds.indices[i]}.png")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "label", "class"])
    w.writerows(zip(ds.indices.tolist(), ds.labels.tolist(), (ds.classes[k] for k in ds.labels)))
    (tmp / "labels.csv").write_text(buf.getvalue())


def _imagefolder(ds: ImageSet, tmp: Path, progress: bool | None) -> None:
    names = [class_dir_name(c) for c in ds.classes]
    if len(set(names)) != len(names):
        raise UnlearnableError(f"class names collide as folder names: {names}")
    for n in names:
        (tmp / n).mkdir()
    for i in _bar(range(len(ds)), "write PNG", progress):
        _save_png(ds.images[i], tmp / names[ds.labels[i]] / f"{ds.indices[i]}.png")


def _npz(ds: ImageSet, tmp: Path, progress: bool | None) -> None:
    with open(tmp / "dataset.npz", "wb") as f:
        np.savez(f, images=ds.images, labels=ds.labels, indices=ds.indices)


EXPORTERS: dict[str, Callable[[ImageSet, Path, bool | None], None]] = {
    "png-folder": _png_folder,
    "imagefolder": _imagefolder,
    "npz": _npz,
}


def export_dataset(
    src: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    progress: bool | None = None,
    data_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write dataset `src` (a dataset directory or name) to `out` in format `fmt` (EXPORTERS).

    File names carry each image's index in the base set, so `import_dataset(fmt, out, base)`
    gives back the same images, labels and indices. Example:
    `export_dataset("runs/lsp", "png-folder", "runs/lsp-png")`.
    """
    if fmt not in EXPORTERS:
        raise UnlearnableError(f"unknown export format {fmt!r} (known: {', '.join(EXPORTERS)})")
    check_out_dir(out, overwrite)
    refuse_overlap(out, [("the dataset", p) for p in read_paths(src)])
    ds = load_data(src, "train", data_root)
    refuse_overlap(out, [("the dataset", p) for p in read_paths(src, ds.meta)])
    if len(np.unique(ds.indices)) != len(ds):
        raise UnlearnableError(f"{src}: indices repeat, so {{index}}.png names would collide")
    man = ds.meta.get("manifest", {})
    record = {
        "format": fmt,
        "source": str(Path(src).resolve()) if Path(str(src)).exists() else str(src),
        "source_method": man.get("method"),
        "source_images_sha256": sha256_array(ds.images),
        "base": man.get("base", {}).get("name"),
        "num_samples": len(ds),
        "image_shape_hwc": list(ds.images.shape[1:]),
        "classes": list(ds.classes),
        "created": now_iso(),
        "versions": versions(),
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        EXPORTERS[fmt](ds, tmp, progress)
        write_json(tmp / "export.json", record)
    return Path(out)
