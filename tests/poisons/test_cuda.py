"""CUDA (Sandoval-Segura et al., CVPR 2023): a class-wise convolution, not an additive delta:
one filter per class, the same on every channel, deterministic per seed, in range; its manifest
says it is not additive, so the analyses of delta skip it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from unlearnable import ImageSet, load_dataset_dir
from unlearnable.auditor.steps import AUDITS, NOT_ADDITIVE, Row, StepSkipped
from unlearnable.data.facts import is_additive
from unlearnable.ladder import level
from unlearnable.poisons import POISONS, PoisonContext, make_poison, poison_dataset
from unlearnable.poisons.cuda import CUDAParams, class_filters


def rand_set(n: int, c: int, h: int, w: int, k: int, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    return ImageSet(images, np.arange(n, dtype=np.int64) % k, [f"c{i}" for i in range(k)], "rand")


def direct_cuda(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """One HWC uint8 image through one k x k filter, written as loops: zero padding, the same
    filter per channel, divided by the maximum, scaled to 255, truncated."""
    h, w, c = x.shape
    k = f.shape[0]
    r = k // 2
    xp = np.zeros((h + 2 * r, w + 2 * r, c))
    xp[r:r + h, r:r + w] = x / 255.0
    y = np.zeros((h, w, c))
    for i in range(h):
        for j in range(w):
            for a in range(k):
                for b in range(k):
                    y[i, j] += f[a, b] * xp[i + a, j + b]
    return np.floor(np.clip(y / y.max() * 255, 0, 255)).astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 12, 10)])
def test_cuda_is_a_class_wise_convolution(shape):
    c, h, w = shape
    base = rand_set(24, c, h, w, 4)
    p = make_poison("cuda", base, {}, seed=3)
    filters = class_filters(4, CUDAParams(), PoisonContext(seed=3).generator()).numpy()
    # Each class its own filter: entries in [0, 0.3) and one entry of 1.0 at a random place.
    assert len({f.tobytes() for f in filters}) == 4
    for f in filters:
        assert (f == 1.0).sum() == 1 and ((f[f != 1.0] >= 0) & (f[f != 1.0] < 0.3)).all()
    for i in range(len(base)):
        want = direct_cuda(base.images[i].astype(np.float64), filters[base.labels[i]])
        # Summation order may move a value across an integer edge: at most one grey level.
        assert np.abs(want.astype(int) - p.images[i].astype(int)).max() <= 1
        assert (want == p.images[i]).mean() > 0.98
        assert p.images[i].max() == 255  # divided by its own maximum
    info = p.meta["poison"]["info"]
    assert info["additive"] is False and info["norm"] == "none"
    assert np.allclose(np.array(info["filters"]), filters, atol=1e-6)


def test_cuda_is_deterministic_per_seed_and_in_range(digits_train):
    base = digits_train.subset(np.arange(200))
    a, b = make_poison("cuda", base, {}, seed=1), make_poison("cuda", base, {}, seed=1)
    c = make_poison("cuda", base, {}, seed=2)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.uint8 and a.images.shape == base.images.shape
    black = base.replace(np.zeros_like(base.images))
    assert (make_poison("cuda", black, {}, seed=1).images == 0).all()  # no division by zero
    with pytest.raises(Exception, match="kernel_size"):
        make_poison("cuda", base, {"kernel_size": "4"}, seed=1)


def test_cuda_manifest_says_not_additive_and_steps_skip(tmp_path, digits_train):
    assert not POISONS["cuda"].additive and POISONS["lsp"].additive and POISONS["hypo"].additive
    out = poison_dataset("cuda", "digits", tmp_path / "cuda", seed=0, subset=100)
    ds = load_dataset_dir(out)
    man = ds.meta["manifest"]
    assert man["bound"] == {"norm": "none"} and man["info"]["additive"] is False
    assert not is_additive(man)
    assert is_additive({"method": "lsp", "info": {"norm": "l2"}}) and is_additive(None)
    assert not is_additive({"method": "cuda", "info": {}})  # the registry's fact for the method
    sep = AUDITS["separability-perturbations"].spec
    clean = {"content": "sha256:x", "clean": "digits"}
    loaded = Row({"content": "sha256:y", "_path": str(out)}, clean, "digits", ds, level("tiny"))
    grid = Row({"method": "cuda", "params": {}, "dataset": "digits", "subset": 100, "seed": 0, "level": "tiny"},
               clean, "digits", digits_train, level("tiny"))
    for row in (loaded, grid):
        with pytest.raises(StepSkipped, match=NOT_ADDITIVE):
            sep(row)
    lsp = dataclasses.replace(grid, data={**grid.data, "method": "lsp"})
    assert sep(lsp)["of"] == "perturbations"  # an additive poison still gets the step
