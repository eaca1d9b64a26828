"""Orthogonal Projection, class-mean subtraction, the released recipe's augmentations, `attack` CLI."""

import json
import math

import numpy as np
import pytest
import torch

from unlearnable import load_data, load_dataset_dir, save_dataset
from unlearnable.attacks import ATTACKS, AttackContext
from unlearnable.attacks.mean_sub import class_means, subtract_class_means
from unlearnable.attacks.ortho_proj import LinearParams, fit_linear, linear_accuracy, project, projection_basis
from unlearnable.cli import main
from unlearnable.kinds import run_attack


pytestmark = pytest.mark.usefixtures("one_thread")


K = 10


def planted(n: int, side: int, eps: float, seed: int, patterns: np.ndarray | None = None):
    """Random mid-grey images (no clipping) + one +-eps pattern per class: (x uint8 NCHW flat, y, P)."""
    rng = np.random.default_rng(seed)
    if patterns is None:
        patterns = rng.choice([-eps, eps], size=(K, side * side))
    y = np.arange(n) % K
    base = rng.uniform(0.3, 0.7, size=(n, side * side))
    x = np.round((base + patterns[y]) * 255).astype(np.uint8)
    return torch.from_numpy(x), torch.from_numpy(y).long(), patterns


LIN = LinearParams(epochs=20, batch_size=64)


def test_linear_rows_recover_the_planted_patterns():
    x, y, pat = planted(2000, 8, 32 / 255, seed=0)
    w = fit_linear(x, y, K, LIN, seed=0)
    assert w.shape == (K, 64)
    assert linear_accuracy(x, y, w) == 1.0
    # Softmax only sees differences of rows, and SGD keeps their sum at its (small) init: compare
    # each row with its pattern minus the mean pattern.
    centred = torch.from_numpy(pat - pat.mean(0)).float()
    cos = torch.nn.functional.cosine_similarity(w, centred, dim=1)
    assert cos.min() >= 0.9, cos
    assert torch.equal(w, fit_linear(x, y, K, LIN, seed=0))  # seeded
    assert not torch.equal(w, fit_linear(x, y, K, LIN, seed=1))


def test_projection_is_exact_and_removes_the_shortcut():
    x, y, pat = planted(2000, 8, 32 / 255, seed=0)
    w = fit_linear(x, y, K, LIN, seed=0)
    q, rank = projection_basis(w)
    assert rank == K and q.dtype == torch.float64
    assert torch.allclose(q.T @ q, torch.eye(rank, dtype=torch.float64), atol=1e-12)
    xr = project(x, q, chunk=300, clip=False)  # chunks that do not divide N
    assert xr.dtype == torch.float32 and xr.shape == x.shape
    assert (xr.double() @ q).abs().max() < 1e-5  # float32 rounding of values ~1
    moved = x.double() / 255 - xr.double()  # what was removed lies in span(Q)
    assert (moved - moved @ q @ q.T).abs().max() < 1e-5
    # Fresh images with the same patterns (held-out, so fitting noise cannot pass for a
    # shortcut): a linear model reads them perfectly before projection. Removing the exact span
    # of the patterns leaves chance; removing the learned span (rows ~0.95 aligned) leaves a
    # residual a fresh linear model still partly reads, but far from the 100 % before.
    xh, yh, _ = planted(2000, 8, 32 / 255, seed=1, patterns=pat)
    assert linear_accuracy(xh, yh, fit_linear(x, y, K, LIN, seed=2)) == 1.0
    q_exact, _ = projection_basis(torch.from_numpy(pat))
    w_exact = fit_linear(project(x, q_exact), y, K, LIN, seed=2)
    assert linear_accuracy(project(xh, q_exact), yh, w_exact) < 0.2
    w_after = fit_linear(xr, y, K, LIN, seed=2)
    assert linear_accuracy(project(xh, q), yh, w_after) < 0.6
    clipped = project(x, q)
    assert clipped.min() >= 0 and clipped.max() <= 1
    inplace = x.float() / 255
    assert project(inplace, q, clip=False, inplace=True) is inplace and torch.allclose(inplace, xr)


def test_class_mean_subtraction_equalizes_class_means():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(60, 200, size=(300, 1, 4, 4), dtype=np.uint8))
    y = torch.from_numpy(np.arange(300) % 3)
    for mode in ("global-mean", "affine"):
        xs = subtract_class_means(x, y, 3, mode)
        m = class_means(xs, y, 3)
        assert torch.allclose(m, m[0:1].expand_as(m), atol=1e-6), mode
        assert xs.min() >= 0 and xs.max() <= 1


