"""OPS+EM ("CIFAR-10-S"): the one-pixel shortcut on top of class-wise error-minimizing noise.

Wu et al., One-Pixel Shortcut, ICLR 2023 (https://arxiv.org/abs/2205.12141), combine their pixel
with Unlearnable Examples' class-wise noise (Huang et al., ICLR 2021,
https://arxiv.org/abs/2101.04898) so that neither adversarial training (which erases the 8/255
noise) nor strong augmentation (which hurts the pixel) alone recovers the data.

Made here as: class-wise EM (the `em` poison with mode=class, same parameters) gives images
within l_inf 8/255; OPS's search then runs on those protected images and sets one pixel per
image to its class's corner colour. Bound: l_inf <= 8/255 everywhere except that one pixel
(norm "linf+l0" in the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.imageset import ImageSet
from .base import PoisonContext, PoisonOutput, perturb_chunks, register_poison
from .em import EMParams, craft_error_minimizing, em_kind
from .ops import OPSParams, ops


@dataclass
class OpsEMParams(EMParams):
    mode: str = "class"  # OPS+EM uses class-wise EM; mode=sample is allowed for ablations


@register_poison(
    "ops-em", OpsEMParams, em_kind,
    "OPS+EM (CIFAR-10-S): one-pixel shortcut on top of class-wise error-minimizing noise (8/255)",
    "Wu et al., One-Pixel Shortcut, ICLR 2023, https://arxiv.org/abs/2205.12141 (OPS+EM), with "
    "Huang et al., ICLR 2021, https://arxiv.org/abs/2101.04898",
    model_based=True,
)
def ops_em(base: ImageSet, params: OpsEMParams, ctx: PoisonContext) -> PoisonOutput:
    """Class-wise EM, then the OPS pixel chosen on the EM-protected images.

    Args: params (EMParams fields, mode=class by default; EM's level table) and ctx. Shapes: class patterns
    (K, C, H, W); output uint8 (N, H, W, C). Example: `make_poison("ops-em", base, seed=0)`.
    """
    delta, _, info = craft_error_minimizing(base, params, ctx, "ops-em")
    labels = torch.from_numpy(base.labels)
    fn = (lambda sl, x: delta[labels[sl]]) if params.mode == "class" else (lambda sl, x: delta[sl])
    em_images = perturb_chunks(base, fn, linf=info["eps"])
    pixel = ops(base.replace(em_images), OPSParams(), ctx)
    return PoisonOutput(pixel.images, {**info, "norm": "linf+l0", "pixels_per_image": 1,
                                       "pixels": pixel.info["pixels"]})
