"""One mechanism per concept: the ladder, recipes, audit steps and job kinds, each tested over its
registry; a throw-away attack and audit step registered inside a test reach the audit, its
report and a reproduction grid with no other edit."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from unlearnable import UnlearnableError, load_data, save_dataset
from unlearnable.attacks import ATTACKS, by_promise, level_cost, panel, register_attack
from unlearnable.attacks.base import train_and_evaluate
from unlearnable.auditor import AuditConfig, run_audit
from unlearnable.auditor.execute import plan
from unlearnable.auditor.inputs import audit_row, resolve_inputs
from unlearnable.auditor.steps import AUDITS, Row, StepSkipped, register_step
from unlearnable.cli import main
from unlearnable.data.identity import content_id
from unlearnable.ladder import DEFENCE_FAMILIES, LADDER, LEVELS, level, recipe_for
from unlearnable.poisons.make import poison_dataset
from unlearnable.reproduce import ResultStore, build_grid, run_grid, table_data
from unlearnable.runner import JOBS, canonical, job_key, register_job
from unlearnable.train import RECIPES


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    return poison_dataset("regions", "digits", tmp_path_factory.mktemp("reg") / "regions", seed=0, subset=300,
                          params={"eps": "32/255"})


# --- the ladder and the recipes ---------------------------------------------------------------------

@pytest.mark.parametrize("name", LEVELS)
def test_every_level_maps_to_a_recipe_for_every_attack(name):
    lv = level(name)
    assert lv.name == name and set(panel(name)) <= set(ATTACKS)
    base = recipe_for(name)
    assert base.epochs == (lv.epochs or RECIPES[lv.recipe].epochs)
    for attack, info in ATTACKS.items():
        r = recipe_for(name, attack=attack)
        own = info.recipes.get(name)
        # An attack reports its last epoch's figure: it evaluates as the level says, else the same.
        evaluate = "epoch" if attack == "none" else lv.attack_evaluate
        assert r == (RECIPES[own] if own else base).replace(evaluate=evaluate), attack
        # An explicit --epochs reaches every recipe, milestones kept at the same fractions.
        r2 = recipe_for(name, attack=attack, epochs=2)
        assert r2.epochs == 2
        for m, m0 in zip(r2.milestones, r.milestones):
            assert m == max(1, round(m0 * 2 / r.epochs))


@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_every_recipe_preset_rescales_and_rejects_bad_overrides(preset):
    r = recipe_for(preset=preset, epochs=10, batch_size=32, lr=0.01)
    assert (r.epochs, r.batch_size, r.lr) == (10, 32, 0.01)
    assert all(1 <= m <= 10 for m in r.milestones)
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"lr": -1.0}):
        with pytest.raises(UnlearnableError):
            recipe_for(preset=preset, **bad)
    with pytest.raises(UnlearnableError, match="unknown level"):
        recipe_for("huge")


def test_adv_train_at_paper_with_two_epochs_trains_two(protected, tmp_path):
    """`audit DATA --level paper --epochs 2 --attacks adv-train`: 2 epochs, milestones rescaled."""
    out = tmp_path / "a"
    assert main(["audit", str(protected), "--out", str(out), "--level", "paper", "--epochs", "2",
                 "--attacks", "adv-train", "--no-progress"]) == 0
    r = json.loads((out / "attacks" / "adv-train" / "result.json").read_text())
    assert r["recipe"]["epochs"] == 2 and r["recipe"]["milestones"] == [2, 2]
    assert r["recipe"]["schedule"] == "step"  # still the paper's adversarial-training recipe
    lines = (out / "attacks" / "adv-train" / "train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


@pytest.mark.parametrize("name", LEVELS)
def test_audit_and_reproduce_ask_for_the_same_recipes(name, protected):
    """For one level, every training the audit plans has the recipe the grid's cell has."""
    attacks = tuple(a for a in ATTACKS if a != "none")
    cfg = AuditConfig(level=name, attacks=attacks)
    row = audit_row(resolve_inputs(protected), cfg, str(protected))
    _, specs, _ = plan(row)
    grid = build_grid("steps", "digits", level=name, subset=300,
                      steps=["train-protected"] + [f"attack:{a}" for a in attacks])
    grid_recipes = {c.col: c.spec["recipe"] for c in grid.cells if c.row == "regions"}
    audit_recipes = {k: v["recipe"] for k, v in specs.items() if "recipe" in v}
    assert grid_recipes and set(grid_recipes) <= set(audit_recipes)
    for step, recipe in grid_recipes.items():
        assert audit_recipes[step] == recipe, step
    from unlearnable.train.run import adapt_recipe

    # ... and it is the recipe as it trains on these images (digits: no mirror, no shift).
    assert audit_recipes["attack:adv-train"] == adapt_recipe(cfg.recipe("adv-train"), row.sample).to_dict()
    assert audit_recipes["train-protected"]["flip"] is False


