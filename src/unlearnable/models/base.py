"""The contract every model keeps, and the registry.

Callers pass [0, 1] pixels; normalization lives inside the model so no poison or attack ever
sees mean/std. `features(x)` is the penultimate embedding and `head` the final linear layer:
DFR refits `head` on `features`, and nothing else needs to know the architecture.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..core.registry import lookup


class Classifier(nn.Module):
    """Base class: subclasses build `self.body` (x_normalized -> embedding) and `self.head`."""

    feature_dim: int
    head: nn.Linear

    def __init__(self, in_channels: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        mean = list(mean) if mean is not None else [0.5] * in_channels
        std = list(std) if std is not None else [0.25] * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images to the model's input: (x - mean) / std per channel."""
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding (B, feature_dim) of normalized images; each subclass defines it."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding (B, feature_dim) of [0, 1] images (B, C, H, W)."""
        return self.embed(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of [0, 1] images (B, C, H, W): `head(features(x))`."""
        return self.head(self.features(x))


ModelFactory = Callable[..., Classifier]
MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register a factory `(num_classes=, in_channels=, image_size=, mean=, std=) -> Classifier`
    as architecture `name` in `MODELS`."""
    def deco(fn: ModelFactory) -> ModelFactory:
        MODELS[name] = fn
        return fn
    return deco


def build_model(name: str, num_classes: int, in_channels: int = 3,
                image_size: int | tuple[int, int] = 32,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Classifier:
    """Build a registered architecture for images of `in_channels` x `image_size`."""
    factory = lookup(MODELS, name, "architecture")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    return factory(num_classes=num_classes, in_channels=in_channels, image_size=tuple(image_size),
                        mean=mean, std=std)


def model_signature(model: nn.Module) -> str:
    """A short hash of a model's definition: its module tree (layer types, sizes, order) and the
    name and shape of every parameter and buffer.

    Cached training runs and audit steps are keyed on the architecture's *name*; this is what they
    also record, so results made by a different definition under the same name are refused rather
    than reused.
    """
    parts = [repr(model)] + [f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def arch_signature(name: str, num_classes: int, in_channels: int,
                   image_size: int | tuple[int, int]) -> str:
    """`model_signature` of a freshly built registered architecture (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        return model_signature(build_model(name, num_classes, in_channels, image_size))
