"""`unlearnable detect`: flags planted shortcuts, clears clean sets, ignores sample order, refuses
bad input in one line, writes its files, and runs as the audit's "detect" step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from unlearnable import ImageSet, load_data
from unlearnable.core.errors import UnlearnableError
from unlearnable.cli import main
from unlearnable.detect import detect, load_calibration
from unlearnable.poisons import (
    make_poison,
    poison_dataset,
    stored_poisoned_mask,
)


@pytest.fixture(scope="module")
def fmnist() -> ImageSet:
    try:
        full = load_data("fashion-mnist", "train")
    except UnlearnableError as e:
        pytest.skip(str(e))
    return full.subset(np.random.default_rng(0).choice(len(full), 1500, replace=False))


def test_the_shipped_calibration_is_complete():
    cal = load_calibration()
    assert set(cal["weights"]) == {"quant", "blur", "proj", "ncm"}
    assert 0 < cal["threshold"] < 1 and cal["fpr_target"] == 0.05
    assert "benchmarks/detect_calibration.py" in cal["command"]


def test_clean_digits_and_a_clean_fashion_mnist_subset_are_not_flagged(digits_train, fmnist):
    for ds in (digits_train, fmnist):
        r = detect(ds, "tiny")
        assert 0.0 <= r["score"] < r["threshold"], (ds.name, r["score"], r["features"])
        assert r["protected"] is False


def test_a_planted_class_wise_pattern_is_flagged(fmnist, digits_train):
    for base in (fmnist, digits_train):
        # One +-8/255 block pattern per class (Regions-4): invisible, and exactly a shortcut.
        ds = make_poison("regions", base, None, seed=0)
        r = detect(ds, "tiny")
        # On all of digits it is flagged with room to spare; on 1,500 Fashion-MNIST images it sits
        # at the threshold (docs/detect.md: Regions-4 is caught in two thirds of such sets), so
        # there the test is the score's rise over the clean base's.
        if base is digits_train:
            assert r["protected"] is True and r["score"] >= r["threshold"] + 0.1, (base.name, r["features"])
        else:
            assert r["score"] > detect(base, "tiny")["score"] + 0.1, r["features"]
        # The evidence a person can check: raw pixels beat the 2-bit view that erases the pattern.
        assert r["errors"]["raw"] < r["errors"]["quant"]


# Each run with MKL held to one instruction set (MKL_CBWR, read when the process starts): the
# held-out errors are counts of signs, and must not move with the CPU's vector width.
CPU_PATHS = ("AVX2", "SSE4_2")
ERRORS_OF_DIGITS = (
    "import json; from unlearnable import load_data; from unlearnable.detect.core import measure, params_for;"
    "print(json.dumps(measure(load_data('digits', 'train'), params_for('tiny', 0))['errors']))")


def test_the_measurements_do_not_depend_on_the_cpus_vector_width(digits_train):
    here = detect(digits_train, "tiny")["errors"]
    for path in CPU_PATHS:
        env = {**os.environ, "MKL_CBWR": path}
        out = subprocess.run([sys.executable, "-c", ERRORS_OF_DIGITS], env=env, capture_output=True, text=True,
                             check=True)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == here, path


def test_a_sample_wise_linearly_separable_poison_is_flagged(fmnist):
    ds = make_poison("lsp", fmnist, None, seed=0)
    r = detect(ds, "tiny")
    assert r["protected"] is True, r["features"]


def test_the_answer_does_not_depend_on_the_order_of_the_samples(digits_train):
    ds = make_poison("random-noise", digits_train, None, seed=0, fraction=0.5)
    perm = np.random.default_rng(1).permutation(len(ds))
    a, b = detect(ds, "tiny"), detect(ds.subset(perm), "tiny")
    assert a["score"] == b["score"] and a["errors"] == b["errors"]
    np.testing.assert_array_equal(a["per_sample"][perm], b["per_sample"])


def test_per_sample_scores_find_the_protected_half(tmp_path):
    out = poison_dataset("random-noise", "digits", tmp_path / "rn", seed=0, fraction=0.5)
    ds = load_data(str(out), "train")
    mask = stored_poisoned_mask(ds)
    s = detect(ds, "tiny")["per_sample"]
    assert s.shape == (len(ds),) and np.isfinite(s).all() and ((0 <= s) & (s <= 1)).all()
    # Protected samples score higher than untouched ones, far above chance.
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(mask, s) > 0.75


def test_cli_prints_one_line_and_writes_its_files(tmp_path, capsys):
    prot = poison_dataset("regions", "digits", tmp_path / "prot", seed=0)
    assert main(["detect", str(prot), "--budget", "tiny", "--out", str(tmp_path / "d")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{prot}: protected: score")
    doc = json.loads((tmp_path / "d" / "detect.json").read_text())
    assert isinstance(doc["score"], float) and 0 <= doc["score"] <= 1 and doc["protected"] is True
    assert {"threshold", "fpr_target", "features", "errors", "per_class", "seed", "versions"} <= set(doc)
    assert doc["dataset"]["content"].startswith("sha256:")
    html = (tmp_path / "d" / "detect.html").read_text()
    assert "data:image/png;base64," in html and "<script src" not in html and "protected" in html
    scores = np.load(tmp_path / "d" / "per_sample.npy", allow_pickle=False)
    assert scores.shape == (len(load_data(str(prot), "train")),)
    # Without --out: the decision in one line, nothing written.
    assert main(["detect", "digits", "--budget", "tiny"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("digits: not detected as protected")


def test_unreadable_input_is_a_one_line_error_and_nothing_is_created(tmp_path, capsys):
    prot = poison_dataset("regions", "digits", tmp_path / "prot", seed=0)
    (prot / "images.npy").write_bytes(b"\x93NUMPY garbage")
    out = tmp_path / "d"
    for data in (str(prot), str(tmp_path / "missing"), "no-such-dataset"):
        assert main(["detect", data, "--budget", "tiny", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("unlearnable: error:"), err
    assert not out.exists()
    assert main(["detect", "digits", "--budget", "nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_the_audit_step_runs_the_detector_and_has_a_headline(tmp_path, digits_train):
    from unlearnable.auditor.steps import AUDITS, Row
    from unlearnable.data.identity import content_id
    from unlearnable.ladder import level
    from unlearnable.runner.jobs import JobContext, run_job

    info = AUDITS["detect"]
    spec = info.spec(Row({"content": content_id(digits_train), "clean": "digits"}, None, None, digits_train,
                         level("tiny")))
    res = run_job(spec, JobContext(tmp_path))
    json.dumps(res)  # plain JSON, as the result store keeps it
    assert res["protected"] is False and info.headline(res) == f"detectable: no ({res['score']:.2f})"


def test_blurred_projected_and_pooled_classifiers_from_moments_equal_fits_on_the_data(digits_train):
    """The detector fits its blurred and projected classifiers, and the directions over both
    halves, from the raw moments (no pass over the data): the same weights as fits on the data."""
    import torch

    from unlearnable.core.linalg import projection_basis
    from unlearnable.detect.features import DEPENDENT, Moments, Ridge, _blur, blur_rows, projection_rows

    x, y = digits_train.to_tensor()
    flat = x.reshape(len(x), -1).double()
    k, half = digits_train.num_classes, len(x) // 2
    raw = Moments.of(flat, y, k)
    # The blur as a map of rows is the image blur, and its moments are those of the blurred data.
    blurred = _blur(x.double()).reshape(len(x), -1)
    assert torch.allclose(blur_rows(digits_train.chw)(flat), blurred, atol=1e-12)
    want = Ridge(blurred, y, k, 1e-2).w
    assert torch.allclose(Ridge.from_moments(raw.mapped(blur_rows(digits_train.chw)), 1e-2).w, want, atol=1e-9)
    # Projecting out a classifier's own directions: from the moments as from the projected data.
    w = Ridge(flat, y, k, 1e-2).w
    # The span of w's columns (the detector's Q: K - 1 of them, the columns sum to zero),
    # projected out of the data itself.
    q, rank = projection_basis(w.T, rtol=DEPENDENT)
    assert rank == k - 1
    want = Ridge(flat - flat @ q @ q.T, y, k, 1e-2).w
    got = Ridge.from_moments(raw.mapped(projection_rows(w)), 1e-2).w
    assert torch.allclose(got, want, atol=1e-9) and not torch.allclose(got, w, atol=1e-3)
    # Two halves pool into the moments of the whole.
    pooled = Moments.of(flat[:half], y[:half], k).pooled(Moments.of(flat[half:], y[half:], k))
    for a, b in ((pooled.mu, raw.mu), (pooled.g, raw.g), (pooled.b, raw.b), (pooled.tbar, raw.tbar)):
        assert torch.allclose(a, b, atol=1e-9)
    assert pooled.n == raw.n == len(x)
