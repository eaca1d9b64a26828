"""Formats that release the perturbation δ, not the images: added to the clean base set here.

Each importer reproduces, operation for operation and dtype for dtype, how the loader the
paper used (psandovalsegura/learn-from-unlearnable, `datasets.py`) turns the released δ into
8-bit images, so an import is byte-identical to what was trained on:

    ue-pt    float32: x + clamp(δ*255, -255, 255), clip to [0, 255], truncate to uint8
    rem-pkl  int16:   x + δ (int8 grey levels), clip to [0, 255]
    ops-npy  float64: clip(x/255 + δ, 0, 1) * 255, truncate
    lsp-npy  float64: clip((x/255 + δ) * 255, 0, 255), truncate

Truncation (`astype(uint8)`), not rounding, is what those loaders do; values pushed past the
range are clipped (as every original does) and counted in the manifest.
Work is chunked so a 50,000-image float64 copy of the dataset is never made.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError, UnlearnableError, one_line
from ..core.safe import DEFAULT_MAX_BYTES, check_bytes, open_regular
from ..data.imageset import ImageSet
from ..data.store import load_npy
from ..data.unpickle import restricted_load_file
from .base import (
    Imported, NoParams, check_finite, chunks, describe, find_one, per_sample_or_class, register_importer,
    require_float,
)
from .images import array_limit


def _has(path: Path, *patterns: str) -> bool:
    if path.is_file():
        return any(path.match(p) for p in patterns)
    return path.is_dir() and any(next(path.glob(p), None) is not None for p in patterns)


def _apply(base: ImageSet, delta: np.ndarray, kind: str, step) -> tuple[np.ndarray, int]:
    """Run `step(x_uint8_chunk, delta_chunk) -> (uint8 chunk, clipped count)` over the base set.

    kind "sample": delta[i] belongs to base image i; "class": delta[label]; "universal": delta.
    """
    out = np.empty_like(base.images)
    clipped = 0
    for sl in chunks(len(base)):
        if kind == "sample":
            d = delta[sl]
        elif kind == "class":
            d = delta[base.labels[sl]]
        else:
            d = delta[None]
        out[sl], c = step(base.images[sl], d)
        clipped += c
    return out, clipped


# ---------------------------------------------------------------------------------------------
# Unlearnable Examples: perturbation.pt, float (N|K, C, H, W) in [0, 1] units

@dataclass
class UEParams:
    """mode: auto (N images -> sample-wise, K classes -> class-wise), samplewise or classwise.
    noise_range: "signed" clamps δ to [-1, 1] as the paper's loader does; "nonnegative" clamps it
    to [0, 1] first, reproducing the UE repository's own loader (which drops the negative half of
    the noise; HanxunH/Unlearnable-Examples issue #13)."""

    mode: str = "auto"
    noise_range: str = "signed"


def load_torch_tensor(f: Path, max_bytes: int = DEFAULT_MAX_BYTES):
    """A tensor from a torch file, loaded with weights_only=True (no code can run).

    torch allocates each record of its zip archive at the size the zip directory declares and
    inflates compressed ones, so those sizes are checked against `max_bytes` first.
    """
    try:
        with open_regular(f) as fh:
            size = os.fstat(fh.fileno()).st_size
            if zipfile.is_zipfile(fh):
                fh.seek(0)
                with zipfile.ZipFile(fh) as z:
                    size = sum(i.file_size for i in z.infolist())
            check_bytes(f, size, max_bytes, "its contents")
            fh.seek(0)
            obj = torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph of advice; the line naming the global is the fact.
        lines = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "global" in ln]
        why = lines[0][:200] if lines else type(e).__name__
        raise DataError(f, f"refused by weights_only=True: holds Python objects, not only tensors ({why})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError, KeyError, IndexError,
            OverflowError, MemoryError, RecursionError, zipfile.BadZipFile) as e:
        raise DataError(f, f"not a readable torch file ({type(e).__name__}: {one_line(e, 160)})") from None
    if not isinstance(obj, torch.Tensor):
        raise DataError(f, f"holds a {type(obj).__name__}, expected one tensor")
    return obj


@register_importer(
    "ue-pt", UEParams, lambda p: _has(p, "*.pt", "*.pth"),
    "Unlearnable Examples: torch file of δ in [0, 1] units, (N, C, H, W) sample-wise or (K, C, H, W) class-wise",
    "Huang et al., Unlearnable Examples, ICLR 2021 (arXiv 2101.04898)")
