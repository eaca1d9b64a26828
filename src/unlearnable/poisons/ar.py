"""AR: autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022).

"Autoregressive Perturbations for Data Poisoning", Pedro Sandoval-Segura, Vasu Singla, Jonas
Geiping, Micah Goldblum, Tom Goldstein, David W. Jacobs, NeurIPS 2022,
https://arxiv.org/abs/2206.03693.

Threat model: the defender adds a sample-wise perturbation (||delta||_2 = 1 by default) to each
training image; no model, no optimization. Class k owns a causal 3x3 AR filter per channel: 8
coefficients b (the bottom-right entry fixed to 0) summing to 1. A perturbation is made by
filling a (H+4) x (W+4) canvas whose first two rows and columns are Gaussian start values, each
later value being the b-weighted sum of its 8 causal neighbours (two rows above, two pixels to
the left), then cropping the top-left 4 rows and columns and scaling to the norm bound.
The matching filter (b with -1 in the bottom-right) annihilates its own process (response 0),
so a network can read the class from a simple linear filter: a shortcut that is *not* linearly
separable in pixel space (the paper's Table 2).

Coefficients (as in the original's `ar_search.py`): rejection sampling of b ~ N(0, I) with the
bottom-right entry zeroed and each channel normalized to sum 1; a candidate is kept when
(1) its process is stable: the l2 norm of 3 generated patterns (before scaling) is finite and
    <= `max_norm` (50). Channels are independent processes, so here each channel is tested on
    its own against max_norm / sqrt(C) (which bounds the total by max_norm) and C stable
    channels are combined: ~4x wasted draws instead of ~4^C.
(2) it is distinct: every already chosen filter f responds to the candidate's (unit l2)
    pattern with sum(relu(f * delta)) >= `min_response` (10 for CIFAR-10, 3 for CIFAR-100 in
    the original; its own filter responds ~0). These thresholds are in 3x32x32 units; the
    response grows with image size and channel count, so the threshold is multiplied by
    (median response between unrelated stable processes of this shape, measured on the first
    128 candidates) / REF_MEDIAN (the same median at 3x32x32).
Each class gets at most `max_tries` candidates (2000; the original drew up to 1M in total); if
none passes, the most distinct one seen is taken and recorded in the manifest (`info.search`).
Stable candidates always exist, so this never fails and never gives NaN, for any class count.

Generation is vectorized over samples: the recurrence runs position by position with all of a
chunk's samples (each with its class's coefficients) as one tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import UnlearnableError
from ..core.progress import bar as progress_bar
from ..data.imageset import ImageSet
from .base import PoisonContext, PoisonOutput, one_thread, perturb_chunks, register_poison, scale_to_norm

CROP = 4  # the original generates 36x36 and crops 4 rows and columns for 32x32 images
# Median response between unrelated stable 3x32x32 processes (measured with this code): the
# original's thresholds (10, 3) are in these units and are rescaled for other shapes.
REF_MEDIAN = 4.65


@dataclass
class ARParams:
    """Parameters of `ar`: the norm and size of the perturbations and the filter search; the
    defaults are the original's (`ar_search.py`) except `max_tries` (see the module docstring)."""

    norm: str = "l2"  # "l2" (the original) or "linf"
    size: float = 0.0  # the bound; 0 = default for the norm: 1.0 for l2, 8/255 for linf
    min_response: float = 0.0  # distinctness threshold at 32x32; 0 = 10 (<= 10 classes) or 3
    max_norm: float = 50.0  # stability: largest pre-scaling l2 norm of a generated pattern
    max_tries: int = 2000  # candidate filters per class before taking the most distinct seen

    def __post_init__(self) -> None:
        if self.norm not in ("l2", "linf"):
            raise ValueError(f"norm must be l2 or linf, got {self.norm!r}")
        if self.size == 0:
            self.size = 1.0 if self.norm == "l2" else 8 / 255
        if self.size < 0:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.min_response < 0 or self.max_norm <= 0 or self.max_tries < 1:
            raise ValueError("min_response must be >= 0, max_norm > 0 and max_tries >= 1")