# --- audit steps and job kinds ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(AUDITS))
def test_every_step_makes_a_job_of_a_registered_kind(name, protected):
    row = audit_row(resolve_inputs(protected), AuditConfig(level="tiny"), str(protected))
    spec = AUDITS[name].spec(row)
    assert spec["kind"] in JOBS
    json.loads(canonical(spec))  # plain JSON
    assert AUDITS[name].cost(row) > 0 and AUDITS[name].title
    # Identity is content: a hint (where the data lies) never changes the key.
    moved = json.loads(json.dumps(spec).replace(str(protected), "/elsewhere/regions"))
    assert job_key(moved) == job_key(spec)


@pytest.mark.parametrize("name", sorted(AUDITS))
def test_every_step_says_why_when_the_base_is_unknown(name, protected):
    row = audit_row(resolve_inputs(protected), AuditConfig(level="tiny"), str(protected))
    bare = Row(row.data, None, None, row.sample, row.level, why_no_base="nothing known about the base")
    try:
        spec = AUDITS[name].spec(bare)
    except StepSkipped as e:
        assert str(e)
    else:  # a step that needs no clean data still runs
        assert "test" not in spec and "pool" not in spec


def test_content_id_follows_the_bytes(digits_train):
    a = digits_train.subset(np.arange(10))
    assert content_id(a) == content_id(a.replace(a.images.copy()))
    b = a.replace(a.images.copy())
    b.images[0, 0, 0, 0] ^= 1
    assert content_id(b) != content_id(a)


# --- a new attack and a new step, registered here, reach everything -----------------------------------

@dataclass
class _ShiftParams:
    pixels: int = 1


def _shift_attack(ctx, p: _ShiftParams):
    x = np.roll(ctx.train.images, p.pixels, axis=2)
    return train_and_evaluate(ctx, train=ctx.train.replace(x))[1]


def _brightness_job(spec, ctx, deps):
    from unlearnable.kinds.data import load_spec_data

    ds = load_spec_data(spec["data"], ctx)
    return {"mean_brightness": float(ds.images.mean() / 255)}


def _brightness_step(row: Row):
    return {"kind": "throwaway-brightness", "data": row.data}


@pytest.fixture
def throwaways(monkeypatch):
    """Registers a throw-away attack, job kind and audit step; the registries are restored after."""
    monkeypatch.setattr("unlearnable.attacks.base.ATTACKS", ATTACKS)
    for reg, key in ((ATTACKS, "throwaway-shift"), (JOBS, "throwaway-brightness"), (AUDITS, "throwaway-step")):
        monkeypatch.delitem(reg, key, raising=False)
    register_attack("throwaway-shift", "roll the images by a pixel, then train", params_cls=_ShiftParams,
                    family="augmentation", order=95, presets={"tiny": {"pixels": "2"}})(_shift_attack)
    register_job("throwaway-brightness", _brightness_job)
    register_step("throwaway-step", "mean brightness of the training images", order=50, record=("brightness",),
                  headline=lambda r: f"brightness {r['mean_brightness']:.3f}")(_brightness_step)
    yield
    for reg, key in ((ATTACKS, "throwaway-shift"), (JOBS, "throwaway-brightness"), (AUDITS, "throwaway-step")):
        reg.pop(key, None)


