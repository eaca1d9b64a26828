"""The full audit: results, verdict, report (opened in headless Chromium), resume, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from unlearnable import UnlearnableError
from unlearnable.auditor.steps import DFR_RANDOM_INITS
from unlearnable.auditor import AuditConfig, Thresholds, run_audit, verdict
from unlearnable.cli import main
from unlearnable.poisons.make import poison_dataset
from unlearnable.runner import ResultStore

from helpers import chromium, open_in_chromium

TINY = AuditConfig(level="tiny", attacks=("ortho-proj", "mean-sub", "jpeg"))


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    return poison_dataset("regions", "digits", root / "regions", seed=0, subset=600,
                          params={"eps": "32/255"})


@pytest.fixture(scope="module")
def audited(protected, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit-out") / "a"
    return out, run_audit(protected, out, TINY, progress=False)


def test_audit_runs_every_step_and_writes_its_outputs(audited):
    out, r = audited
    assert {s["status"] for s in r["steps"].values()} == {"done"}, r["steps"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["verdict"]["overall"] in {"broken", "ineffective", "leaks features", "holds"}
    # The verdict's numbers are the results' numbers.
    per = saved["verdict"]["per_attack"]
    assert per["none"]["accuracy"] == saved["protected_training"]["test_accuracy"]
    assert per["ortho-proj"]["accuracy"] == saved["attacks"]["ortho-proj"]["test_accuracy_best"]
    clean = saved["clean_reference"]["test_accuracy"]
    assert per["jpeg"]["recovered_fraction"] == pytest.approx(per["jpeg"]["accuracy"] / clean)
    assert saved["dfr"]["max_dfr_epoch"] >= 1
    assert set(saved["separability"]) == {"perturbations", "images"}
    for rel in saved["figures"].values():
        assert (out / rel).stat().st_size > 1000
    # The pictures the attacks and the fine-tuning step leave are in the report too.
    assert set(saved["figures"]) == {"dfr", "weights", "class_means", "samples", "separability", "finetune"}
    md = (out / "report.md").read_text()
    assert saved["verdict"]["overall"] in md and "ortho" in md
    # DFR's window: random networks (3 inits, their spread), the protected and the clean-trained
    # network, and the fraction the verdict weighs, computed from them.
    d = saved["dfr"]
    assert len(d["random_inits"]) == 3 and d["random"] == pytest.approx(np.mean(d["random_inits"]))
    assert d["random_spread"] == pytest.approx(np.std(d["random_inits"], ddof=1))
    assert d["clean_trained"] == saved["dfr_clean"]["max_dfr_accuracy"]
    assert d["recovered_fraction"] == pytest.approx((d["max"] - d["random"]) / (d["clean_trained"] - d["random"]))
    assert saved["verdict"]["dfr"]["recovered_fraction"] == d["recovered_fraction"]
    assert "DFR's window" in md and "window recovered" in (out / "report.html").read_text()
    # Separability is read against the clean images at the same N and settings.
    for s in saved["separability"].values():
        assert s["baseline"]["n"] == s["n"] and s["optimizer"]["max_iter"] == 1 and s["optimizer"]["early_stop"]
    # The detect step's decision is a line of the report.
    assert saved["detect"]["score"] is not None and "Detectable" in (out / "report.html").read_text()


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (make test installs Debian's chromium)")
def test_report_opens_in_a_browser_with_every_figure_loaded(audited, tmp_path):
    out, r = audited
    shot = tmp_path / "report.png"
    dom = open_in_chromium(out / "report.html", tmp_path / "profile", shot)
    n_figures = len(r["figures"])
    # The page's own script counts images that decoded: all of them, none broken.
    assert f'data-figures="{n_figures}/{n_figures}"' in dom
    assert 'class="verdict-table"' in dom and "Verdict:" in dom
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_audit_killed_after_training_resumes_without_retraining(protected, tmp_path, monkeypatch):
    import unlearnable.kinds.dfr as dfr_mod
    import unlearnable.train.run as run_mod

    def crash(*a, **k):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C during DFR

    monkeypatch.setattr(dfr_mod, "dfr_curve", crash)
    with pytest.raises(KeyboardInterrupt):
        run_audit(protected, tmp_path / "a", TINY, progress=False)
    with ResultStore(tmp_path / "a" / "jobs.sqlite") as store:
        status = {j["kind"]: j["status"] for j in store.jobs()}
    assert status["train"] == "done" and status["dfr"] == "running"  # killed mid-way, not finished
    ckpt = tmp_path / "a" / "train-protected" / "last.pt"
    before = ckpt.stat().st_mtime_ns
    monkeypatch.undo()

    # Both trainings finished before the crash: the rerun must not train either again.
    def no_training(*a, **k):
        raise AssertionError("a finished training was run again")

    monkeypatch.setattr(run_mod, "train_on", no_training)
    r = run_audit(protected, tmp_path / "a", TINY, progress=False)
    assert {s["status"] for s in r["steps"].values()} == {"done"}
    assert r["dfr"]["max_dfr_accuracy"] > 0
    assert ckpt.stat().st_mtime_ns == before


def test_rerun_with_other_settings_is_refused(audited, protected):
    out, _ = audited
    with pytest.raises(UnlearnableError, match="other settings"):
        run_audit(protected, out, AuditConfig(level="tiny", seed=1), progress=False)


def test_rerun_of_an_audit_recorded_with_the_unadapted_recipe_continues_it(audited, protected, tmp_path, monkeypatch):
    """Audits recorded before results.json kept the recipe adapted to the data (digits: no flip,
    no crop) held the level's recipe as it stands; the same settings must still continue them."""
    import shutil

    import unlearnable.train.run as run_mod

    out = tmp_path / "a"
    shutil.copytree(audited[0], out)
    saved = json.loads((out / "results.json").read_text())
    unadapted = TINY.recipe().to_dict()
    assert saved["config"]["recipe"] != unadapted  # digits' facts change it
    saved["config"]["recipe"] = unadapted
    saved["config"]["attack_recipes"] = {}
    (out / "results.json").write_text(json.dumps(saved))

    def no_training(*a, **k):
        raise AssertionError("a finished training was run again")

    monkeypatch.setattr(run_mod, "train_on", no_training)
    r = run_audit(protected, out, TINY, progress=False)
    assert {s["status"] for s in r["steps"].values()} == {"done"}
    assert r["config"]["recipe"]["flip"] is False and r["config"]["recipe"] != unadapted  # recorded as it trains


