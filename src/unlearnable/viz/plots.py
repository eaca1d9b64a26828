"""Figures of the analyses: rows of a linear model as images (the paper's Fig. 3) and DFR
curves (Fig. 2). matplotlib with the Agg backend; every PNG is written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_file


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display), imported on first use:
    matplotlib takes about a second to import, and most commands draw nothing."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 120, tight: bool = True) -> Path:
    """Render `fig` to PNG in memory (cropped to what is drawn unless not `tight`), then write it
    atomically; closes the figure."""
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    with atomic_file(path, "wb") as f:
        f.write(buf.getvalue())
    return Path(path)


def rows_as_images(rows: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """(K, C*H*W) channel-major rows -> (K, H, W, C) images, each min-max scaled to [0, 1] on its
    own (a row's sign and scale are arbitrary; its pattern is what shows)."""
    r = np.asarray(rows, dtype=np.float64).reshape(len(rows), *chw)
    lo = r.min(axis=(1, 2, 3), keepdims=True)
    span = r.max(axis=(1, 2, 3), keepdims=True) - lo
    r = (r - lo) / np.where(span > 0, span, 1.0)
    return r.transpose(0, 2, 3, 1)


def plot_weight_rows(rows: np.ndarray, chw: tuple[int, int, int], titles: Sequence[str],
                     path: str | os.PathLike[str], suptitle: str = "", max_cols: int = 10) -> Path:
    """One image per row of `rows` (K, C*H*W), min-max scaled, titled (e.g. by class name).

    With K > 100 only the first 100 rows are drawn (a figure of CIFAR-100's rows stays readable).
    """
    plt = pyplot()
    imgs = rows_as_images(rows[:100], chw)
    k = len(imgs)
    cols = min(max_cols, max(k, 1))
    nrows = max(1, -(-k // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(1.3 * cols, 1.5 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < k:
            img = imgs[i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_title(str(titles[i]) if i < len(titles) else str(i), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return save_figure(fig, path)


def plot_dfr_curve(curve: Sequence[dict[str, Any]], random_init_accuracy: float,
                   path: str | os.PathLike[str], title: str = "") -> Path:
    """The paper's Fig. 2: standard clean test accuracy and DFR test accuracy per epoch (in %),
    with the DFR accuracy of a randomly initialized network as a horizontal line."""
    plt = pyplot()
    epochs = [r["epoch"] for r in curve]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    std = [(e, r["test_accuracy"]) for e, r in zip(epochs, curve) if r.get("test_accuracy") is not None]
    if std:
        ax.plot([e for e, _ in std], [100 * a for _, a in std], "o-", ms=3, label="standard training")
    ax.plot(epochs, [100 * r["dfr_accuracy"] for r in curve], "s-", ms=3, label="DFR (clean head)")
    ax.axhline(100 * random_init_accuracy, color="grey", ls="--", label="DFR, random init")
    ax.set_xlabel("epoch")
    ax.set_ylabel("clean test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
