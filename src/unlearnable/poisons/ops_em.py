"""OPS+EM ("CIFAR-10-S"): the one-pixel shortcut on top of class-wise error-minimizing noise.

Wu et al., One-Pixel Shortcut, ICLR 2023 (https://arxiv.org/abs/2205.12141), combine their pixel
with Unlearnable Examples' class-wise noise (Huang et al., ICLR 2021,
https://arxiv.org/abs/2101.04898) so that neither adversarial training (which erases the 8/255
noise) nor strong augmentation (which hurts the pixel) alone recovers the data.

Made here as the original (cychomatica/One-Pixel-Shotcut, `pixel_search` with `pert_init`)
makes it: the EM noise (the `em` poison, same parameters; class-wise by default, as the paper
describes OPS+EM) is the starting perturbation, OPS's search runs on the *clean* images, and the
chosen pixel of every image is then set to its class's corner colour, overwriting the noise
there. `search_on=protected` searches on the EM-protected images instead. The original's code
reads a per-image EM file; `mode=sample` gives that. Bound: l_inf <= 8/255 everywhere except
that one pixel (norm "linf+l0" in the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.imageset import ImageSet
from .base import PoisonContext, PoisonOutput, perturb_chunks, register_poison
from .em import LEVEL_TABLE, EMParams, craft_error_minimizing, em_kind
from .ops import OPSParams, ops


@dataclass
class OpsEMParams(EMParams):
    """Parameters of `ops-em`: EM's (the released code's defaults, class-wise here) and where the
    pixel is searched (the original's: on the clean images)."""

    mode: str = "class"  # OPS+EM uses class-wise EM; mode=sample is allowed for ablations
    search_on: str = "clean"  # clean (the original's pixel search) | protected (on the EM images)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.search_on not in ("clean", "protected"):
            raise ValueError(f"search_on must be clean or protected, got {self.search_on!r}")


@register_poison(
    "ops-em", OpsEMParams, em_kind,
    "OPS+EM (CIFAR-10-S): one-pixel shortcut on top of class-wise error-minimizing noise (8/255)",
    "Wu et al., One-Pixel Shortcut, ICLR 2023, https://arxiv.org/abs/2205.12141 (OPS+EM), with "
    "Huang et al., ICLR 2021, https://arxiv.org/abs/2101.04898",
    model_based=True, fills=LEVEL_TABLE,
)
def ops_em(base: ImageSet, params: OpsEMParams, ctx: PoisonContext) -> PoisonOutput:
    """Class-wise EM, then the OPS pixel (searched on the clean images) set on the EM images.

    Paper: Wu et al., One-Pixel Shortcut: on the Learning Preference of Deep Neural Networks, ICLR 2023,
        https://arxiv.org/abs/2205.12141 (OPS+EM), with Huang et al., Unlearnable Examples: Making
        Personal Data Unexploitable, ICLR 2021, https://arxiv.org/abs/2101.04898
    Threat model: the defender (the data owner) perturbs every training image within l_inf <= eps
        (8/255) on the stored uint8 images, except one pixel per image set to its class's corner
        colour (unbounded there); the noise is crafted with its own model (ctx.device, resumable
        in ctx.work_dir); labels, test set and learner are out of its hands.
    Args: EMParams's fields with EM's meanings and defaults (see `em`; those at None filled from
        EM's LEVEL_TABLE): eps, steps, alpha, train_steps, batch_size, lr, momentum, weight_decay,
        stop_accuracy, max_rounds, arch, update, start, portion, grad_clip, decay_all and clamp;
        two differ or are new here:
        mode ("class"): class | sample (the original's per-image EM file; for ablations)
        search_on ("clean"): clean (the original's pixel search) | protected (on the EM images)
    Shapes: base images uint8 (N, H, W, C), any size and class count with H*W*2^C >= K; class
        patterns (K, C, H, W) (mode=sample: (N, C, H, W)); returns PoisonOutput with images uint8
        (N, H, W, C) aligned with base and an info dict with EM's record (see `em`) and norm
        ("linf+l0"), pixels_per_image (1), pixels (OPS's per class) and pixel_search_on.
    Example:
        unlearnable poison ops-em --dataset fashion-mnist --out runs/ops-em --seed 0
    """
    delta, _, info = craft_error_minimizing(base, params, ctx, "ops-em")
    labels = torch.from_numpy(base.labels)
    fn = (lambda sl, x: delta[labels[sl]]) if params.mode == "class" else (lambda sl, x: delta[sl])
    em_images = perturb_chunks(base, fn, linf=info["eps"])
    searched = ops(base if params.search_on == "clean" else base.replace(em_images), OPSParams(), ctx)
    out = em_images.copy()
    for cls, q in enumerate(searched.info["pixels"]):
        if q is not None:
            out[base.labels == cls, q["row"], q["col"], :] = np.asarray(q["colour"], dtype=np.uint8)
    return PoisonOutput(out, {**info, "norm": "linf+l0", "pixels_per_image": 1,
                              "pixels": searched.info["pixels"], "pixel_search_on": params.search_on})