def import_ue(path: Path, base: ImageSet, p: UEParams, progress: bool) -> Imported:
    """Unlearnable Examples' release: one torch tensor (perturbation.pt) of δ in [0, 1] units,
    (N, C, H, W) sample-wise or (K, C, H, W) class-wise, added to the base set as its loader does."""
    f = find_one(path, ("perturbation.pt", "*.pt", "*.pth"), "torch (.pt)")
    t = load_torch_tensor(f, array_limit(base))
    if p.noise_range not in {"signed", "nonnegative"}:
        raise UnlearnableError(f"noise_range must be signed or nonnegative, got {p.noise_range!r}")
    if not torch.is_floating_point(t):
        raise DataError(f, f"perturbation must be floating point, got {t.dtype}")
    if t.ndim != 4 or tuple(t.shape[1:]) != base.chw:
        raise DataError(f, f"perturbation of shape {tuple(t.shape)}, expected (N or K, C, H, W) with "
                           f"(C, H, W) = {base.chw} from the base set")
    if not bool(torch.isfinite(t).all()):
        raise DataError(f, "holds NaN or infinite values")
    kind = per_sample_or_class(t, base, f, p.mode)
    lo = -255 if p.noise_range == "signed" else 0
    # In the tensor's own dtype, as `noise.mul(255).clamp_(lo, 255)` does, then NHWC.
    noise = t.mul(255).clamp_(lo, 255).permute(0, 2, 3, 1).numpy()

    def step(x: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, int]:
        y = x.astype(np.float32)
        np.add(y, d, out=y, casting="same_kind")  # the loader's float32 `data[i] += noise`
        c = int(((y < 0) | (y > 255)).sum())
        np.clip(y, 0, 255, out=y)
        return y.astype(np.uint8), c

    images, clipped = _apply(base, noise, kind, step)
    return Imported(images, np.arange(len(base)), [f], details={
        "perturbation_kind": "class-wise" if kind == "class" else "sample-wise",
        "perturbation_file_shape": list(t.shape), "perturbation_file_dtype": str(t.dtype),
        "values_clipped": clipped, "quantization": "truncate (astype uint8) after float32 add",
    })


# ---------------------------------------------------------------------------------------------
# Robust Unlearnable Examples: a pickle of an int8 (N, C, H, W) array of grey levels

@register_importer(
    "rem-pkl", NoParams, lambda p: _has(p, "*.pkl", "*.pickle"),
    "Robust UE: pickle of an int8 (N, C, H, W) array of δ in grey levels (restricted unpickler)",
    "Fu et al., Robust Unlearnable Examples, ICLR 2022 (arXiv 2203.14533)")
def import_rem(path: Path, base: ImageSet, p: NoParams, progress: bool) -> Imported:
    """Robust UE's release: a pickle (read by a restricted unpickler) of one int8 (N, C, H, W)
    array of δ in grey levels, one per base image, added in integers and clipped."""
    f = find_one(path, ("*.pkl", "*.pickle"), "pickle (.pkl)")
    a = restricted_load_file(f, max_bytes=array_limit(base))
    if not isinstance(a, np.ndarray):
        raise DataError(f, f"holds a {type(a).__name__}, expected an int8 array")
    if a.dtype != np.int8:
        raise DataError(f, f"expected an int8 array of grey levels, got {describe(a)}")
    if a.ndim != 4 or a.shape[1:] != base.chw:
        raise DataError(f, f"perturbation of shape {a.shape}, expected (N, C, H, W) with (C, H, W) = {base.chw}")
    if len(a) != len(base):
        raise DataError(f, f"{len(a)} perturbations but the base set has {len(base)} images")
    noise = a.transpose(0, 2, 3, 1)

    def step(x: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, int]:
        y = x.astype(np.int16) + d.astype(np.int16)
        c = int(((y < 0) | (y > 255)).sum())
        return y.clip(0, 255).astype(np.uint8), c

    images, clipped = _apply(base, noise, "sample", step)
    return Imported(images, np.arange(len(base)), [f], details={
        "perturbation_kind": "sample-wise", "perturbation_file_shape": list(a.shape),
        "values_clipped": clipped, "quantization": "exact (integer grey levels)",
    })


# ---------------------------------------------------------------------------------------------
# One-Pixel Shortcut: perturbation.npy, HWC in [0, 1] units

@dataclass
class OPSParams:
    """mode: auto (N images -> sample-wise, K classes -> class-wise), samplewise or classwise.
    A 3-d (H, W, C) array is one universal perturbation added to every image."""

    mode: str = "auto"