@pytest.fixture(scope="module")
def digits16_poison():
    """Digits upsampled to 16x16 with a class-wise +-64/255 pattern (an effective poison)."""
    up = lambda d: d.replace(np.kron(d.images, np.ones((1, 2, 2, 1), np.uint8)))  # noqa: E731
    tr, te = up(load_data("digits")), up(load_data("digits", "test"))
    pat = np.random.default_rng(0).choice([-64, 64], size=(K, 16, 16, 1))
    x = np.clip(tr.images.astype(np.int16) + pat[tr.labels], 0, 255).astype(np.uint8)
    return tr.replace(x, name="digits16-classwise"), te, tr


def test_ortho_proj_beats_training_on_the_poison(tmp_path, digits16_poison, quick_recipe):
    poison, test, clean = digits16_poison
    recipe = quick_recipe.replace(epochs=5, crop_padding=0)
    res = {}
    for name in ("none", "ortho-proj"):
        ctx = AttackContext(poison, test, "convnet", recipe, 0, tmp_path / name, "cpu", False, clean, "d16")
        res[name] = run_attack(name, ctx, {"linear_batch_size": "64"} if name == "ortho-proj" else {})
    op = res["ortho-proj"]
    assert res["none"]["test_accuracy"] < 0.3  # the poison works ...
    assert op["test_accuracy_best"] > res["none"]["test_accuracy"] + 0.2  # ... and the attack beats it
    assert op["linear_train_accuracy"] == 1.0 and op["rank"] == K
    assert op["test_accuracy_projected_test"] == op["test_accuracy_transformed_test"]
    for key in ("seconds_linear", "seconds_projection", "seconds_train"):
        assert op[key] >= 0
    saved = json.loads((tmp_path / "ortho-proj" / "result.json").read_text())
    assert saved["test_accuracy"] == op["test_accuracy"]
    assert (tmp_path / "ortho-proj" / "weights.png").stat().st_size > 1000
    assert np.load(tmp_path / "ortho-proj" / "linear_weights.npy").shape == (K, 256)
    assert not (tmp_path / "ortho-proj" / "recovered").exists()  # only on request


