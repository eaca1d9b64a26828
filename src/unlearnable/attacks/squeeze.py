"""Image shortcut squeezing: destroy small perturbations by compressing the training images.

Liu et al., "Image Shortcut Squeezing: Countering Perturbative Availability Poisons with
Compression", ICML 2023, https://arxiv.org/abs/2301.13838 (the APBench defences).
Threat model: the attacker preprocesses every training image (and, with `test=true`, its own
test inputs) and trains normally.

    unlearnable attack jpeg runs/lsp --param quality=10 --out runs/lsp-jpeg
    unlearnable attack bit-depth runs/lsp --param bits=2 --out runs/lsp-bits
    unlearnable attack grayscale runs/lsp --out runs/lsp-grey

Each squeeze is a pure function uint8 NHWC -> uint8 NHWC of the same shape.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..data.imageset import ImageSet
from .base import AttackContext, register_attack, train_transformed


def jpeg_compress(images: np.ndarray, quality: int = 10, workers: int | None = None) -> np.ndarray:
    """JPEG-encode and decode every image with Pillow at `quality`: the same bytes as one
    `Image.save(format="JPEG", quality=quality)` and `Image.open` per image.

    Grey images are coded many at a time as one mosaic (`_jpeg_mosaic`), which gives every image
    the same pixels as coding it alone at a tenth of the CPU (measured: docs/benchmarks.md);
    colour images are coded one by one. Threads run over chunks: Pillow's codec releases the GIL.
    """
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be in [1, 95], got {quality}")
    n = len(images)
    grey = images.shape[3] == 1
    out = np.empty_like(images)
    per_chunk = MOSAIC_IMAGES if grey else max(1, -(-n // 64))

    def work(lo: int) -> None:
        hi = min(lo + per_chunk, n)
        if grey:
            out[lo:hi, ..., 0] = _jpeg_mosaic(images[lo:hi, ..., 0], quality)
        else:
            for i in range(lo, hi):
                out[i] = _jpeg_one(images[i], quality)

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(work, range(0, n, per_chunk)))
    return out


ISS = "Liu et al. ICML 2023, https://arxiv.org/abs/2301.13838"  # the paper of every attack here
MOSAIC_IMAGES = 4096  # grey images per mosaic: a 2048 x 1792 picture for 28 x 28 images


def _jpeg_one(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf))


def _jpeg_mosaic(images: np.ndarray, quality: int) -> np.ndarray:
    """(N, H, W) uint8 grey images through one JPEG of them side by side.

    A grey JPEG codes each 8x8 block on its own (only the lossless DC prediction links blocks),
    and the encoder fills a partial edge block by repeating the last row and column. So each
    image, padded the same way to a multiple of 8 and placed on its own 8-aligned cell, decodes
    to exactly the pixels it gets when coded alone (tests/attacks/test_attacks.py checks it). Colour
    images are not coded this way: the decoder's chroma upsampling reads across cells.
    """
    n, h, w = images.shape
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    cols = max(1, min(n, 2048 // wp))
    rows = -(-n // cols)
    cells = np.zeros((rows * cols, hp, wp), np.uint8)
    cells[:n] = np.pad(images, ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
    mosaic = cells.reshape(rows, cols, hp, wp).transpose(0, 2, 1, 3).reshape(rows * hp, cols * wp)
    dec = _jpeg_one(mosaic, quality)
    return dec.reshape(rows, hp, cols, wp).transpose(0, 2, 1, 3).reshape(-1, hp, wp)[:n, :h, :w]


def bit_depth_reduce(images: np.ndarray, bits: int = 2) -> np.ndarray:
    """Quantize each channel to 2**bits levels spread over [0, 255] (rounding to nearest)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in [1, 8], got {bits}")
    levels = 2 ** bits - 1
    q = np.round(images.astype(np.float32) * (levels / 255.0))
    return np.round(q * (255.0 / levels)).astype(np.uint8)


