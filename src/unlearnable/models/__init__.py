"""Model registry: `build_model(name, num_classes, in_channels, image_size)`.

Registered: convnet (small, for CPU), resnet18 (the paper's RN-18), vgg16, vgg19, densenet121,
googlenet, vit.
"""

from . import convnet, densenet, googlenet, resnet, vgg, vit  # noqa: F401  (each registers itself)
from .base import MODELS, Classifier, arch_signature, build_model, model_signature, register_model

__all__ = ["MODELS", "Classifier", "arch_signature", "build_model", "model_signature", "register_model"]