def test_a_registered_attack_and_step_reach_the_audit_report_and_grid(throwaways, protected, tmp_path):
    r = run_audit(protected, tmp_path / "a", AuditConfig(level="tiny", attacks=("throwaway-shift",)),
                  progress=False)
    assert r["steps"]["throwaway-step"]["status"] == "done"
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert 0 < saved["brightness"]["mean_brightness"] < 1  # where its registry entry says
    assert r["steps"]["attack:throwaway-shift"]["status"] == "done"
    shifted = r["attacks"]["throwaway-shift"]
    assert 0 <= shifted["test_accuracy"] <= 1 and shifted["params"] == {"pixels": 2}  # its tiny preset
    assert "throwaway-shift" in r["verdict"]["per_attack"]
    html = (tmp_path / "a" / "report.html").read_text()
    assert "mean brightness of the training images" in html and "brightness 0." in html
    assert "throwaway-shift" in html
    assert "mean brightness" in (tmp_path / "a" / "report.md").read_text()

    grid = build_grid("steps", "digits", level="tiny", subset=120, epochs=1, methods=["regions"],
                      steps=["throwaway-step", "attack:throwaway-shift"])
    with ResultStore(tmp_path / "r.sqlite") as store:
        s = run_grid(grid, store, tmp_path / "grid", progress=False)
        assert s.failed == [] and s.blocked == []
        headers, rows = table_data(grid.layout(), {c.key: store.get(c.key) for c in grid.cells})
    assert headers == ["training data", "mean brightness of the training images", "attack: throwaway-shift"]
    assert [r[0] for r in rows] == ["clean", "regions"]
    assert all(r[1].startswith("brightness ") and r[2].endswith("%") for r in rows)


def test_unknown_step_and_level_are_one_line_errors():
    with pytest.raises(UnlearnableError, match="unknown audit step"):
        build_grid("steps", "digits", level="tiny", subset=50, steps=["nope"])
    with pytest.raises(UnlearnableError, match="unknown level"):
        build_grid("table1", "digits", level="huge", subset=50)
    assert sorted(LADDER) == sorted(LEVELS)


