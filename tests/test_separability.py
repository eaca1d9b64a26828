"""Linear separability audit: class-wise perturbations are separable, i.i.d. noise is not."""

import json

import numpy as np
import pytest
import torch

from unlearnable import save_dataset
from unlearnable.analyses.separability import minmax01, perturbations, separability
from unlearnable.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


def test_classwise_perturbations_are_separable_and_random_noise_is_not():
    rng = np.random.default_rng(0)
    n, d, k = 1000, 64, 10
    y = torch.from_numpy(np.arange(n) % k)
    classwise = torch.from_numpy(rng.choice([-8 / 255, 8 / 255], size=(k, d))[y.numpy()]).float()
    r = separability(classwise, y, k, steps=50, repeats=2, seed=0)
    assert r["train_accuracy_mean"] == 1.0 and r["train_accuracy_std"] == 0.0
    assert all(run["steps"] < 50 for run in r["runs"])  # early stop at 100 %
    noise = torch.from_numpy(rng.normal(0, 8 / 255, size=(n, d))).float()
    shuffled = torch.from_numpy(rng.integers(0, k, n))
    r2 = separability(noise, shuffled, k, steps=50, repeats=2, seed=0)
    assert r2["train_accuracy_mean"] < 0.5
    assert len(r2["runs"]) == 2 and r2["runs"][0]["seed"] == 0 and r2["runs"][1]["seed"] == 1
    # seeded: the same call gives the same numbers; the MLP variant runs too
    assert separability(noise, shuffled, k, steps=20, seed=3)["runs"][0]["train_accuracy"] == \
        separability(noise, shuffled, k, steps=20, seed=3)["runs"][0]["train_accuracy"]
    mlp = separability(noise, shuffled, k, hidden=30, steps=20, seed=0)
    assert mlp["settings"]["model"] == "mlp(tanh, 30)" and 0 <= mlp["train_accuracy_mean"] <= 1


def test_minmax_is_global():
    x = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    assert torch.equal(minmax01(x.clone()), torch.tensor([[0.0, 0.5], [1.0, 0.75]]))
    assert torch.equal(minmax01(torch.ones(2, 2)), torch.zeros(2, 2))


def test_cli_separability_of_perturbations_and_images(tmp_path, digits_train, capsys):
    rng = np.random.default_rng(1)
    pat = rng.choice([-16, 16], size=(10, 8, 8, 1))
    x = np.clip(digits_train.images.astype(np.int16) + pat[digits_train.labels], 0, 255).astype(np.uint8)
    poison = digits_train.replace(x)
    save_dataset(tmp_path / "p", poison, {"method": "planted", "base": {"name": "digits"}}, base=digits_train)
    delta = perturbations(poison, digits_train)
    assert delta.shape == (len(x), 64) and abs(delta.abs().max().item() - 16 / 255) < 1e-6
    assert main(["audit", "separability", str(tmp_path / "p"), "--steps", "30", "--no-progress"]) == 0
    out = json.loads((tmp_path / "p" / "separability.json").read_text())
    assert out["train_accuracy_mean"] == 1.0 and out["of"] == "perturbations"
    assert "100.00%" in capsys.readouterr().out
    assert main(["audit", "separability", str(tmp_path / "p"), "--of", "images", "--steps", "5",
                 "--n", "300", "--no-progress"]) == 0
    img = json.loads((tmp_path / "p" / "separability-images-hidden0.json").read_text())
    assert img["settings"]["num_samples"] == 300 and img["settings"]["steps"] == 5
    # a clean named dataset has no perturbations: one-line error, exit 2
    assert main(["audit", "separability", "digits", "--no-progress"]) == 2
    assert "use --of images" in capsys.readouterr().err
