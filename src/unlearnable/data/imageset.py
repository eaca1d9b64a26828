"""`ImageSet`: the one in-memory type for every dataset, clean or protected.

Images are uint8 NHWC (what files hold, 4x smaller than float32); models and poisons work on
float NCHW in [0, 1], made by `to_tensor` once per dataset, not per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.errors import DataError


@dataclass
class ImageSet:
    """One dataset in memory, clean or protected: uint8 NHWC images, int64 labels in [0, K), the class
    names, a display name, each sample's index in its base training set, and `meta` (its
    manifest and where it came from). Checked on construction: a wrong dtype, shape or label
    range is a one-line DataError."""
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64, each in [0, num_classes)
    classes: list[str]
    name: str = ""
    # Where each sample came from: for a protected set, the index in its base training set.
    indices: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.name or "dataset"
        if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8:
            raise DataError(where, f"images must be a uint8 array, got {_describe(self.images)}")
        if self.images.ndim == 3:  # grey images without a channel axis
            self.images = self.images[..., None]
        if self.images.ndim != 4:
            raise DataError(where, f"images must be NHWC, got shape {self.images.shape}")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(where, f"labels must be a 1-d integer array, got {_describe(labels)}")
        self.labels = labels.astype(np.int64, copy=False)
        if len(self.labels) != len(self.images):
            raise DataError(where, f"{len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(
                where,
                f"labels out of range [0, {len(self.classes)}): "
                f"min {self.labels.min()}, max {self.labels.max()}",
            )
        if self.indices is None:
            self.indices = np.arange(len(self.images), dtype=np.int64)
        self.indices = np.asarray(self.indices).astype(np.int64, copy=False)
        if self.indices.shape != self.labels.shape:
            raise DataError(where, f"indices shape {self.indices.shape} != labels {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]

    @property
    def chw(self) -> tuple[int, int, int]:
        n, h, w, c = self.images.shape
        return c, h, w

    def subset(self, idx: np.ndarray | list[int], name: str | None = None) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(
            self.images[idx], self.labels[idx], list(self.classes), name or self.name,
            self.indices[idx], dict(self.meta),
        )

    def replace(self, images: np.ndarray, **kw: Any) -> ImageSet:
        """Same labels, classes and indices with new images (how poisons make their output)."""
        fields = dict(labels=self.labels, classes=list(self.classes), name=self.name,
                      indices=self.indices, meta=dict(self.meta))
        fields.update(kw)
        return ImageSet(images, **fields)

    def to_tensor(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(x float32 NCHW in [0, 1], y int64), both on `device`."""
        x = torch.from_numpy(self.images).to(device).permute(0, 3, 1, 2).float().div_(255)
        return x.contiguous(), torch.from_numpy(self.labels).to(device)

    def uint8_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 NCHW: a quarter of the memory; the engine converts per batch."""
        return torch.from_numpy(self.images).to(device).permute(0, 3, 1, 2).contiguous()


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """float NCHW in [0, 1] -> uint8 NHWC, rounding to the nearest grey level."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    x = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__
