"""Model registry: `build_model(name, num_classes, in_channels, image_size)`."""

from . import convnet  # noqa: F401  (registers)
from .base import MODELS, Classifier, build_model, register_model

try:  # the larger architectures live in their own modules
    from . import googlenet, resnet, vgg, vit  # noqa: F401
except ImportError:  # pragma: no cover - while they are being written
    pass

__all__ = ["MODELS", "Classifier", "build_model", "register_model"]
