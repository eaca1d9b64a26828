"""Smoothing defences (exact against direct loops) and UEraser as APBench runs it (kornia ops,
worst-of-K loss, schedule); UEraser's tests skip when the kornia extra is not installed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearnable.core.errors import UnlearnableError
from unlearnable.attacks import ATTACKS, AttackContext
from unlearnable.kinds import run_attack
from unlearnable.attacks.smooth import gaussian_blur, gaussian_kernel1d, median_filter
from unlearnable.ladder import recipe_for


def rand_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def reflect(img: np.ndarray, r: int) -> np.ndarray:
    return np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")


@pytest.mark.parametrize("k, sigma", [(3, 1.0), (5, 0.7)])
def test_gaussian_blur_equals_a_direct_convolution(k, sigma):
    images = rand_images(4, 9, 11, 3)
    out = gaussian_blur(images, k, sigma)
    x = np.arange(k) - (k - 1) / 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g2 = np.outer(g, g) / g.sum() ** 2  # the 2-D kernel of the separable one
    for n in range(len(images)):
        xp = reflect(images[n], k // 2)
        want = np.zeros(images.shape[1:])
        for i in range(images.shape[1]):
            for j in range(images.shape[2]):
                want[i, j] = (xp[i:i + k, j:j + k] * g2[:, :, None]).sum((0, 1))
        assert np.array_equal(out[n], np.clip(np.round(want), 0, 255).astype(np.uint8))
    assert torch.allclose(gaussian_kernel1d(k, sigma).sum(), torch.tensor(1.0, dtype=torch.float64))


def test_apbench_gaussian_default_leaves_uint8_images_unchanged():
    # GaussianBlur(3, sigma=0.1): the off-centre weights are exp(-50), far below half a grey level.
    images = rand_images(8, 8, 8, 1)
    assert np.array_equal(gaussian_blur(images), images)
    assert not np.array_equal(gaussian_blur(images, 3, 1.0), images)


def test_median_filter_equals_np_median():
    images = rand_images(3, 7, 6, 2, seed=1)
    out = median_filter(images, 3)
    for n in range(len(images)):
        xp = reflect(images[n], 1)
        for i in range(7):
            for j in range(6):
                assert (out[n, i, j] == np.median(xp[i:i + 3, j:j + 3].reshape(9, -1), axis=0)).all()
    spike = np.full((1, 5, 5, 1), 100, np.uint8)
    spike[0, 2, 2, 0] = 255
    assert (median_filter(spike) == 100).all()  # an isolated spike is removed
    with pytest.raises(UnlearnableError, match="kernel_size"):
        median_filter(images, 4)


@pytest.mark.parametrize("name", ["gaussian-smooth", "median-smooth"])
def test_smoothing_attack_transforms_train_and_optionally_test(tmp_path, name, digits_train, digits_test,
                                                              quick_recipe):
    small = digits_train.subset(np.arange(300))
    ctx = AttackContext(small, digits_test, "convnet", quick_recipe.replace(epochs=1), 0, tmp_path,
                        progress=False, data_name="digits")
    params = {"test": "true", **({"sigma": "1"} if name == "gaussian-smooth" else {})}
    r = run_attack(name, ctx, params)
    assert 0 < r["changed_fraction"] < 1 and 0 <= r["test_accuracy_transformed_test"] <= 1
    assert json.loads((tmp_path / "result.json").read_text())["attack_params"]["test"] is True
    with pytest.raises(UnlearnableError, match="kernel_size"):
        ATTACKS[name].params({"kernel_size": "2"})


# --- UEraser (kornia) --------------------------------------------------------------------------

def test_ueraser_facts_do_not_need_kornia():
    info = ATTACKS["ueraser"]
    assert info.recipes == {"paper": "apbench"}
    r = recipe_for("paper", attack="ueraser")  # APBench's schedule
    assert (r.epochs, r.lr, r.batch_size, r.schedule, r.milestones, r.gamma) == (200, 0.1, 128, "step", (100,), 0.5)
    p = info.params()
    assert (p.repeats, p.repeat_fraction) == (5, 1.0)
    with pytest.raises(UnlearnableError, match="repeat_fraction"):
        info.params({"repeat_fraction": "2"})


def test_ueraser_uses_kornias_policy_and_the_worst_of_k():
    kornia = pytest.importorskip("kornia")
    from unlearnable.attacks.ueraser import WorstOfK, ueraser_policy

    policy = ueraser_policy()
    names = [type(m).__name__ for m in policy.children()]
    assert names == ["RandomPlasmaBrightness", "RandomPlasmaContrast", "RandomChannelShuffle", "TrivialAugment"]
    assert all(type(m).__module__.startswith("kornia.") for m in policy.children())
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(0)
    a = policy(x)
    torch.manual_seed(0)
    assert torch.equal(a, policy(x)) and a.shape == x.shape  # seeded by torch's global generator
    # The loss: per image, the highest cross-entropy over K copies, while repeat_epochs last.
    y = torch.arange(6) % 10
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    loss_fn = WorstOfK(policy, 4, repeat_epochs=1, steps_per_epoch=2)
    torch.manual_seed(1)
    worst, _ = loss_fn(model, x, y, torch.Generator())
    torch.manual_seed(1)
    per = torch.stack([torch.nn.functional.cross_entropy(model(policy(x)), y, reduction="none") for _ in range(4)])
    assert torch.allclose(worst, per.max(0).values.mean())
    loss_fn(model, x, y, torch.Generator())  # the second step of epoch 0
    torch.manual_seed(2)
    single, _ = loss_fn(model, x, y, torch.Generator())  # epoch 1: one copy, plain cross-entropy
    torch.manual_seed(2)
    assert torch.allclose(single, torch.nn.functional.cross_entropy(model(policy(x)), y))
    # Its step count is its state: what fit saves in last.pt and a resumed run restores.
    resumed = WorstOfK(policy, 4, repeat_epochs=1, steps_per_epoch=2)
    resumed.load_state_dict(loss_fn.state_dict())
    assert resumed.calls == 3
    with pytest.raises(ValueError, match="integer >= 0"):
        resumed.load_state_dict({"calls": -1})
    assert kornia.__version__


def test_ueraser_attack_runs_when_kornia_is_installed(tmp_path, digits_train, digits_test, quick_recipe):
    pytest.importorskip("kornia")
    small = digits_train.subset(np.arange(200))
    ctx = AttackContext(small, digits_test, "convnet", quick_recipe.replace(epochs=2), 0, tmp_path,
                        progress=False, data_name="digits")
    r = run_attack("ueraser", ctx, {"repeats": "2", "repeat_fraction": "0.5"})
    assert r["worst_of_k_epochs"] == 1 and r["kornia"] and 0 <= r["test_accuracy"] <= 1
