"""The audit's own figures: sample grid (clean / protected / perturbation / recovered) and
separability bars. The DFR curve and the weight rows come from the analyses themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attacks.ortho_proj import project, projection_basis
from ..data.imageset import ImageSet
from ..data.store import load_npy
from ..viz.grid import amplify
from ..viz.plots import pyplot, save_figure


def _show(ax: Any, img: np.ndarray) -> None:
    if img.shape[2] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def samples_figure(protected: ImageSet, base: ImageSet | None, weights: Path | None, out: Path,
                   max_classes: int = 10) -> str | None:
    """Per class (first `max_classes`), its first image: clean, protected, the perturbation
    (amplified), and the protected image after orthogonal projection (when W is known)."""
    classes = [k for k in range(min(protected.num_classes, max_classes)) if (protected.labels == k).any()]
    if not classes:
        return None
    idx = np.array([np.flatnonzero(protected.labels == k)[0] for k in classes])
    prot = protected.images[idx]
    cols: list[tuple[str, np.ndarray]] = []
    if base is not None:
        cols.append(("clean", base.images[idx]))
    cols.append(("protected", prot))
    if base is not None:
        cols.append(("perturbation (amplified)", amplify(prot.astype(np.int16) - base.images[idx].astype(np.int16))))
    if weights is not None:
        q, _ = projection_basis(torch.from_numpy(load_npy(weights)))
        x = torch.from_numpy(prot).permute(0, 3, 1, 2).float().div(255)
        xr = project(x, q, clip=True)
        cols.append(("recovered (projected)", (xr.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)))
    plt = pyplot()
    fig, axes = plt.subplots(len(classes), len(cols), figsize=(1.6 * len(cols), 1.5 * len(classes)),
                             squeeze=False)
    for r, k in enumerate(classes):
        for c, (title, block) in enumerate(cols):
            _show(axes[r, c], block[r])
            if r == 0:
                axes[r, c].set_title(title, fontsize=8)
            if c == 0:
                axes[r, c].set_ylabel(str(protected.classes[k])[:12], fontsize=8)
    save_figure(fig, out)
    return out.name


def separability_figure(sep: dict[str, dict[str, Any]], num_classes: int, out: Path) -> str:
    """Train accuracy of a linear model on perturbations and on images, against chance."""
    plt = pyplot()
    names = list(sep)
    means = [100 * sep[n]["train_accuracy_mean"] for n in names]
    stds = [100 * (sep[n].get("train_accuracy_std") or 0) for n in names]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.bar(names, means, yerr=stds, color=["#2e86c1", "#884ea0"][: len(names)], capsize=4)
    ax.axhline(100 / num_classes, color="gray", ls="--", lw=1, label="chance")
    ax.set_ylim(0, 105)
    ax.set_ylabel("linear train accuracy (%)")
    ax.set_title("linear separability")
    for i, m in enumerate(means):
        ax.text(i, m + 2, f"{m:.1f}", ha="center", fontsize=8)
    ax.legend(fontsize=8)
    save_figure(fig, out)
    return out.name
