"""DFR audit: a clean-trained network's features beat a random network's; files, cache, errors."""

import json

import numpy as np
import pytest

from unlearnable.core.files import write_json
from unlearnable.analyses.dfr import dfr_curve
from unlearnable.cli import main
from unlearnable.train.run import RunSpec, train_on


pytestmark = pytest.mark.usefixtures("one_thread")


def test_dfr_on_trained_network_beats_random_init(tmp_path, digits_train, digits_test, quick_recipe, capsys):
    spec = RunSpec("convnet", 10, 1, (8, 8), quick_recipe.replace(epochs=3), seed=0, data="digits")
    train_on(digits_train, digits_test, spec, tmp_path / "run", progress=False)
    # A small clean subset: random features need more data than learned ones, so the gap shows.
    r = dfr_curve(tmp_path / "run", n=100, seed=0, device="cpu", progress=False)
    assert [c["epoch"] for c in r["curve"]] == [1, 2, 3]
    assert all(c["test_accuracy"] is not None for c in r["curve"])  # from metrics.jsonl
    assert r["max_dfr_accuracy"] > r["random_init_dfr_accuracy"] + 0.03
    assert r["min_dfr_loss"] < 0.75 * r["random_init_dfr_loss"]
    assert r["gain_over_random_init"] == r["max_dfr_accuracy"] - r["random_init_dfr_accuracy"]
    assert r["max_dfr_accuracy"] == max(c["dfr_accuracy"] for c in r["curve"])
    assert r["min_dfr_loss"] == min(c["dfr_loss"] for c in r["curve"])
    idx = np.load(tmp_path / "run" / "dfr_indices.npy")
    assert len(idx) == 100 and len(np.unique(idx)) == 100 and idx.max() < len(digits_train)
    saved = json.loads((tmp_path / "run" / "dfr.json").read_text())
    assert saved["max_dfr_epoch"] == r["max_dfr_epoch"] and saved["settings"]["n"] == 100
    assert (tmp_path / "run" / "dfr.png").stat().st_size > 1000
    # A rerun gives the same curve; another seed draws another subset.
    again = main(["audit", "dfr", str(tmp_path / "run"), "--n", "100", "--no-progress", "--device", "cpu"])
    assert again == 0 and "random init" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "dfr.json").read_text())["curve"] == saved["curve"]
    r2 = dfr_curve(tmp_path / "run", n=100, seed=1, device="cpu", progress=False, plot=False)
    assert r2["settings"]["indices_sha256"] != r["settings"]["indices_sha256"]