def test_rerun_spelling_the_data_path_differently_reuses_every_step(audited, protected, monkeypatch):
    import unlearnable.attacks.base as attack_mod
    import unlearnable.train.run as run_mod

    out, first = audited
    monkeypatch.chdir(Path(protected).parent)

    def no_training(*a, **k):
        raise AssertionError("a finished step was run again")

    monkeypatch.setattr(run_mod, "train_on", no_training)
    monkeypatch.setattr(attack_mod, "train_on", no_training)
    r = run_audit(f"./{Path(protected).name}", out, TINY, progress=False)
    assert {s["status"] for s in r["steps"].values()} == {"done"}
    assert r["verdict"] == first["verdict"]


def test_audit_of_other_data_is_refused(audited, tmp_path):
    out, _ = audited
    other = poison_dataset("regions", "digits", tmp_path / "other", seed=1, subset=600, params={"eps": "32/255"})
    before = (out / "results.json").read_bytes()
    with pytest.raises(UnlearnableError, match="audit of other data"):
        run_audit(other, out, TINY, progress=False)
    assert (out / "results.json").read_bytes() == before


def test_audit_made_with_another_definition_of_the_arch_is_refused(audited, protected, monkeypatch):
    from unlearnable.models import MODELS
    from unlearnable.models.convnet import ConvNet

    out, _ = audited
    before = (out / "results.json").read_bytes()
    monkeypatch.setitem(MODELS, "convnet", lambda **kw: ConvNet(width=8, **kw))
    with pytest.raises(UnlearnableError, match="another definition of 'convnet'"):
        run_audit(protected, out, TINY, progress=False)
    assert (out / "results.json").read_bytes() == before  # nothing lost or rewritten


