"""A Vision Transformer sized for 32x32 images: patch size 4, 384-d class token.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale"
(ICLR 2021, arXiv 2010.11929). A 32x32 image becomes an 8x8 grid of 4x4 patches (64 tokens plus
the class token); 384 is ViT-S's width with its 6 heads of 64, and depth 7 with MLP ratio 2 follows
the compact CIFAR ViTs of Hassani et al. (arXiv 2104.05704), which train from scratch on 50k
images. Pre-norm blocks, GELU, learnable positional embedding, final LayerNorm; `features` is
the class token after it.

    >>> model = build_model("vit", num_classes=10, in_channels=3, image_size=32)
    >>> model.features(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 384])

The image size is fixed at construction (the positional embedding has one entry per patch) and
must be divisible by the patch size; anything else raises `UnlearnableError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UnlearnableError
from .base import Classifier, register_model


class Attention(nn.Module):
    """Multi-head self-attention over tokens (B, N, dim): one qkv projection, `heads` heads of
    dim // heads, an output projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # fused kernel where the backend has one
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(Classifier):
    """Vision Transformer with a class token.

    Args:
        num_classes: output classes (default 10).
        in_channels: image channels, 1 or 3 (default 3).
        image_size: (H, W) of the inputs (default (32, 32)), each divisible by `patch_size`.
        patch_size: side of the square patches (default 4).
        dim: token width = feature_dim (default 384).
        depth: transformer blocks (default 7).
        heads: attention heads; must divide `dim` (default 6, i.e. 64 per head).
        mlp_ratio: MLP hidden width / dim (default 2.0).
        mean, std: per-channel normalization applied inside the model (base-class defaults).
    Input (B, in_channels, H, W) in [0, 1]; `features` -> (B, dim).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32),
                 patch_size: int = 4, dim: int = 384, depth: int = 7, heads: int = 6, mlp_ratio: float = 2.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__(in_channels, mean, std)
        h, w = image_size
        if h % patch_size or w % patch_size:
            raise UnlearnableError(
                f"vit: image size {h}x{w} is not divisible by the patch size {patch_size}; "
                f"resize the images or pick a convolutional architecture")
        if dim % heads:
            raise UnlearnableError(f"vit: dim {dim} is not divisible by heads {heads}")
        self.image_size = (h, w)
        self.patch_size = patch_size
        # A stride-p p x p conv is exactly the paper's linear map of flattened patches.
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (h // patch_size) * (w // patch_size) + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = dim
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Truncated normal(0.02) as in the ViT reference code: PyTorch's default Linear init is
        # scaled for ReLU nets and makes the residual stream grow with depth.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.image_size:
            raise UnlearnableError(f"vit was built for {self.image_size[0]}x{self.image_size[1]} images, "
                                   f"got {x.shape[-2]}x{x.shape[-1]}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1) + self.pos_embed
        return self.norm(self.blocks(tokens))[:, 0]


@register_model("vit")
def vit(**kw) -> ViT:
    """ViT with patch size 4, 384-d class token, depth 7, 6 heads, MLP ratio 2."""
    return ViT(**kw)