def ar_run(coefs: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Run the causal AR process; returns the cropped (n, C, h, w) patterns, unscaled.

    coefs: (n, C, 3, 3) per-sample filters (bottom-right entry ignored); top: (n, C, 2, w+4) and
    left: (n, C, h+2, 2) Gaussian start values (the first two rows and columns of the canvas).
    """
    n, c = coefs.shape[:2]
    hc, wc = h + CROP, w + CROP
    # (rows, cols, n, C): one canvas position is a contiguous (n, C) slab.
    canvas = torch.empty(hc, wc, n, c, dtype=coefs.dtype)
    canvas[:2] = top.permute(2, 3, 0, 1)
    canvas[2:, :2] = left.permute(2, 3, 0, 1)
    b = coefs.permute(2, 3, 0, 1).contiguous()  # (3, 3, n, C)
    b20, b21 = b[2, 0], b[2, 1]
    for i in range(2, hc):
        # What the two rows above contribute, for every column at once ...
        above = sum(b[a, d] * canvas[i - 2 + a, d:d + wc - 2] for a in range(2) for d in range(3))
        row = canvas[i]
        # ... then the left-to-right dependence within the row, one column at a time.
        for j in range(2, wc):
            torch.addcmul(torch.addcmul(above[j - 2], b20, row[j - 2]), b21, row[j - 1], out=row[j])
    return canvas[CROP:, CROP:].permute(2, 3, 0, 1).contiguous()


def start_values(n: int, c: int, h: int, w: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian start values of `n` AR canvases: top (n, C, 2, w+4) and left (n, C, h+2, 2)."""
    top = torch.randn(n, c, 2, w + CROP, generator=g)
    left = torch.randn(n, c, h + 2, 2, generator=g)
    return top, left


def matching_filter(coefs: torch.Tensor) -> torch.Tensor:
    """(..., C, 3, 3) AR coefficients -> the filter that annihilates that process (-1 bottom-right)."""
    f = coefs.clone()
    f[..., 2, 2] = -1
    return f


def response(filters: torch.Tensor, patterns: torch.Tensor) -> torch.Tensor:
    """sum(relu(f * x)) of each filter (k, C, 3, 3) on each pattern (n, C, H, W) -> (n, k)."""
    return F.relu(F.conv2d(patterns, filters)).sum(dim=(2, 3))


def random_coefs(n: int, c: int, g: torch.Generator) -> torch.Tensor:
    """(n, C, 3, 3) candidate AR coefficients: N(0, 1), bottom-right entry 0, each channel summing to 1."""
    b = torch.randn(n, c, 3, 3, generator=g)
    b[..., 2, 2] = 0
    return b / b.sum(dim=(2, 3), keepdim=True)


class _StableChannels:
    """A seeded stream of stable single-channel AR filters, each with one generated pattern.

    The channels of an AR perturbation are independent processes, so stability is tested per
    channel (3 generated patterns, each with l2 norm finite and <= bound) and C stable channels
    make a candidate: about 1 in 4 single-channel draws is stable, so this wastes ~4x instead of
    the ~4^C of drawing whole C-channel filters (1.3 % stable for C = 3).
    """

    def __init__(self, h: int, w: int, bound: float, g: torch.Generator, batch: int = 512, trials: int = 3):
        self.h, self.w, self.bound, self.g, self.batch, self.trials = h, w, bound, g, batch, trials
        self.coefs = torch.empty(0, 3, 3)
        self.patterns = torch.empty(0, h, w)
        self.drawn = 0

    def take(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.coefs) < n:
            b, t = self.batch, self.trials
            coefs = random_coefs(b, 1, self.g)
            top, left = start_values(b * t, 1, self.h, self.w, self.g)
            with torch.no_grad():
                pats = ar_run(coefs.repeat(t, 1, 1, 1), top, left, self.h, self.w).view(t, b, self.h, self.w)
            norms = pats.flatten(2).norm(dim=2)
            ok = (torch.isfinite(norms) & (norms <= self.bound)).all(0)
            self.coefs = torch.cat([self.coefs, coefs[ok, 0]])
            self.patterns = torch.cat([self.patterns, pats[-1, ok]])
            self.drawn += b
        out = self.coefs[:n], self.patterns[:n]
        self.coefs, self.patterns = self.coefs[n:], self.patterns[n:]
        return out


def search_filters(k: int, c: int, h: int, w: int, params: ARParams, g: torch.Generator,
                   progress: bool | None = None, batch: int = 128) -> tuple[torch.Tensor, dict[str, Any]]:
    """K (C, 3, 3) AR coefficient sets by seeded rejection sampling (see the module docstring).

    Returns the coefficients and a JSON-able record: threshold used, and per class how many
    candidates were examined, the lowest response of the earlier filters on it, and how it was
    accepted ("passed", or "best-seen" after max_tries).
    """
    stream = _StableChannels(h, w, params.max_norm / math.sqrt(c), g)

    def candidates(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        coefs, pats = stream.take(n * c)
        pats = pats.reshape(n, c, h, w)
        return coefs.reshape(n, c, 3, 3), pats / pats.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    coefs, unit = candidates(batch)
    # Responses scale with image size and channel count; calibrate the threshold by the median
    # response between unrelated stable processes of this shape (REF_MEDIAN at 3x32x32).
    r = response(matching_filter(coefs), unit)
    median = float(r[~torch.eye(batch, dtype=torch.bool)].median())
    thresh = (params.min_response or (10.0 if k <= 10 else 3.0)) * median / REF_MEDIAN
    chosen: list[torch.Tensor] = []
    classes: list[dict[str, Any]] = []
    tries, best = 0, None
    bar = progress_bar(total=k, desc="ar: filters", progress=progress)

    def accept(coef: torch.Tensor, score: float, how: str) -> None:
        nonlocal tries, best
        chosen.append(coef)
        classes.append({"tries": tries, "how": how,
                        "min_response": None if math.isinf(score) else round(score, 4)})
        tries, best = 0, None
        bar.update(1)

    while True:
        score = torch.full((batch,), torch.inf)
        if chosen:
            score = response(matching_filter(torch.stack(chosen)), unit).amin(1)
        ptr = 0
        while ptr < batch and len(chosen) < k:
            end = min(batch, ptr + params.max_tries - tries)
            window = score[ptr:end]
            hits = torch.nonzero(window >= thresh).squeeze(1)
            if len(hits):
                i = ptr + int(hits[0])
                tries += i - ptr + 1
                accept(coefs[i], float(score[i]), "passed")
            else:
                i = end - 1
                tries += end - ptr
                j = int(torch.argmax(window))
                if best is None or window[j] > best[1]:
                    best = (coefs[ptr + j], float(window[j]))
                if tries >= params.max_tries:
                    accept(*best, how="best-seen")
            ptr = i + 1
            if chosen and ptr < batch:
                # The filter just chosen must also respond to the remaining candidates.
                new = response(matching_filter(chosen[-1][None]), unit[ptr:])[:, 0]
                score[ptr:] = torch.minimum(score[ptr:], new)
        if len(chosen) == k:
            break
        coefs, unit = candidates(batch)
    bar.close()
    record = {"threshold": round(thresh, 4), "median_response": round(median, 4),
              "single_channel_draws": stream.drawn, "classes": classes}
    return torch.stack(chosen), record


@register_poison(
    "ar", ARParams, "sample-wise",
    "autoregressive: per class a causal 3x3 AR filter per channel, sample-wise patterns "
    "scaled to ||delta||_2 = 1 (or l_inf 8/255)",
    "Sandoval-Segura et al., Autoregressive Perturbations for Data Poisoning, NeurIPS 2022, "
    "https://arxiv.org/abs/2206.03693",
    # The filter search tries up to 2000 candidates per class; 100 show the mechanism in seconds.
    model_based=False, presets={"tiny": {"max_tries": "100"}},
)
def ar(base: ImageSet, params: ARParams, ctx: PoisonContext) -> PoisonOutput:
    """Autoregressive perturbations: per sample, its class's AR process from fresh start values.

    Paper: Sandoval-Segura et al., Autoregressive Perturbations for Data Poisoning, NeurIPS 2022,
        https://arxiv.org/abs/2206.03693
    Threat model: the defender (the data owner) adds a sample-wise perturbation to every training
        image, ||delta||_2 = 1 (held up to rounding on the stored uint8 images), or with norm=linf
        l_inf <= 8/255 (held on them); labels, test set and learner are out of its hands. No model,
        no optimization; every draw comes from ctx.seed.
    Args:
        norm ("l2"): "l2" (the original) or "linf"
        size (0.0): the bound; 0 = the norm's default, 1.0 for l2 and 8/255 for linf
        min_response (0.0): distinctness threshold in 3x32x32 units, rescaled to the images' shape;
            0 = 10 (<= 10 classes) or 3 (more), the original's
        max_norm (50.0): stability, the largest pre-scaling l2 norm of a generated pattern
        max_tries (2000): candidate filters per class before the most distinct one seen is taken
            (100 at level tiny, the registry's preset)
    Shapes: base images uint8 (N, H, W, C) of at least 3x3 pixels, any class count; coefficients
        (K, C, 3, 3), start values (N, C, 2, W+4) and (N, C, H+2, 2), patterns (N, C, H, W);
        returns PoisonOutput with images uint8 (N, H, W, C) aligned with base and an info dict
        with norm, the bound under the norm's name ("l2" or "linf"), coefficients and search
        (the filter search's record: threshold, draws and per class how it was accepted).
    Example:
        unlearnable poison ar --dataset fashion-mnist --out runs/ar --seed 0
    """
    c, h, w = base.chw
    if min(h, w) < 3:
        raise UnlearnableError(f"ar: images must be at least 3x3, got {h}x{w}")
    with one_thread():
        g_search, g_gen = ctx.generator(10), ctx.generator(11)
        coefs, search = search_filters(base.num_classes, c, h, w, params, g_search, ctx.progress)
        top, left = start_values(len(base), c, h, w, g_gen)
        labels = torch.from_numpy(base.labels)

        def delta(sl: slice, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                p = ar_run(coefs[labels[sl]], top[sl], left[sl], h, w)
            if not torch.isfinite(p).all():
                raise UnlearnableError("ar: a generated pattern is not finite; lower max_norm")
            return scale_to_norm(p, params.norm, params.size)

        images = perturb_chunks(base, delta, linf=params.size if params.norm == "linf" else None, chunk=16384)
    return PoisonOutput(images, {
        "norm": params.norm, params.norm: params.size,
        "coefficients": coefs.tolist(), "search": search,
    })