def test_library_reports_through_logging_and_the_cli_quiets_it(protected, tmp_path, capsys):
    args = ["audit", str(protected), "--out", str(tmp_path / "a"), "--level", "tiny", "--attacks", "jpeg",
            "--no-progress"]
    assert main(["-q", *args]) == 0
    cap = capsys.readouterr()
    assert "[train-protected]" not in cap.err and "verdict:" in cap.out
    assert main([*args, "-v"]) == 0  # a rerun: every step reused, said at the default level and above
    assert "verdict:" in capsys.readouterr().out
    import subprocess
    import sys

    cli = "import sys; from unlearnable.cli import main; sys.exit(main())"
    src = subprocess.run([sys.executable, "-c", cli, *args[:-1], "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=600)
    assert src.returncode == 0 and "[train-protected]" in src.stderr and "verdict:" in src.stdout


def test_attacks_below_paper_evaluate_after_their_last_epoch_only():
    """An attack reports its last epoch's figure: at tiny and quick its training skips the other
    test passes; the standard and clean trainings keep the per-epoch curve DFR's figure draws,
    and `paper` keeps every recipe as recorded before."""
    from unlearnable.ladder import recipe_for

    for lv in ("tiny", "quick"):
        assert recipe_for(lv, attack="jpeg").evaluate == "last"
        assert recipe_for(lv).evaluate == "epoch" and recipe_for(lv, attack="none").evaluate == "epoch"
    assert recipe_for("paper", attack="adv-train").evaluate == "epoch"
    assert recipe_for(preset="fast").evaluate == "epoch"


def test_level_panels_are_registered_and_quick_keeps_table_3_within_paper():
    """Every level's panel names registered attacks; `quick` tries nothing `paper` leaves out,
    one attack of every family of defence, and keeps the paper's Table 3 columns."""
    for name in LEVELS:
        assert set(panel(name)) <= set(ATTACKS), name
    assert set(panel("quick")) <= set(panel("paper")) == set(ATTACKS) - {"none"}
    assert {"ortho-proj", "adv-train", "coin"} <= set(panel("quick"))
    assert sorted(ATTACKS[n].family for n in panel("quick")) == sorted(DEFENCE_FAMILIES)
    assert all(level_cost(n, "quick") <= 3 for n in panel("quick")) and "dvae" not in panel("quick")


def test_the_sets_manifest_sharpens_the_order_of_a_sequential_audit():
    """The prior per cost orders the panel; the facts of the set's manifest multiply each
    attack's prior by its `suits` (the paper's Table 3: projection for class-wise poisons,
    adversarial training useless against an l0 one)."""
    from unlearnable.attacks import facts_of, promise

    assert facts_of({"kind": "class-wise", "additive": True, "bound": {"norm": "l0"}}) == \
        {"kind:class-wise", "additive", "norm:l0"}
    assert facts_of(None) == frozenset() and facts_of({"bound": "junk", "kind": 3}) == frozenset()
    names = panel("quick")
    plain = by_promise(names, "quick")
    cw = by_promise(names, "quick", facts_of({"kind": "class-wise"}))
    ops = by_promise(names, "quick", facts_of({"kind": "class-wise", "bound": {"norm": "l0"}}))
    assert cw.index("ortho-proj") < plain.index("ortho-proj") and cw[0] == "ortho-proj"
    assert ops[-1] == "adv-train" and plain[0] == "adv-train"
    assert promise("jpeg", "quick", {"kind:class-wise"}) == promise("jpeg", "quick")  # no fact of its own
    assert sorted(cw) == sorted(plain) == sorted(names)  # the order changes, never the panel


def _on_clean(ctx, p):
    return train_and_evaluate(ctx, train=ctx.clean)[1]


def _as_is(ctx, p):
    return train_and_evaluate(ctx)[1]


@pytest.fixture
def panel_throwaways(monkeypatch):
    """Two throw-away attacks of tiny's families, stronger by their priors than the members
    there: one that breaks every protection (it trains on the clean images) and one that never
    does (standard training under another name). The registry is restored after."""
    monkeypatch.setattr("unlearnable.attacks.base.ATTACKS", ATTACKS)
    names = ("throwaway-clean", "throwaway-as-is")
    for n in names:
        monkeypatch.delitem(ATTACKS, n, raising=False)
    register_attack(names[0], "train on the clean images", family="projection", prior=0.98, order=96)(_on_clean)
    register_attack(names[1], "train as it is", family="squeezing", prior=0.99, order=97)(_as_is)
    yield names
    for n in names:
        ATTACKS.pop(n, None)


def test_a_registered_attack_joins_the_panel_by_its_family_and_the_audit_stops_at_the_first_break(
        panel_throwaways, tmp_path):
    """The panel takes each family's strongest member, so both throw-aways join tiny's panel
    with no other edit; a sequential audit tries them most promising first and, once the clean
    one breaks the protection, skips the rest (smoothing's member) and says why; --exhaustive
    runs them all."""
    clean, as_is = panel_throwaways
    assert {clean, as_is} <= set(panel("tiny")) and {clean, as_is} <= set(panel("quick"))
    assert "ortho-proj" not in panel("tiny") and "mean-sub" not in panel("tiny")  # displaced in their family
    smoothing = [n for n in panel("tiny") if ATTACKS[n].family == "smoothing"]
    assert len(smoothing) == 1 and by_promise(panel("tiny"), "tiny")[:2] == [as_is, clean]
    # A protection standard training cannot see through: every image replaced by its class's pattern.
    base = load_data("digits", "train").subset(np.arange(300))
    pattern = np.random.default_rng(0).integers(0, 256, (10, *base.images.shape[1:]), dtype=np.uint8)
    prot = save_dataset(tmp_path / "p", base.replace(pattern[base.labels]),
                        {"method": "throwaway-pattern", "kind": "class-wise", "base": {"name": "digits"}}, base=base)
    seq = run_audit(prot, tmp_path / "seq", AuditConfig(level="tiny"), progress=False)
    assert seq["verdict"]["overall"] == "broken" and seq["verdict"]["broken_by"] == [clean]
    assert seq["steps"][f"attack:{as_is}"]["status"] == "done" and seq["steps"][f"attack:{clean}"]["status"] == "done"
    skipped = seq["steps"][f"attack:{smoothing[0]}"]
    assert skipped["status"] == "skipped" and f"{clean} broke the protection first" in skipped["reason"]
    assert "--exhaustive" in skipped["reason"] and smoothing[0] not in seq["attacks"]
    full = run_audit(prot, tmp_path / "full", AuditConfig(level="tiny", exhaustive=True), progress=False)
    assert all(full["steps"][f"attack:{n}"]["status"] == "done" for n in panel("tiny"))
    assert full["verdict"]["overall"] == "broken"
    # Rerun in the same directory with --exhaustive, as the skipped reason says: the audit goes on
    # with the attacks it skipped and recomputes none of the others.
    first = (tmp_path / "seq" / "attacks" / clean / "result.json").stat().st_mtime_ns
    more = run_audit(prot, tmp_path / "seq", AuditConfig(level="tiny", exhaustive=True), progress=False)
    assert more["steps"][f"attack:{smoothing[0]}"]["status"] == "done" and smoothing[0] in more["attacks"]
    assert (tmp_path / "seq" / "attacks" / clean / "result.json").stat().st_mtime_ns == first
    # Attacks the user names all run, as before.
    named = run_audit(prot, tmp_path / "named", AuditConfig(level="tiny", attacks=(clean, smoothing[0])),
                      progress=False)
    assert named["steps"][f"attack:{smoothing[0]}"]["status"] == "done"
