"""DFR audit: a clean-trained network's features beat a random network's; files, cache, errors."""

import json

import numpy as np
import pytest

from unlearnable._io import write_json
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
    # Resumed from the per-epoch cache: same numbers; another seed draws another subset.
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
