"""D-VAE (Yu et al., ICML 2024): the network's shapes, the loss's rules, purification's
determinism, resume after a kill, the purified set as a dataset, and that the reconstructions
carry much less of a class-wise pattern than the input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearnable import load_data, load_dataset_dir, save_dataset
from unlearnable.attacks import ATTACKS, AttackContext
from unlearnable.attacks.dvae import DVAELoss, DVAEParams, kl_weight, purify, train_stage
from unlearnable.cli import main
from unlearnable.core.errors import UnlearnableError
from unlearnable.kinds import run_attack
from unlearnable.models.dvae import DVAE

from helpers import check_docstring_template


@pytest.mark.parametrize("c, h, w", [(1, 28, 28), (3, 32, 32), (1, 15, 9)])
def test_the_network_keeps_the_image_shape_and_halves_the_latent(c, h, w):
    net = DVAE(c, 10, (h, w), width=8)
    x = torch.rand(3, c, h, w)
    rec, mu, log_var, p = net(x, torch.tensor([0, 4, 9]))
    assert rec.shape == p.shape == x.shape
    assert mu.shape == log_var.shape == (3, 32, (h + 1) // 2, (w + 1) // 2)
    assert 0 <= rec.min() and rec.max() <= 1  # the sigmoid; the perturbation is unbounded
    with pytest.raises(ValueError, match="width"):
        DVAE(c, 10, (h, w), width=7)


def test_the_original_width_has_its_latent_of_256_channels():
    net = DVAE(3, 10, (32, 32))
    mu, _ = net.encode(torch.rand(1, 3, 32, 32))
    assert mu.shape == (1, 256, 16, 16) and net.emb_p.embedding_dim == 128 * 16 * 16


def test_the_loss_follows_the_originals_rules():
    assert kl_weight(1.0) == kl_weight(3.0) == 0.01 and kl_weight(0.5) == 0.5
    assert DVAEParams().penalty_start == 10 and DVAEParams(epochs=10).penalty_start == 1
    assert DVAEParams(epochs=10, penalty_after=4).penalty_start == 4
    torch.manual_seed(0)
    net = DVAE(1, 10, (8, 8), width=4)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    # Two steps per epoch, the penalty after epoch index 0: steps 0-1 without it, 2 on with it.
    loss = DVAELoss(target=1e6, penalty_start=0, steps_per_epoch=2, max_grad_norm=5.0)
    values = []
    for _ in range(3):
        torch.manual_seed(1)  # the same latent sample each call
        value, logits = loss(net, x, y, torch.Generator())
        values.append(float(value.detach()))
        assert logits is None
    assert values[0] == values[1] and values[2] >= values[1] + 0.002 - 1e-7
    # Below the target the rate term is a constant: it moves no weight of the encoder's mu.
    torch.manual_seed(1)
    value, _ = DVAELoss(1e6, 99, 2, 5.0)(net, x, y, torch.Generator())
    value.backward()
    g_target = net.fc_var.weight.grad.clone()
    net.zero_grad()
    torch.manual_seed(1)
    rec, mu, log_var, p = net(x, y)
    (torch.nn.functional.mse_loss(rec, x) + torch.nn.functional.mse_loss((rec + p).clamp(0, 1), x)).backward()
    assert torch.allclose(g_target, net.fc_var.weight.grad)
    assert loss.state_dict() == {"step": 3}
    with pytest.raises(ValueError, match="stages"):
        DVAEParams(stages=3)


def _pattern_set(n: int = 1000):
    tr = load_data("digits", "train")
    x0, y = tr.images[:n], tr.labels[:n]
    pattern = np.random.default_rng(0).choice([-32, 32], size=(10, *x0.shape[1:]))
    xp = np.clip(x0.astype(np.int16) + pattern[y], 0, 255).astype(np.uint8)
    return tr, x0, xp, y, pattern


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


def test_purification_is_uint8_of_the_same_shape_and_repeats_under_its_seed():
    _, _, xp, y, _ = _pattern_set(200)
    x, yt = _nchw(xp), torch.from_numpy(y)
    p = DVAEParams(epochs=1, width=4, batch_size=64)
    net = train_stage(x, yt, 10, p, 1.0, seed=3, out_dir=None)
    again = train_stage(x, yt, 10, p, 1.0, seed=3, out_dir=None)
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # the same seed trains the same network
    for reconstruct in (False, True):
        out = purify(net, x, yt, seed=5, reconstruct=reconstruct)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        assert torch.equal(out, purify(net, x, yt, seed=5, reconstruct=reconstruct))
    assert not torch.equal(purify(net, x, yt, 5, True), purify(net, x, yt, 6, True))  # the latent is sampled


def test_a_stage_killed_after_an_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    _, _, xp, y, _ = _pattern_set(200)
    x, yt = _nchw(xp), torch.from_numpy(y)
    p = DVAEParams(epochs=3, width=4, batch_size=64, penalty_after=0)  # the penalty's epoch count resumes too
    whole = train_stage(x, yt, 10, p, 1.0, 0, tmp_path / "whole")
    train_stage(x, yt, 10, p, 1.0, 0, tmp_path / "killed", stop_after_epoch=1)
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "train_accuracy" not in json.loads(lines[0])
    resumed = train_stage(x, yt, 10, p, 1.0, 0, tmp_path / "killed")
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(UnlearnableError, match="other settings"):
        train_stage(x, yt, 10, DVAEParams(epochs=3, width=8), 1.0, 0, tmp_path / "killed")


def test_the_reconstructions_carry_much_less_of_a_class_wise_pattern_than_the_input():
    """A class-wise +-32/255 pattern on digits: a linear probe that reads the pattern's directions
    finds the class from (input - clean) every time, from (purified - clean) far less often, and
    the share of the pattern left falls to a fraction."""
    from sklearn.linear_model import LogisticRegression

    _, x0, xp, y, pattern = _pattern_set()
    x, yt = _nchw(xp), torch.from_numpy(y)
    p = DVAEParams(epochs=5, width=8, batch_size=64)
    x1 = purify(train_stage(x, yt, 10, p, p.rate1, 1, None), x, yt, 1, reconstruct=False)
    x2 = purify(train_stage(x1, yt, 10, p, p.rate2, 2, None), x1, yt, 2, reconstruct=True)
    dirs = pattern.reshape(10, -1).astype(np.float64)

    def probe(res: np.ndarray) -> tuple[float, float]:
        r = res.reshape(len(res), -1).astype(np.float64)
        f = r @ dirs.T / (dirs ** 2).sum(1)
        half = len(r) // 2
        acc = LogisticRegression(max_iter=2000).fit(f[:half], y[:half]).score(f[half:], y[half:])
        kept = float(np.mean(f[np.arange(len(r)), y]))  # the share of each image's own pattern left
        return acc, kept

    acc_in, kept_in = probe(xp.astype(np.int16) - x0)
    acc_out, kept_out = probe(x2.permute(0, 2, 3, 1).numpy().astype(np.int16) - x0)
    assert acc_in == 1.0 and kept_in > 0.6
    assert acc_out < acc_in - 0.25, (acc_in, acc_out)
    assert kept_out < kept_in / 4, (kept_in, kept_out)


def test_the_purified_set_is_a_dataset_audit_and_detect_can_read(tmp_path, capsys):
    tr, x0, xp, y, _ = _pattern_set(300)
    prot = save_dataset(tmp_path / "prot", tr.subset(np.arange(300)).replace(xp),
                        {"method": "regions", "kind": "class-wise", "base": {"name": "digits"}})
    rc = main(["attack", "dvae", str(prot), "--level", "tiny", "--out", str(tmp_path / "run"),
               "--save-purified", str(tmp_path / "kept"), "--no-progress"])
    assert rc == 0 and "purified training set ->" in capsys.readouterr().out
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["attack_params"]["width"] == 8 and result["attack_params"]["epochs"] == 1  # tiny's preset
    inner = load_dataset_dir(tmp_path / "run" / "purified")
    kept = load_dataset_dir(tmp_path / "kept")
    assert np.array_equal(inner.images, kept.images) and np.array_equal(kept.labels, y)
    man = kept.meta["manifest"]
    assert man["method"] == "dvae-purified" and man["purified"]["by"] == "dvae" and man["kind"] == "class-wise"
    assert man["derived_from"]["method"] == "regions" and man["params"]["stages"] == 2
    assert man["perturbation_measured"]["images_changed"] > 0  # measured against the clean digits
    # Its base is followed to the clean test split, from wherever the set is read.
    assert len(load_data(str(tmp_path / "kept"), "test")) == len(load_data("digits", "test"))
    assert (tmp_path / "run" / "purified.png").is_file()
    # An existing destination, or an attack that keeps no purified set: one line, nothing made.
    for args, msg in ((["dvae", "--save-purified", str(tmp_path / "kept")], "exists"),
                      (["coin", "--save-purified", str(tmp_path / "k2")], "keeps no purified")):
        rc = main(["attack", args[0], str(prot), "--level", "tiny", "--out", str(tmp_path / "r2"), *args[1:],
                   "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and msg in err and "\n" not in err
        assert not (tmp_path / "r2").exists() and not (tmp_path / "k2").exists()


def test_the_dvae_attack_has_its_registry_facts():
    info = ATTACKS["dvae"]
    check_docstring_template(info.fn, "unlearnable attack dvae", info.params_cls)
    assert info.family == "purification" == ATTACKS["coin"].family and info.purified_set == "purified"
    assert info.params({}).epochs == 60 and info.params({}).width == 64  # the original's
    assert info.cost_of(info.preset("paper")) > info.cost_of(info.preset("quick")) > info.cost_of(info.preset("tiny"))
    with pytest.raises(UnlearnableError, match="width"):
        info.params({"width": "5"})


def test_the_attack_is_deterministic_and_reused(tmp_path, digits_train, digits_test, quick_recipe):
    small = digits_train.subset(np.arange(200))
    outs = []
    for d in ("a", "b"):
        ctx = AttackContext(small, digits_test, "convnet", quick_recipe.replace(epochs=1), 0, tmp_path / d,
                            progress=False, clean=small, data_name="digits")
        outs.append(run_attack("dvae", ctx, {"epochs": "1", "width": "4"}))
    a, b = (load_dataset_dir(tmp_path / d / "purified") for d in ("a", "b"))
    assert np.array_equal(a.images, b.images) and outs[0]["test_accuracy"] == outs[1]["test_accuracy"]


def test_a_kept_training_set_names_a_relative_base_from_where_it_is_written(tmp_path, monkeypatch):
    """A set whose base is an image folder named relative to it: D-VAE's --save-purified and
    ortho-proj's --save-recovered, written at other depths, still find that base's test split."""
    from helpers import write_png
    from unlearnable.data.identity import content_id

    monkeypatch.setenv("UNLEARNABLE_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    for split, n in (("train", 200), ("test", 60)):
        ds = load_data("digits", split)
        for i in range(n):
            write_png(work / "relbase" / split / ds.classes[ds.labels[i]] / f"{i}.png", ds.images[i, ..., 0])
    monkeypatch.chdir(work)
    assert main(["-q", "poison", "regions", "--dataset", "imagefolder:relbase", "--out", "sets/p"]) == 0
    want = content_id(load_data("imagefolder:relbase", "test"))
    assert main(["-q", "attack", "dvae", "sets/p", "--level", "tiny", "--out", "runs/a",
                 "--save-purified", "deep/er/kept", "--no-progress"]) == 0
    assert main(["-q", "attack", "ortho-proj", "sets/p", "--recipe", "tiny", "--epochs", "1", "--out", "runs/x/op",
                 "--save-recovered", "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path)
    for d in ("deep/er/kept", "runs/a/purified", "runs/x/op/recovered"):
        assert content_id(load_data(str(work / d), "test")) == want, d
