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
    r = separability(classwise, y, k, steps=50, repeats=2, seed=0, max_iter=1, early_stop=True)
    assert r["train_accuracy_mean"] == 1.0 and r["train_accuracy_std"] == 0.0
    assert all(run["steps"] < 50 for run in r["runs"])  # early stop at 100 %
    assert r["optimizer"]["max_iter"] == 1 and r["optimizer"]["early_stop"] is True
    noise = torch.from_numpy(rng.normal(0, 8 / 255, size=(n, d))).float()
    shuffled = torch.from_numpy(rng.integers(0, k, n))
    r2 = separability(noise, shuffled, k, steps=50, repeats=2, seed=0)
    assert r2["train_accuracy_mean"] < 0.5
    assert len(r2["runs"]) == 2 and r2["runs"][0]["seed"] == 0 and r2["runs"][1]["seed"] == 1
    # seeded: the same call gives the same numbers; the MLP variant runs too
    assert separability(noise, shuffled, k, steps=20, seed=3)["runs"][0]["train_accuracy"] == \
        separability(noise, shuffled, k, steps=20, seed=3)["runs"][0]["train_accuracy"]
    mlp = separability(noise, shuffled, k, hidden=30, steps=20, seed=0, max_iter=1)
    assert mlp["settings"]["model"] == "mlp(tanh, 30)" and 0 <= mlp["train_accuracy_mean"] <= 1


def test_defaults_and_the_paper_level_are_the_released_optimiser(digits_train):
    """test_linear_separability.py: LBFGS(lr=0.5) with torch's max_iter=20, 500 steps, no early
    stop; the cheaper levels say what they use instead."""
    from unlearnable.auditor.steps import Row, separability_spec
    from unlearnable.ladder import level

    released = {"optimizer": "lbfgs", "lr": 0.5, "max_iter": 20, "steps": 500, "early_stop": False}
    y = torch.arange(40) % 4
    r = separability(torch.eye(40)[:, :16] + y[:, None].float(), y, 4, steps=3)
    assert {k: r["optimizer"][k] for k in released} == {**released, "steps": 3}
    # every step ran all 20 evaluations' worth of L-BFGS (no early stop even at 100 %)
    assert r["train_accuracy_mean"] == 1.0 and r["runs"][0]["steps"] == 3
    data = {"content": "x"}
    clean = {"content": "c", "clean": "digits"}
    for of in ("perturbations", "images"):
        spec = separability_spec(Row(data, clean, "digits", digits_train, level("paper")), of)
        assert {"steps": spec["steps"], "max_iter": spec["max_iter"], "early_stop": spec["early_stop"]} == \
            {"steps": 500, "max_iter": 20, "early_stop": False}
        assert spec["n"] is None and spec["repeats"] == (10 if of == "images" else 1)
        # the clean-image baseline: same N, settings and the images' repeats
        b = spec["baseline"]
        assert b["data"] == clean and b["of"] == "images" and b["repeats"] == 10
        assert {k: b[k] for k in ("steps", "max_iter", "early_stop", "n", "seed")} == \
            {k: spec[k] for k in ("steps", "max_iter", "early_stop", "n", "seed")}
    quick = separability_spec(Row(data, clean, "digits", digits_train, level("quick")), "images")
    assert (quick["max_iter"], quick["early_stop"]) == (1, True)
    # a clean set audited as is: its own baseline, no second job
    assert separability_spec(Row(clean, clean, "digits", digits_train, level("quick")), "images")["baseline"] == "self"


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
    assert main(["audit", "separability", str(tmp_path / "p"), "--steps", "30", "--max-iter", "1",
                 "--early-stop", "--no-progress"]) == 0
    out = json.loads((tmp_path / "p" / "separability.json").read_text())
    assert out["train_accuracy_mean"] == 1.0 and out["of"] == "perturbations"
    assert out["optimizer"]["max_iter"] == 1 and out["optimizer"]["early_stop"] is True
    # the clean digits at the same N and settings: read against it, the 100 % means something
    assert out["baseline"]["of"] == "clean images" and out["baseline"]["n"] == len(x)
    assert out["informative"] == (out["baseline"]["train_accuracy_mean"] < 0.95)
    assert "100.00%" in capsys.readouterr().out
    assert main(["audit", "separability", str(tmp_path / "p"), "--of", "images", "--steps", "5",
                 "--n", "300", "--no-progress"]) == 0
    img = json.loads((tmp_path / "p" / "separability-images-hidden0.json").read_text())
    assert img["settings"]["num_samples"] == 300 and img["settings"]["steps"] == 5
    assert img["optimizer"]["max_iter"] == 20 and img["baseline"]["n"] == 300
    # a clean named dataset has no perturbations: one-line error, exit 2
    assert main(["audit", "separability", "digits", "--no-progress"]) == 2
    assert "use --of images" in capsys.readouterr().err
