"""Fine-tuning analysis (analyses/finetune.py), its audit step and `audit finetune`; early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearnable import RECIPES, UnlearnableError, load_data
from unlearnable.analyses.dfr import _clean_subset, weights_sha256
from unlearnable.analyses.finetune import LEVEL_PARAMS, FinetuneParams, finetune_subsets, summarize
from unlearnable.attacks import AttackContext
from unlearnable.kinds import finetune_curve, run_attack
from unlearnable.attacks.early_stop import EarlyStopParams, pick_epoch, validation_set
from unlearnable.cli import main
from unlearnable.data.clean import pool_split
from unlearnable.train.checkpoint import checkpoint_paths, load_weights
from unlearnable.train.loop import evaluate
from unlearnable.train.run import load_run, spec_for, train_on

K = 10
SIZES = (20, 60)
PARAMS = FinetuneParams(sizes=SIZES, epochs=3, min_steps=30, lr=0.01, batch_size=32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_train, digits_test):
    """A ConvNet trained on digits carrying a class-wise +-48/255 pattern (standard training takes
    the shortcut, yet learns some digit features), and one trained on the clean images."""
    root = tmp_path_factory.mktemp("ft")
    pat = np.random.default_rng(0).choice([-48, 48], size=(K, 8, 8, 1))
    x = np.clip(digits_train.images.astype(np.int16) + pat[digits_train.labels], 0, 255).astype(np.uint8)
    poison = digits_train.replace(x, name="digits-classwise")
    recipe = RECIPES["tiny"].replace(epochs=6, flip=False, crop_padding=0)
    out = {}
    for name, ds in (("protected", poison), ("clean", digits_train)):
        train_on(ds, digits_test, spec_for(ds, "convnet", recipe, 0, "digits"), root / name, "cpu", False)
        out[name] = root / name
    return out


def test_subsets_are_nested_and_apart_from_dfr_and_validation():
    n, seed, dfr_n = 1437, 3, 300
    order = finetune_subsets(n, (20, 100, 400), seed, dfr_n)
    assert len(order) == 400 and len(set(order.tolist())) == 400
    assert set(order[:20]) <= set(order[:100]) <= set(order[:400])  # nested by construction
    # DFR's subset is drawn exactly as dfr.py draws it, and fine-tuning never uses its images.
    ds = load_data("digits")
    *_, settings, idx = _clean_subset(ds, ds, dfr_n, seed, 10, 1.0)
    assert np.array_equal(pool_split(n, seed, dfr_n).dfr, idx)
    assert not set(order.tolist()) & set(idx.tolist())
    full = pool_split(n, seed, dfr_n).attacker
    assert len(full) == n - dfr_n and np.array_equal(full[:400], order)
    with pytest.raises(UnlearnableError, match="--sizes"):
        finetune_subsets(n, (900,), seed, dfr_n)
    # A pool too small to keep them apart: DFR's images come last, the validation half never.
    big = finetune_subsets(n, (600,), seed, dfr_n)
    assert np.array_equal(big[:len(full) // 2], full[:len(full) // 2]) and set(big[len(full) // 2:]) <= set(idx)
    assert len(finetune_subsets(n, (5000,), seed, 5000, cap=True)) == n  # the audit caps, as DFR does
    # Early stopping validates on the other half.
    ctx = AttackContext(ds, ds, "convnet", RECIPES["tiny"], seed, ".", clean=ds)
    _, val = validation_set(ctx, EarlyStopParams(k=200, dfr_n=dfr_n))
    assert len(val) == 200 and not set(val.tolist()) & (set(order.tolist()) | set(idx.tolist()))


def test_finetune_beats_scratch_and_starts_where_it_says(runs, digits_train, digits_test, tmp_path):
    r = finetune_curve(runs["protected"], runs["clean"], digits_train, digits_test, PARAMS, seed=0, dfr_n=300,
                       out_dir=tmp_path, device="cpu", progress=False)
    rows = {row["k"]: row for row in r["rows"]}
    assert sorted(rows) == list(SIZES)
    small = rows[SIZES[0]]
    # The protected network learned digit features under the shortcut: fine-tuning it on 20
    # clean images beats training the same initialization on them.
    assert small["protected"] > small["scratch"] + 0.05, small
    for row in r["rows"]:
        assert row["gain"] == pytest.approx(row["protected"] - row["scratch"])
        window = row["clean"] - row["scratch"]
        assert row["recovered_fraction"] == pytest.approx(row["gain"] / window)
    # (b) starts from exactly the run's initialization; (a) and (c) from the final checkpoints.
    spec, _ = load_run(runs["protected"])
    assert r["start_sha256"]["scratch"] == weights_sha256(spec.build())
    for name in ("protected", "clean"):
        final = checkpoint_paths(runs[name])[-1][1]
        assert r["start_sha256"][name] == weights_sha256(load_weights(spec.build(), final))
    saved = json.loads((tmp_path / "finetune.json").read_text())
    assert saved["rows"] == r["rows"] and saved["gain_points"] == round(100 * max(x["gain"] for x in r["rows"]), 2)
    assert (tmp_path / "finetune.png").stat().st_size > 1000
    idx = np.load(tmp_path / "finetune_indices.npy", allow_pickle=False)
    assert np.array_equal(idx, finetune_subsets(len(digits_train), SIZES, 0, 300))
    # A rerun reuses every fine-tune (the cache), so it returns the same numbers at once.
    again = finetune_curve(runs["protected"], runs["clean"], digits_train, digits_test, PARAMS, seed=0,
                           dfr_n=300, out_dir=tmp_path, device="cpu", progress=False)
    assert again["rows"] == r["rows"] and again["seconds"] < r["seconds"]


def test_summary_takes_the_best_fraction_where_the_window_is_wide():
    rows = [{"k": 10, "protected": 0.5, "scratch": 0.3, "clean": 0.8, "gain": 0.2, "recovered_fraction": 0.4},
            {"k": 100, "protected": 0.85, "scratch": 0.7, "clean": 0.9, "gain": 0.15, "recovered_fraction": 0.75},
            {"k": 1000, "protected": 0.9, "scratch": 0.88, "clean": 0.9, "gain": 0.02, "recovered_fraction": 1.0}]
    s = summarize(rows)
    assert (s["recovered_fraction"], s["recovered_fraction_k"]) == (0.75, 100)  # k=1000's window is 2 points
    assert (s["gain_points"], s["gain_k"]) == (20.0, 10)
    bare = [{**r, "clean": None, "recovered_fraction": None} for r in rows]
    assert summarize(bare)["recovered_fraction"] is None


def test_clean_network_does_not_degrade_at_the_default_lr(runs, digits_train, digits_test, tmp_path):
    """The default fine-tuning recipe keeps a clean-trained network's accuracy within 2 points,
    even on 20 images (2 per class: lr 0.001 loses 1.4 here; on the 60,000-image Fashion-MNIST
    network it loses 2.5 at k = 100, against 6.9 at lr 0.01, docs/analyses.md)."""
    before = json.loads((runs["clean"] / "result.json").read_text())["test_accuracy"]
    p = FinetuneParams(sizes=(20,), epochs=3, min_steps=30, batch_size=32)  # the default lr
    r = finetune_curve(runs["clean"], None, digits_train, digits_test, p, dfr_n=300, out_dir=tmp_path,
                       device="cpu", progress=False, plot=False)
    assert r["rows"][0]["protected"] >= before - 0.02, (before, r["rows"])
    assert r["rows"][0]["clean"] is None and r["recovered_fraction"] is None


def test_cli_writes_the_files_and_refuses_bad_input(runs, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["audit", "finetune", str(runs["protected"]), "--sizes", "20", "--epochs", "1", "--min-steps", "2",
                 "--out", str(out), "--dfr-n", "300", "--no-progress", "--device", "cpu"]) == 0
    assert "protected" in capsys.readouterr().out
    r = json.loads((out / "finetune.json").read_text())
    assert [x["k"] for x in r["rows"]] == [20] and r["rows"][0]["clean"] is None
    assert (out / "finetune.png").exists()
    for argv, msg in ((["--sizes", "0"], "--sizes"), (["--sizes", "5000"], "--sizes"),
                      (["--clean-run", str(tmp_path)], "not a training run"), (["--lr", "nan"], "--lr")):
        assert main(["audit", "finetune", str(runs["protected"]), "--out", str(tmp_path / "x"), "--dfr-n", "300",
                     "--no-progress", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "x").exists()


def test_early_stop_picks_the_epoch_with_the_best_validation_accuracy(tmp_path, runs, digits_train, digits_test):
    curve = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.7}, {"epoch": 3, "val_accuracy": 0.7}]
    assert pick_epoch(curve)["epoch"] == 2  # the earliest of equals
    pat = np.random.default_rng(1).choice([-48, 48], size=(K, 8, 8, 1))
    x = np.clip(digits_train.images.astype(np.int16) + pat[digits_train.labels], 0, 255).astype(np.uint8)
    poison = digits_train.replace(x, name="digits-classwise")
    recipe = RECIPES["tiny"].replace(epochs=4, flip=False, crop_padding=0)
    ctx = AttackContext(poison, digits_test, "convnet", recipe, 0, tmp_path, "cpu", False, digits_train, "d")
    r = run_attack("early-stop", ctx, {"k": "100", "dfr_n": "300"})
    # Score every checkpoint on the recorded validation images independently.
    val = digits_train.subset(np.asarray(r["val_indices"]))
    model = ctx.spec().build()
    accs = {}
    for epoch, path in checkpoint_paths(tmp_path / "train"):
        accs[epoch] = evaluate(load_weights(model, path), val.uint8_tensor(), torch.from_numpy(val.labels))[1]
    best = max(accs, key=lambda e: (accs[e], -e))
    assert r["best_epoch"] == best and r["val_accuracy"] == accs[best] and r["val_n"] == 100
    metrics = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert r["test_accuracy"] == metrics[best - 1]["test_accuracy"]
    assert r["final_test_accuracy"] == metrics[-1]["test_accuracy"]
    with pytest.raises(UnlearnableError, match="needs the clean base"):
        run_attack("early-stop", AttackContext(poison, digits_test, "convnet", recipe, 0, tmp_path / "n", "cpu",
                                               False, None, "d"))


def test_every_level_has_its_number_of_sizes():
    assert [len(LEVEL_PARAMS[lv].sizes) for lv in ("tiny", "quick", "paper")] == [2, 3, 4]
    assert LEVEL_PARAMS["paper"].sizes == (100, 500, 1000, 5000)