def grayscale(images: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, repeated over the channels so the model's input shape is unchanged."""
    if images.shape[3] == 1:
        return images.copy()
    luma = images[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    g = np.clip(np.round(luma), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], images.shape[3], axis=3)


@dataclass
class JpegParams:
    """Parameters of the `jpeg` attack: the JPEG quality and whether test inputs are compressed too.
    quality defaults to 10, the JPEG setting of Liu et al.'s image shortcut squeezing."""

    quality: int = 10
    test: bool = False  # also compress the test images (the attacker controls its inference)


@dataclass
class BitDepthParams:
    """Parameters of the `bit-depth` attack: bits kept per channel (default 2: four grey levels) and
    whether test inputs are reduced too."""

    bits: int = 2
    test: bool = False


@dataclass
class GrayscaleParams:
    """Parameters of the `grayscale` attack: whether test inputs are turned grey too (default: no)."""

    test: bool = False


def _one_channel(ds: ImageSet) -> str | None:
    return "grayscale is a no-op on 1-channel data" if ds.channels == 1 else None


@register_attack("jpeg", "JPEG compression of the training images (quality 10)",
                 ISS, params_cls=JpegParams, prior=0.55, family="squeezing", order=40,
                 transforms_test=True)
def jpeg_attack(ctx: AttackContext, p: JpegParams) -> dict[str, Any]:
    """JPEG-compress every training image (and, with test=true, the test images), then train.

    Paper: Liu et al., "Image Shortcut Squeezing: Countering Perturbative Availability Poisons with
        Compression", ICML 2023, https://arxiv.org/abs/2301.13838.
    Threat model: only the protected training set, compressed; with test=true it compresses its own test inputs.
    Args:
        quality (10): JPEG quality of every image, in [1, 95]
        test (False): also compress the test images (the attacker controls its inference)
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), encoded and decoded by Pillow (uint8, same
        shape); returns a dict with test_accuracy (fraction, clean test set), test_loss, train_accuracy,
        seconds_train, attack_params and changed_fraction (of training-image values), and with test=true
        test_accuracy_transformed_test and test_loss_transformed_test.
    Example:
        unlearnable attack jpeg runs/lsp --recipe fast --out runs/lsp-jpeg
    """
    return train_transformed(ctx, lambda im: jpeg_compress(im, p.quality), p)


@register_attack("bit-depth", "bit-depth reduction of the training images (2 bits)",
                 ISS, params_cls=BitDepthParams, prior=0.45, family="squeezing", order=50,
                 transforms_test=True)
def bit_depth_attack(ctx: AttackContext, p: BitDepthParams) -> dict[str, Any]:
    """Reduce every training image to `bits` bits per channel (and, with test=true, the test images), then train.

    Paper: Liu et al., ICML 2023 (as `jpeg`), https://arxiv.org/abs/2301.13838, its bit-depth squeeze.
    Threat model: only the protected training set, quantized; with test=true it quantizes its own test inputs.
    Args:
        bits (2): bits kept per channel, in [1, 8]
        test (False): also reduce the test images (the attacker controls its inference)
    Shapes: ctx.train images uint8 (N, H, W, C), quantized to uint8 of the same shape; the result is
        `train_transformed`'s (test accuracy and loss, changed_fraction, the transformed-test pair).
    Example:
        unlearnable attack bit-depth runs/ar --param bits=3 --out runs/ar-bits3
    """
    return train_transformed(ctx, lambda im: bit_depth_reduce(im, p.bits), p)


@register_attack("grayscale", "grayscale training images (a no-op on 1-channel data, said in the result)",
                 ISS, params_cls=GrayscaleParams, prior=0.3, family="squeezing", order=60,
                 transforms_test=True, applies_to=_one_channel)
def grayscale_attack(ctx: AttackContext, p: GrayscaleParams) -> dict[str, Any]:
    """Turn every training image grey (and, with test=true, the test images), then train.

    Paper: Liu et al., ICML 2023 (as `jpeg`), https://arxiv.org/abs/2301.13838, its grayscale squeeze.
    Threat model: only the protected training set, made grey; with test=true it makes its own test inputs grey.
    Args:
        test (False): also turn the test images grey (the attacker controls its inference)
    Shapes: ctx.train images uint8 (N, H, W, C) with labels int64 (N,), their ITU-R 601 luma repeated over
        the C channels (uint8, same shape); returns a dict with test_accuracy (fraction, clean test set),
        test_loss, train_accuracy, seconds_train, attack_params and changed_fraction (of training-image
        values), with test=true test_accuracy_transformed_test and test_loss_transformed_test, and on
        1-channel data a note (the registry refuses such data, so only a direct call gets there).
    Example:
        unlearnable attack grayscale runs/cifar10-ar --param test=true
    """
    out = train_transformed(ctx, grayscale, p)
    if ctx.train.channels == 1:
        out["note"] = "no-op: the dataset has one channel, so grayscale leaves it unchanged"
    return out