def test_bad_input_gives_one_line_errors(tmp_path, capsys, protected):
    (tmp_path / "junk").mkdir()
    assert main(["audit", str(tmp_path / "junk"), "--out", str(tmp_path / "o1"), "--budget", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a dataset directory" in err[0]
    assert main(["audit", str(protected), "--out", str(tmp_path / "o2"), "--arch", "nope",
                 "--budget", "tiny", "--no-progress"]) == 2
    assert "unknown architecture" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "report.html").exists()


def test_unknown_base_runs_what_it_can_and_says_what_it_skipped(protected, tmp_path):
    import numpy as np

    from unlearnable import load_dataset_dir, save_dataset

    ds = load_dataset_dir(protected)
    orphan = save_dataset(tmp_path / "orphan", ds, {"method": "regions", "base": {"name": "no-such-base"}})
    r = run_audit(orphan, tmp_path / "a", AuditConfig(level="tiny", attacks=("jpeg",)), progress=False)
    steps = r["steps"]
    assert steps["separability-images"]["status"] == "done"
    for name in ("train-protected", "train-clean", "dfr", "separability-perturbations", "attack:jpeg"):
        assert steps[name]["status"] == "skipped", name
    assert "no-such-base" in steps["train-protected"]["reason"]
    assert r["verdict"]["overall"] == "incomplete"
    html = (tmp_path / "a" / "report.html").read_text()
    assert "skipped" in html and "no-such-base" in html
    assert np.isfinite(r["separability"]["images"]["train_accuracy_mean"])


def _window(frac: float, spread: float, lo: float = 0.76, hi: float = 0.86) -> dict:
    """A DFR window as `dfr_window` builds it: random networks at `lo`, clean-trained at `hi`."""
    from unlearnable.auditor.verdict import dfr_window

    top = lo + frac * (hi - lo)
    inits = [lo - spread, lo, lo + spread]  # sample std = spread
    return dfr_window({"max_dfr_accuracy": top, "random_mean": lo, "random_inits": inits,
                       "random_spread": float(np.std(inits, ddof=1))}, {"max_dfr_accuracy": hi})


def test_verdict_rules():
    attacks = {"none": {"test_accuracy": 0.2}, "ortho-proj": {"test_accuracy": 0.5,
                                                               "test_accuracy_transformed_test": 0.85}}
    # broken: only an attack recovers 80 % of the clean accuracy
    v = verdict(0.9, attacks, _window(0.1, 0.005), num_classes=10, level="quick")
    assert v["overall"] == "broken" and v["broken_by"] == ["ortho-proj"]
    assert v["per_attack"]["ortho-proj"]["recovered_fraction"] == pytest.approx(0.85 / 0.9)
    assert "standard training does not" in v["reason"]
    # ineffective: standard training alone does (the protection did not take effect at this level)
    v = verdict(0.9, {**attacks, "none": {"test_accuracy": 0.8}}, _window(0.9, 0.005), num_classes=10,
                level="quick")
    assert v["overall"] == "ineffective" and v["per_attack"]["none"]["verdict"] == "ineffective"
    assert "quick level" in v["reason"] and "--level paper" in v["reason"] and v["broken_by"] == ["ortho-proj"]
    # leaks features: DFR recovers 0.6 of the window, the gain (6 points) above 2x the spread (0.5)
    w = _window(0.6, 0.005)
    assert w["recovered_fraction"] == pytest.approx(0.6) and w["gain_points"] == pytest.approx(6.0)
    none = {"none": {"test_accuracy": 0.2}}
    v = verdict(0.9, none, w, num_classes=10)
    assert v["overall"] == "leaks features" and "60% of the window" in v["reason"]
    # ... not when the random networks alone vary that much (2 x 4 points > 6 points)
    assert verdict(0.9, none, _window(0.6, 0.04), num_classes=10)["overall"] == "holds"
    # ... nor below the fraction, whatever the points: on a dataset where random features are
    # strong, a 4-point gain is 40 % of the window
    assert verdict(0.9, none, _window(0.4, 0.001), num_classes=10)["overall"] == "holds"
    assert verdict(0.9, none, _window(0.4, 0.001), Thresholds(leak_fraction=0.3), num_classes=10)["overall"] \
        == "leaks features"
    assert verdict(0.9, none, None, num_classes=10)["overall"] == "holds"
    # fine-tuning can fire it too, and the reason says which
    ft = {"recovered_fraction": 0.7, "recovered_fraction_k": 100, "gain_points": 12.0, "gain_k": 100}
    v = verdict(0.9, none, _window(0.1, 0.005), num_classes=10, finetune=ft)
    assert v["overall"] == "leaks features" and "fine-tuning it on 100 clean images recovers 70%" in v["reason"]
    assert verdict(0.9, none, _window(0.1, 0.005), num_classes=10,
                   finetune={**ft, "recovered_fraction": 0.2})["overall"] == "holds"
    # an oracle (it knows the perturbations) is an upper bound, never what broke the protection
    v = verdict(0.9, {**none, "ortho-proj-oracle": {"test_accuracy": 0.88}}, None, num_classes=10)
    assert v["overall"] == "holds" and v["per_attack"]["ortho-proj-oracle"]["verdict"] == "upper bound"
    assert verdict(0.12, {"none": {"test_accuracy": 0.1}}, None, num_classes=10)["overall"] == "inconclusive"


def test_demo_compares_protected_sets_in_one_report(tmp_path, capsys):
    rc = main(["demo", "--data", "digits", "--methods", "regions,ops", "--subset", "500", "--budget", "tiny",
               "--attacks", "jpeg", "--out", str(tmp_path / "demo"), "--no-progress", "--cache", str(tmp_path / "c")])
    assert rc == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert [r["dataset"] for r in summary["rows"]] == ["regions", "ops"]
    for row in summary["rows"]:
        assert row["verdict"]["overall"] in {"broken", "ineffective", "leaks features", "holds", "inconclusive"}
        assert row["dataset"] in out  # the one-screen table on stdout
    html = (tmp_path / "demo" / "report.html").read_text()
    assert html.count('class="tag"') >= 2 and 'href="regions/report.html"' in html
    assert (tmp_path / "demo" / "regions" / "report.html").exists()
    # The reference was trained once, for both sets: one job of the shared cache, reused.
    res = [json.loads((tmp_path / "demo" / m / "results.json").read_text()) for m in ("regions", "ops")]
    assert all(r["steps"]["train-clean"]["shared"] for r in res)
    assert res[0]["steps"]["train-clean"]["key"] == res[1]["steps"]["train-clean"]["key"]
    assert res[0]["clean_reference"] == res[1]["clean_reference"]
    with ResultStore(tmp_path / "c" / "results.sqlite") as store:
        kinds = [j["kind"] for j in store.jobs()]
    # ... and so were the random networks' DFR, DFR on the clean-trained network and the clean
    # images' separability (the baseline both sets' separability is read against).
    assert kinds.count("train") == 1 and kinds.count("dfr-random") == DFR_RANDOM_INITS
    assert kinds.count("dfr") == 1 and kinds.count("separability") == 1


def test_dfr_indices_from_a_file_are_left_out_by_fine_tuning_and_early_stopping(protected, tmp_path):
    """`--dfr-indices FILE`: DFR fits on the file's images, and fine-tuning and early stopping,
    which draw on the same clean pool (`data.clean.pool_split`), never take one of them, nor
    share an image with each other."""
    pool = np.random.default_rng(7).permutation(1437)[:300]  # digits' training split has 1437 images
    np.save(tmp_path / "idx.npy", pool)
    cfg = AuditConfig(level="tiny", attacks=("early-stop",), epochs=2, dfr_indices=str(tmp_path / "idx.npy"))
    r = run_audit(protected, tmp_path / "a", cfg, progress=False, cache=tmp_path / "c")
    assert {s["status"] for s in r["steps"].values()} == {"done"}, r["steps"]
    dfr = np.load(tmp_path / "a" / "train-protected" / "dfr_indices.npy")
    finetune = np.load(tmp_path / "a" / r["figures"]["finetune"].replace("finetune.png", "finetune_indices.npy"))
    early = np.asarray(r["attacks"]["early-stop"]["val_indices"])
    assert np.array_equal(dfr, pool)
    assert len(finetune) == 100 and len(early) == 100
    assert not set(dfr) & set(finetune) and not set(dfr) & set(early) and not set(finetune) & set(early)
    # Without the file the three are apart too, and DFR's subset is the seeded draw instead.
    plain = run_audit(protected, tmp_path / "b", AuditConfig(level="tiny", attacks=("early-stop",), epochs=2),
                      progress=False, cache=tmp_path / "c")
    seeded = np.load(tmp_path / "b" / "train-protected" / "dfr_indices.npy")
    assert not np.array_equal(np.sort(seeded), np.sort(pool))
    assert not set(seeded) & set(plain["attacks"]["early-stop"]["val_indices"])


def test_audit_of_the_clean_set_itself_keeps_the_reference_apart(tmp_path):
    """Auditing clean images (a data owner checking the audit's zero point): the clean reference
    is the same content under another spec; it runs in a place of its own, not in the
    protected training's directory (which refused it as "a run with different settings")."""
    from unlearnable import load_data, save_dataset

    base = load_data("digits", "train").subset(np.arange(300))
    d = save_dataset(tmp_path / "clean", base, {"method": "clean", "kind": "clean", "base": {"name": "digits"}},
                     base=base)
    r = run_audit(d, tmp_path / "a", AuditConfig(level="tiny", attacks=("jpeg",)), progress=False,
                  cache=tmp_path / "cache")
    assert r["failed_steps"] == {} and r["verdict"]["overall"] == "ineffective"
    assert r["clean_reference"]["test_accuracy"] == pytest.approx(r["protected_training"]["test_accuracy"], abs=0.05)