@register_importer(
    "ops-npy", OPSParams, lambda p: _has(p, "perturbation.npy"),
    "One-Pixel Shortcut: perturbation.npy of δ in [0, 1] units, (N|K, H, W, C) or universal (H, W, C); added",
    "Wu et al., One-Pixel Shortcut, ICLR 2023 (arXiv 2205.12141)")
def import_ops(path: Path, base: ImageSet, p: OPSParams, progress: bool) -> Imported:
    """One-Pixel Shortcut's release: perturbation.npy of float δ in [0, 1] units, (N|K, H, W, C)
    sample- or class-wise or (H, W, C) universal, added to the base set as its loader does."""
    f = find_one(path, ("perturbation.npy",), "perturbation.npy")
    a = load_npy(f, mmap=True, max_bytes=array_limit(base))
    require_float(a, f, "the perturbation")
    hwc = base.images.shape[1:]
    if a.ndim == 3 and a.shape == hwc:
        kind = "universal"
    elif a.ndim == 4 and a.shape[1:] == hwc:
        kind = per_sample_or_class(a, base, f, p.mode)
    else:
        raise DataError(f, f"perturbation of shape {a.shape}, expected (N or K, H, W, C) or (H, W, C) "
                           f"with (H, W, C) = {hwc} from the base set")
    check_finite(a, f)

    def step(x: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, int]:
        # The OPS loader: data / 255 (float64) + δ, clip to [0, 1], np.uint8(img * 255).
        y = x / 255 + d
        c = int(((y < 0) | (y > 1)).sum())
        np.clip(y, 0, 1, out=y)
        return np.uint8(y * 255), c

    images, clipped = _apply(base, a, kind, step)
    return Imported(images, np.arange(len(base)), [f], details={
        "perturbation_kind": {"sample": "sample-wise", "class": "class-wise"}.get(kind, "universal"),
        "perturbation_file_shape": list(a.shape), "perturbation_file_dtype": str(a.dtype),
        "values_clipped": clipped, "quantization": "truncate (np.uint8) after float64 add",
    })


# ---------------------------------------------------------------------------------------------
# Linear separable (synthetic) perturbations: simple_data.npy + simple_label.npy

@register_importer(
    "lsp-npy", NoParams, lambda p: _has(p, "simple_data.npy"),
    "LSP: simple_data.npy (M, H, W, C) δ in [0, 1] units + simple_label.npy; the k-th δ of class c "
    "goes to the k-th base image of class c",
    "Yu et al., Availability Attacks Create Shortcuts, KDD 2022 (arXiv 2111.00898)")
def import_lsp(path: Path, base: ImageSet, p: NoParams, progress: bool) -> Imported:
    """LSP's release: simple_data.npy, float (M, H, W, C) δ in [0, 1] units, and simple_label.npy
    beside it; the k-th δ of class c goes to the k-th base image of class c (extra δ unused)."""
    f = find_one(path, ("simple_data.npy",), "simple_data.npy")
    fl = f.with_name("simple_label.npy")
    data = load_npy(f, mmap=True, max_bytes=array_limit(base))
    lab = load_npy(fl, max_bytes=array_limit(base))
    require_float(data, f, "simple_data")
    hwc = base.images.shape[1:]
    if data.ndim != 4 or data.shape[1:] != hwc:
        raise DataError(f, f"shape {data.shape}, expected (M, H, W, C) with (H, W, C) = {hwc} from the base set")
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer) or len(lab) != len(data):
        raise DataError(fl, f"expected {len(data)} integer labels, got {describe(lab)}")
    check_finite(data, f)
    # Which δ each base image gets: class by class, in order, as the LSP code assigns them.
    take = np.empty(len(base), np.int64)
    for k in range(base.num_classes):
        mine = np.flatnonzero(base.labels == k)
        have = np.flatnonzero(lab == k)
        if len(have) < len(mine):
            raise DataError(fl, f"class {k} has {len(mine)} base images but only {len(have)} perturbations")
        take[mine] = have[:len(mine)]

    def step(x: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, int]:
        y = (x.astype(np.float64) / 255.0 + d) * 255
        c = int(((y < 0) | (y > 255)).sum())
        return np.clip(y, 0, 255).astype(np.uint8), c

    out = np.empty_like(base.images)
    clipped = 0
    for sl in chunks(len(base)):
        out[sl], c = step(base.images[sl], data[take[sl]])
        clipped += c
    return Imported(out, np.arange(len(base)), [f, fl], details={
        "perturbation_kind": "sample-wise (assigned per class, in order)",
        "perturbation_file_shape": list(data.shape), "perturbations_unused": int(len(data) - len(base)),
        "values_clipped": clipped, "quantization": "truncate (astype uint8) after float64 add",
    })