def test_dfr_without_checkpoints_is_a_one_line_error(tmp_path, quick_recipe, capsys):
    spec = RunSpec("convnet", 10, 1, (8, 8), quick_recipe.replace(epochs=1), seed=0, data="digits")
    write_json(tmp_path / "run" / "run.json", {"spec": spec.to_dict()})  # a run that saved none
    assert main(["audit", "dfr", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no per-epoch checkpoints" in err[0]
    # Any other first word is the full audit's DATA: not a dataset, a one-line error.
    assert main(["audit", "nonsense", "--out", str(tmp_path / "o")]) == 2
    assert "unknown dataset 'nonsense'" in capsys.readouterr().err


def test_released_procedure_refits_the_trained_head_and_reestimates_batchnorm(digits_train, digits_test):
    """dfr_step_2.py: the trained head is the starting point (no new head), the network runs in
    train mode so BatchNorm's running statistics move to the clean images; the paper's procedure
    leaves the network untouched."""
    import torch

    from unlearnable.analyses.dfr import fit_head
    from unlearnable.models import build_model

    torch.manual_seed(0)
    model = build_model("convnet", 10, 1, (8, 8))
    with torch.no_grad():
        model.head.weight.normal_()
    head0 = model.head.weight.detach().clone()
    bn0 = [b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")]
    sub = digits_train.subset(np.arange(200))
    x_tr, y_tr, x_te, y_te = sub.uint8_tensor(), sub.labels, digits_test.uint8_tensor(), digits_test.labels
    fit_head("paper", model, x_tr, y_tr, x_te, y_te, 10)
    means = [b for n, b in model.named_buffers() if n.endswith("running_mean")]
    assert all(torch.equal(a, b) for a, b in zip(bn0, means))
    # A step too small to move the head: what is left of the head is the trained one, not a new one.
    from unlearnable.analyses import dfr as dfr_mod

    r = dfr_mod.released_head(model, x_tr, y_tr, x_te, y_te, 10, crop_padding=1, flip=False, seed=0,
                              epochs=1, batch_size=128, lr=1e-12)
    assert torch.allclose(model.head.weight, head0, atol=1e-6)
    assert r["bn_running_mean_change"] > 1e-3
    bn1 = [b for n, b in model.named_buffers() if n.endswith("running_mean")]
    assert any(not torch.equal(a, b) for a, b in zip(bn0, bn1))
    # A real refit moves the head and learns the classes.
    r = dfr_mod.released_head(model, x_tr, y_tr, x_te, y_te, 10, crop_padding=1, flip=False, seed=0,
                              epochs=3, batch_size=128)
    assert not torch.allclose(model.head.weight, head0) and r["dfr_accuracy"] > 0.3
    assert all(p.requires_grad for p in model.parameters())  # the model is left trainable


def test_indices_select_exactly_those_images(tmp_path, digits_train, digits_test, quick_recipe, capsys):
    spec = RunSpec("convnet", 10, 1, (8, 8), quick_recipe.replace(epochs=1), seed=0, data="digits")
    train_on(digits_train, digits_test, spec, tmp_path / "run", progress=False)
    idx = np.array([5, 3, 99, 700, 42] * 1 + list(range(1000, 1095)), dtype=np.int64)
    np.save(tmp_path / "idx.npy", idx)
    assert main(["audit", "dfr", str(tmp_path / "run"), "--indices", str(tmp_path / "idx.npy"),
                 "--procedure", "released", "--no-progress", "--device", "cpu"]) == 0
    assert "released procedure" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "dfr-released.json").read_text())
    assert saved["procedure"] == "released" and saved["settings"]["indices_from"] == "file"
    assert saved["settings"]["n"] == len(idx)
    assert np.array_equal(np.load(tmp_path / "run" / "dfr_indices.npy"), idx)
    assert not (tmp_path / "run" / "dfr.json").exists()  # each procedure keeps its own file
    # Bad index files: one line naming the file, nothing written.
    for bad, why in ((np.array([0, 0, 1]), "repeat"), (np.array([0, 10 ** 6]), "[0, "),
                     (np.zeros((2, 2), dtype=np.int64), "1-D integer")):
        np.save(tmp_path / "bad.npy", bad)
        assert main(["audit", "dfr", str(tmp_path / "run"), "--indices", str(tmp_path / "bad.npy"),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "bad.npy" in err[0] and why in err[0]


def test_dfr_head_fits_with_one_blas_thread_and_keeps_the_result(monkeypatch):
    """The logistic regression runs with BLAS limited to one thread (torch's spinning OpenMP
    threads made a 2-thread fit 30x slower on 2 cores), and gives the unlimited fit's result."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info

    from unlearnable.analyses.dfr import dfr_head

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    f = rng.normal(size=(300, 8)) + y[:, None]
    seen = []
    fit = LogisticRegression.fit

    def spy(self, *a, **k):
        seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
        return fit(self, *a, **k)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    r = dfr_head(f[:200], y[:200], f[200:], y[200:], 3)
    assert seen == [1]
    mu, sd = f[:200].mean(0), f[:200].std(0)
    ref = fit(LogisticRegression(max_iter=1000), (f[:200] - mu) / sd, y[:200])
    assert r["dfr_accuracy"] == float((ref.predict((f[200:] - mu) / sd) == y[200:]).mean())
