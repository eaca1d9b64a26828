"""Numbers with their uncertainty (issue 31, item 3): the intervals, the borderline verdict,
standard training's epoch spread and the audit's --seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearnable import UnlearnableError, load_data, save_dataset
from unlearnable.attacks import ATTACKS, register_attack
from unlearnable.attacks.base import train_and_evaluate
from unlearnable.auditor import AuditConfig, run_audit
from unlearnable.auditor.verdict import epoch_spread, evidence, verdict
from unlearnable.cli import main
from unlearnable.core.stats import mean_interval, overlap, t975, wilson


def test_wilson_matches_the_known_binomial_cases():
    # 50 of 100: the textbook score interval; 0 of 10 keeps a positive upper end (the normal
    # approximation would give [0, 0]); and it narrows as 1/sqrt(n).
    lo, hi = wilson(0.5, 100)
    assert lo == pytest.approx(0.40383, abs=1e-5) and hi == pytest.approx(0.59617, abs=1e-5)
    lo, hi = wilson(0.0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-5)
    w100, w10k = (np.diff(wilson(0.7, n))[0] for n in (100, 10_000))
    assert w100 / w10k == pytest.approx(10, rel=0.05)
    with pytest.raises(ValueError):
        wilson(0.5, 0)


def test_wilson_covers_the_true_accuracy_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    p, n = 0.83, 400
    hits = [lo <= p <= hi for lo, hi in (wilson(k / n, n) for k in rng.binomial(n, p, 4000))]
    assert 0.93 <= np.mean(hits) <= 0.97


def test_mean_interval_over_seeds():
    mean, std, iv = mean_interval([0.60, 0.64, 0.62])
    assert mean == pytest.approx(0.62) and std == pytest.approx(0.02)
    assert iv == pytest.approx((0.62 - t975(2) * 0.02 / math.sqrt(3), 0.62 + t975(2) * 0.02 / math.sqrt(3)))
    assert mean_interval([0.5]) == (0.5, None, None)
    assert overlap((0.1, 0.2), (0.2, 0.3)) and not overlap((0.1, 0.2), (0.21, 0.3))


def test_epoch_spread_reads_the_last_third_of_the_run():
    curve = [{"epoch": i, "test_accuracy": a} for i, a in enumerate([0.1, 0.9, 0.2, 0.7, 0.3, 0.5])]
    assert epoch_spread(curve) == pytest.approx(np.std([0.3, 0.5], ddof=1))
    assert epoch_spread(curve[:1]) is None and epoch_spread(None) is None
    # The spread widens standard training's interval beyond the binomial one.
    ev = evidence(0.5, 10_000, curve=curve)
    assert ev["interval"] == pytest.approx([0.5 - ev["epoch_spread"], 0.5 + ev["epoch_spread"]])


def test_every_accuracy_of_the_verdict_carries_its_interval():
    v = verdict(0.85, {"none": {"test_accuracy": 0.30}, "jpeg": {"test_accuracy": 0.50}}, n_test=2000)
    assert v["clean_interval"] == pytest.approx(list(wilson(0.85, 2000)))
    for name, acc in (("none", 0.30), ("jpeg", 0.50)):
        assert v["per_attack"][name]["interval"] == pytest.approx(list(wilson(acc, 2000)))
    assert v["threshold_interval"] == pytest.approx([0.8 * x for x in wilson(0.85, 2000)])
    assert v["overall"] == "holds" and v["decisive"] == "jpeg" and not v["borderline"]


@pytest.mark.parametrize("acc, borderline", [(0.68, True), (0.675, True), (0.70, False), (0.66, False)])
def test_borderline_fires_when_the_threshold_lies_inside_the_interval(acc, borderline):
    # Threshold: 80 % of 85 % = 68 %, its interval from the clean reference's on 10,000 images
    # about +-0.6 points; the attack's own about +-0.9.
    v = verdict(0.85, {"none": {"test_accuracy": 0.30}, "jpeg": {"test_accuracy": acc}}, n_test=10_000,
                level="quick")
    assert v["overall"] == ("broken" if acc >= 0.68 else "holds")
    assert v["borderline"] is borderline
    if borderline:
        assert "Borderline" in v["reason"] and "--seeds 3" in v["reason"] and "--level paper" in v["reason"]
        assert v["settle"] == "rerun with --seeds 3 or audit at --level paper"
    else:
        assert v["settle"] is None and "Borderline" not in v["reason"]


def test_borderline_reads_standard_trainings_epoch_spread_and_seeds():
    # Standard training's last epoch is well under the line but swung across it in its last third.
    curve = [{"epoch": i, "test_accuracy": a} for i, a in enumerate([0.3, 0.4, 0.5, 0.5, 0.6, 0.6, 0.75, 0.55, 0.62])]
    v = verdict(0.85, {"none": {"test_accuracy": 0.62}}, n_test=10_000, level="paper", curve=curve)
    assert v["overall"] == "holds" and v["decisive"] == "none" and v["borderline"]
    assert v["settle"] == "rerun with --seeds 3"
    # With seeds, the figure is the mean and the spread the seeds'.
    v = verdict(0.85, {"none": {"test_accuracy": 0.30}, "jpeg": {"test_accuracy": 0.70}}, n_test=10_000,
                seeds={"jpeg": [0.70, 0.60, 0.65], "clean": [0.85, 0.86, 0.84]}, level="quick")
    jp = v["per_attack"]["jpeg"]
    assert jp["accuracy"] == pytest.approx(0.65) and jp["seed_std"] == pytest.approx(0.05)
    assert v["overall"] == "holds" and v["borderline"] and v["settle"].startswith("rerun with --seeds 6")


def _on_clean(ctx, p):
    return train_and_evaluate(ctx, train=ctx.clean)[1]


@pytest.fixture
def clean_attack(monkeypatch):
    monkeypatch.setattr("unlearnable.attacks.base.ATTACKS", ATTACKS)
    monkeypatch.delitem(ATTACKS, "throwaway-seeded", raising=False)
    register_attack("throwaway-seeded", "train on the clean images", family="projection", order=98)(_on_clean)
    yield "throwaway-seeded"
    ATTACKS.pop("throwaway-seeded", None)


def test_audit_seeds_rerun_the_decisive_trainings(clean_attack, tmp_path, capsys):
    base = load_data("digits", "train").subset(np.arange(300))
    pattern = np.random.default_rng(0).integers(0, 256, (10, *base.images.shape[1:]), dtype=np.uint8)
    prot = save_dataset(tmp_path / "p", base.replace(pattern[base.labels]),
                        {"method": "throwaway-pattern", "kind": "class-wise", "base": {"name": "digits"}}, base=base)
    r = run_audit(prot, tmp_path / "a", AuditConfig(level="tiny", attacks=(clean_attack,), seeds=2),
                  progress=False, cache=tmp_path / "cache")
    assert set(r["seeds"]) == {"clean", "none", clean_attack} and all(len(v) == 2 for v in r["seeds"].values())
    assert (tmp_path / "a" / "seeds" / "1" / "attacks" / clean_attack / "result.json").exists()
    assert (tmp_path / "a" / "seeds" / "1" / "train-protected").is_dir()
    v = r["verdict"]
    assert v["n_test"] == len(load_data("digits", "test"))
    for name in ("none", clean_attack):
        per = v["per_attack"][name]
        assert per["seeds"] == r["seeds"][name] and per["accuracy"] == pytest.approx(np.mean(r["seeds"][name]))
        lo, hi = per["interval"]
        assert lo <= per["accuracy"] <= hi
    assert v["clean_accuracy"] == pytest.approx(np.mean(r["seeds"]["clean"]))
    report = (tmp_path / "a" / "report.md").read_text()
    assert "95% interval" in report and "over 2 seeds" in report
    # A seed count out of range is one line, and nothing is made.
    with pytest.raises(UnlearnableError, match="--seeds"):
        AuditConfig(seeds=0)
    assert main(["audit", str(prot), "--out", str(tmp_path / "b"), "--seeds", "21", "--level", "tiny"]) == 2
    assert "--seeds" in capsys.readouterr().err and not (tmp_path / "b").exists()