def test_cli_attack_list_errors_and_save_recovered(tmp_path, digits_train, capsys):
    rng = np.random.default_rng(0)
    pat = rng.choice([-32, 32], size=(K, 8, 8, 1))
    x = np.clip(digits_train.images.astype(np.int16) + pat[digits_train.labels], 0, 255).astype(np.uint8)
    save_dataset(tmp_path / "p", digits_train.replace(x), {"method": "planted", "base": {"name": "digits"}},
                 base=digits_train)
    assert main(["attack", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(n in listed for n in ATTACKS)
    assert main(["attack", "nope", str(tmp_path / "p"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown attack 'nope'" in err[0]
    assert main(["attack", "ortho-proj", str(tmp_path / "p"), "--out", str(tmp_path / "o"), "--epochs", "1",
                 "--recipe", "fast", "--no-progress", "--save-recovered", "--param", "linear_epochs=3"]) == 0
    assert "clean test accuracy" in capsys.readouterr().out
    rec = load_dataset_dir(tmp_path / "o" / "recovered")
    assert rec.meta["manifest"]["method"] == "ortho-proj-recovered" and len(rec) == len(digits_train)
    assert rec.meta["manifest"]["perturbation_measured"]["linf_max"] > 0
    assert main(["attack", "ortho-proj", str(tmp_path / "p"), "--out", str(tmp_path / "o2"),
                 "--param", "bogus=1", "--epochs", "1"]) == 2
    assert "unknown parameter 'bogus'" in capsys.readouterr().err


def test_mean_sub_runs_without_transformed_test(tmp_path, digits_train, digits_test, quick_recipe):
    ctx = AttackContext(digits_train, digits_test, "convnet", quick_recipe.replace(epochs=2), 0,
                        tmp_path, "cpu", False, digits_train, "digits")
    res = run_attack("mean-sub", ctx, {"mode": "affine"})
    assert 0 <= res["test_accuracy"] <= 1 and res["test_accuracy_transformed_test"] is None
    assert res["test_accuracy_best"] == res["test_accuracy"]
    assert (tmp_path / "class_means.png").exists()
    with pytest.raises(Exception, match="unknown mode"):
        run_attack("mean-sub", ctx, {"mode": "nope"})



# --- the released step 2's pipeline (issue 14): its order, its resampling, its jitter order ----

def test_released_recipe_augments_in_the_released_order():
    """rotate -> shear-scale -> per-image jitter -> crop -> flip -> CutMix, each with its draws in
    turn from one generator: augment_batch equals the steps applied one by one."""
    from unlearnable.train.augment import (batch_color_jitter_per_image, batch_crop, batch_cutmix,
                                           batch_flip_lr, batch_rotate, batch_shear_scale)
    from unlearnable.train.recipe import RECIPES
    from unlearnable.train.loop import augment_batch

    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    recipe = RECIPES["released"]
    for seed in range(4):  # CutMix mixes some batches (p 0.5) and not others
        xa, ya = augment_batch(x, y, recipe, torch.Generator().manual_seed(seed), 4)
        g = torch.Generator().manual_seed(seed)
        ref = batch_flip_lr(batch_crop(batch_color_jitter_per_image(batch_shear_scale(batch_rotate(x, g), g), g),
                                       g, 2), g)  # 16 px images: the crop padding is capped at 2
        ref, yref = batch_cutmix(ref, torch.eye(4)[y], g)
        assert torch.equal(xa, ref) and torch.equal(ya, yref)
    # Where the data allows no crop or flip (digits), the named steps are skipped, the rest kept.
    no = recipe.replace(flip=False, crop_padding=0)
    xa, _ = augment_batch(x, y, no, torch.Generator().manual_seed(0), 4)
    g = torch.Generator().manual_seed(0)
    ref, _ = batch_cutmix(batch_color_jitter_per_image(batch_shear_scale(batch_rotate(x, g), g), g),
                          torch.eye(4)[y], g)
    assert torch.equal(xa, ref)
    # A recipe that does not name them crops and flips first, as before.
    first = recipe.replace(augment=("rotate",))
    xa, _ = augment_batch(x, y, first, torch.Generator().manual_seed(0), 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(xa, batch_rotate(batch_flip_lr(batch_crop(x, g, 2), g), g))


def test_released_rotation_and_shear_resample_nearest():
    """torchvision's RandomRotation / RandomAffine default to nearest: no new pixel values."""
    from unlearnable.train.augment import _affine_sample, batch_rotate, batch_shear_scale

    x = torch.rand(4, 1, 9, 9)
    for fn in (batch_rotate, batch_shear_scale):
        out = fn(x, torch.Generator().manual_seed(0))
        assert not torch.equal(out, x)
        assert torch.isin(out, torch.cat([x.flatten(), torch.zeros(1)])).all(), fn.__name__
    bilinear = batch_rotate(x, torch.Generator().manual_seed(0), mode="bilinear")
    assert not torch.isin(bilinear, torch.cat([x.flatten(), torch.zeros(1)])).all()
    # A quarter turn about the centre of a square image is exact under nearest resampling.
    one = torch.ones(4, dtype=torch.float64)
    quarter = _affine_sample(x, one * math.pi / 2, one * 0, one, "nearest")
    assert torch.equal(quarter, x.rot90(1, (2, 3))) or torch.equal(quarter, x.rot90(-1, (2, 3)))
    # No angle, no shear, scale 1: the identity, pixel for pixel.
    assert torch.equal(batch_shear_scale(x, torch.Generator(), 0.0, (1.0, 1.0)), x)
    assert torch.equal(batch_rotate(x, torch.Generator(), 0.0), x)


def test_released_colour_jitter_draws_its_order_per_image():
    """Each image gets its own order of brightness, contrast and saturation, as torchvision's
    ColorJitter draws one per call: the batch equals the adjustments applied image by image."""
    from unlearnable.train.augment import _JITTER, _jitter_factors, _jitter_one, batch_color_jitter_per_image

    # Bright, saturated images: the [0, 1] clamps make the order matter.
    x = (torch.rand(12, 3, 6, 6, generator=torch.Generator().manual_seed(5)) * 0.6 + 0.5).clamp(0, 1)
    out = batch_color_jitter_per_image(x, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    factors = _jitter_factors(x, g, 0.2, 0.2, 0.2)
    orders = torch.rand(12, 3, generator=g).argsort(1)
    assert len({tuple(o.tolist()) for o in orders}) > 1  # two images in this batch differ in order
    for i in range(12):
        xi = x[i:i + 1]
        for k in orders[i].tolist():
            xi = _jitter_one(xi, _JITTER[k], factors[_JITTER[k]][i:i + 1])
        torch.testing.assert_close(out[i:i + 1], xi, rtol=0, atol=0)
    # ... and the order is not cosmetic: one fixed order for the whole batch gives other images.
    fixed = x
    for k in orders[0].tolist():
        fixed = _jitter_one(fixed, _JITTER[k], factors[_JITTER[k]])
    assert not torch.equal(fixed, out)


# --- the oracle: projecting the known perturbations -----------------------------------------------

def _planted_sets(n: int = 600, side: int = 8, eps: int = 24, seed: int = 0, sample_wise: bool = False):
    """(protected, clean, patterns): random mid-grey images (nothing clipped) plus eps/255 patterns,
    one per class, or (sample_wise) a random mix of K directions per image."""
    from unlearnable import ImageSet

    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    clean = rng.integers(80, 176, size=(n, side, side, 1)).astype(np.int16)
    pat = rng.choice([-eps, eps], size=(K, side, side, 1))
    # Sample-wise mixes use integer weights, so every delta lies exactly in the patterns' span.
    delta = pat[y] if not sample_wise else np.einsum("nk,khwc->nhwc", rng.integers(-1, 2, size=(n, K)), pat)
    mk = lambda x, name: ImageSet(x.astype(np.uint8), y, [str(c) for c in range(K)], name)  # noqa: E731
    return mk(clean + delta, "p"), mk(clean, "c"), pat.reshape(K, -1) / 255


def test_oracle_basis_removes_the_planted_patterns_exactly():
    from unlearnable.attacks.ortho_proj import perturbation_directions

    prot, clean, pat = _planted_sets()
    rows, used = perturbation_directions(prot, clean)
    assert used == "class-means"  # measured: one pattern per class
    np.testing.assert_allclose(rows, pat, atol=1e-12)  # the class means are the patterns
    q, rank = projection_basis(rows)
    assert rank == K and q.shape == (64, K)  # full rank K
    residual = pat - (pat @ q.numpy()) @ q.numpy().T  # ||delta_class Q_perp||
    assert np.abs(residual).max() < 1e-12
    # Sample-wise: every delta is a mix of the K patterns; the top-K principal directions span them.
    prot, clean, pat = _planted_sets(eps=4, sample_wise=True)
    rows, used = perturbation_directions(prot, clean)
    assert used == "pca" and rows.shape == (K, 64)
    q, rank = projection_basis(rows)
    delta = (prot.images.astype(np.float64) - clean.images).reshape(len(prot), -1) / 255
    assert rank == K and np.abs(delta - delta @ q.numpy() @ q.numpy().T).max() < 1e-9
    assert perturbation_directions(prot, clean, "pca", k=3)[0].shape == (3, 64)


def test_alignment_is_one_for_the_patterns_and_zero_for_the_orthogonal():
    from unlearnable.attacks.ortho_proj import alignment

    _, _, pat = _planted_sets()
    q, _ = projection_basis(pat)
    w = torch.from_numpy(pat * 3.0)  # W's rows are the patterns (scaled: the span is what counts)
    assert alignment(projection_basis(w)[0], q) == pytest.approx([1.0] * K, abs=1e-9)
    other = torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64))[0]
    a, b = other[:, :5], other[:, 5:12]
    assert alignment(a, b) == pytest.approx([0.0] * 5, abs=1e-9)
    assert alignment(a, a[:, :2]) == pytest.approx([1.0, 1.0])


def test_oracle_attack_records_directions_and_alignment(tmp_path, digits16_poison, quick_recipe):
    poison, test, clean = digits16_poison
    poison, clean = poison.subset(np.arange(500)), clean.subset(np.arange(500))
    recipe = quick_recipe.replace(epochs=1, crop_padding=0)
    res = {}
    for name, params in (("learned", {}), ("perturbations", {"directions": "perturbations"})):
        ctx = AttackContext(poison, test, "convnet", recipe, 0, tmp_path / name, "cpu", False, clean, "d16")
        res[name] = run_attack("ortho-proj", ctx, {"linear_batch_size": "64", "linear_epochs": "5", **params})
    learned, oracle = res["learned"], res["perturbations"]
    assert (learned["directions"], oracle["directions"]) == ("learned", "perturbations")
    assert oracle["rank"] == K and oracle["perturbation_basis"] == "class-means"
    assert learned["alignment"] == oracle["alignment"] and len(learned["alignment"]) == K
    cos = learned["alignment"]
    # Sorted cosines in [0, 1]; W finds most of the (clipped) patterns' span, not all of it.
    assert cos == sorted(cos, reverse=True) and 0 <= cos[-1] and cos[0] <= 1 and cos[0] > 0.5
    assert np.load(tmp_path / "perturbations" / "perturbation_directions.npy").shape == (K, 256)
    assert ATTACKS["ortho-proj-oracle"].params().directions == "perturbations"
    bare = AttackContext(poison, test, "convnet", recipe, 0, tmp_path / "bare", "cpu", False, None, "d16")
    with pytest.raises(Exception, match="needs the clean base"):
        run_attack("ortho-proj", bare, {"directions": "perturbations"})
    with pytest.raises(Exception, match="directions must be"):
        run_attack("ortho-proj", bare, {"directions": "both"})
    assert "alignment" not in run_attack("ortho-proj", bare, {"linear_epochs": "1"})
