"""Hostile values from the command line: every refusal one line and exit 2, nothing created,
nothing destroyed (--overwrite never deletes an input), no leftovers of killed or failed writes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from unlearnable import load_data, save_dataset
from unlearnable.core.files import STALE_AFTER_S, atomic_dir, remove_stale, temp_prefix
from unlearnable.core.errors import UnlearnableError
from unlearnable.core.params import from_params
from unlearnable.auditor import Thresholds
from unlearnable.cli import main
from unlearnable.poisons import POISONS
from unlearnable.train.recipe import RECIPES, Recipe
from unlearnable.train.run import spec_for, train_on

from helpers import refused, snapshot


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A protected set (digits, 120 images), a clean base directory and a PNG export of the set."""
    root = tmp_path_factory.mktemp("hostile")
    assert main(["-q", "poison", "regions", "--dataset", "digits", "--out", str(root / "prot"), "--subset", "120",
                 "--level", "tiny", "--no-progress"]) == 0
    full = load_data("digits", "train")
    save_dataset(root / "base", full.subset(np.arange(120)).replace(full.images[:120], name="base"),
                 {"method": "clean"})
    assert main(["-q", "export", str(root / "prot"), "--out", str(root / "png"), "--no-progress"]) == 0
    return root


# --- numbers out of range, nan, inf: refused while parsing, named, nothing created ---------------

NUMERIC = [
    (["train", "digits"], "--batch-size", "0"), (["train", "digits"], "--batch-size", "-5"),
    (["train", "digits"], "--lr", "-1"), (["train", "digits"], "--lr", "nan"), (["train", "digits"], "--lr", "inf"),
    (["train", "digits"], "--epochs", "0"), (["train", "digits"], "--epochs", "-1"),
    (["train", "digits"], "--epochs", "1.5"), (["train", "digits"], "--seed", "-1"),
    (["train", "digits"], "--seed", str(2**40)), (["train", "digits"], "--batch-size", "9" * 30),
    (["attack", "jpeg", "digits"], "--lr", "nan"), (["attack", "jpeg", "digits"], "--epochs", "0"),
    (["poison", "regions", "--dataset", "digits"], "--seed", "-1"),
    (["poison", "regions", "--dataset", "digits"], "--fraction", "2"),
    (["poison", "regions", "--dataset", "digits"], "--fraction", "nan"),
    (["poison", "regions", "--dataset", "digits"], "--subset", "0"),
    (["audit", "digits"], "--broken-at", "nan"), (["audit", "digits"], "--broken-at", "0"),
    (["audit", "digits"], "--broken-at", "1.5"), (["audit", "digits"], "--leak-points", "-1"),
    (["audit", "digits"], "--leak-points", "inf"), (["audit", "digits"], "--epochs", "0"),
    (["audit", "digits"], "--seed", "-1"),
    (["demo"], "--subset", "-1"), (["demo"], "--epochs", "0"),
    (["reproduce", "table3", "--dataset", "digits"], "--subset", "0"),
    (["reproduce", "table3", "--dataset", "digits"], "--epochs", "-1"),
]


@pytest.mark.parametrize("cmd, option, value", NUMERIC, ids=[f"{c[0]}{o}={v[:6]}" for c, o, v in NUMERIC])
def test_numeric_options_out_of_range_are_refused_by_name(cmd, option, value, tmp_path, capsys):
    before = snapshot(tmp_path)
    line = refused(capsys, [*cmd, "--out", str(tmp_path / "out"), option, value], f"argument {option}:")
    assert value[:6] in line
    assert snapshot(tmp_path) == before


SUBCOMMAND_NUMERIC = [
    (["audit", "dfr", "RUN"], "--n", "0"), (["audit", "dfr", "RUN"], "--max-iter", "0"),
    (["audit", "separability", "DATA"], "--hidden", "-1"),
    (["audit", "separability", "DATA"], "--hidden", "1000000000"),
    (["audit", "separability", "DATA"], "--steps", "0"), (["audit", "separability", "DATA"], "--repeats", "0"),
    (["audit", "separability", "DATA"], "--lr", "nan"), (["audit", "separability", "DATA"], "--n", "0"),
    (["audit", "separability", "DATA"], "--max-iter", "0"),
    (["show", "DATA", "--out", "g.png"], "--per-class", "0"), (["show", "DATA", "--out", "g.png"], "--scale", "0"),
]


@pytest.mark.parametrize("cmd, option, value", SUBCOMMAND_NUMERIC,
                         ids=[f"{c[1] if c[0] == 'audit' else c[0]}{o}={v}" for c, o, v in SUBCOMMAND_NUMERIC])
def test_numeric_options_of_audit_subcommands_and_show(cmd, option, value, place, capsys):
    cmd = [str(place / "prot") if a in ("RUN", "DATA") else a for a in cmd]
    before = snapshot(place)
    refused(capsys, [*cmd, option, value], f"argument {option}:", repr(value))
    assert snapshot(place) == before


def test_param_values_must_be_finite(tmp_path, capsys):
    for value in ("nan", "inf", "1e400"):
        refused(capsys, ["poison", "lsp", "--dataset", "digits", "--out", str(tmp_path / "o"), "--param",
                         f"eps={value}"], "parameter eps", "finite", value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnlearnableError, match="parameter eps: expected a finite number, got 'nan'"):
        from_params(POISONS["lsp"].params_cls, {"eps": "nan"})


def test_library_refuses_the_values_the_cli_refuses():
    nan = math.nan
    for kw, field in ((dict(epochs=0), "epochs"), (dict(epochs=-1), "epochs"), (dict(batch_size=0), "batch_size"),
                      (dict(lr=nan), "lr"), (dict(lr=-0.1), "lr"), (dict(momentum=1.0), "momentum"),
                      (dict(weight_decay=math.inf), "weight_decay"), (dict(crop_padding=-1), "crop_padding")):
        with pytest.raises(UnlearnableError, match=f"recipe: {field} must be"):
            Recipe(**kw)
        with pytest.raises(UnlearnableError, match=f"recipe: {field} must be"):
            RECIPES["tiny"].replace(**kw)
    for args, field in (((nan, 10.0), "broken_fraction"), ((0.0, 10.0), "broken_fraction"),
                        ((1.5, 10.0), "broken_fraction"), ((0.8, -1.0), "leak_points"), ((0.8, nan), "leak_points")):
        with pytest.raises(UnlearnableError, match=f"thresholds: {field}"):
            Thresholds(*args)


# --- usage errors, unknown names and devices: one line, before anything is created --------------

def test_usage_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "o")
    refused(capsys, ["no-such-command"], "invalid choice")
    refused(capsys, ["train", "digits"], "required", "--out")
    refused(capsys, ["train", "digits", "--out", out, "--no-such-option"], "unrecognized", "--no-such-option")
    refused(capsys, ["audit", "dfr", out, "--no-such-option"], "unrecognized")
    refused(capsys, ["audit", "separability", "digits", "--of", "nothing"], "argument --of")
    refused(capsys, ["train", "digits", "--out", out, "--recipe", "nope"], "argument --recipe")
    assert list(tmp_path.iterdir()) == []


def test_names_and_devices_are_checked_before_anything_is_created(place, tmp_path, capsys):
    prot, out = str(place / "prot"), str(tmp_path / "o")
    refused(capsys, ["audit", prot, "--out", out, "--attacks", "jpeg,bogus"], "argument --attacks", "'bogus'")
    refused(capsys, ["audit", prot, "--out", out, "--arch", "bogus"], "argument --arch", "'bogus'")
    refused(capsys, ["train", "digits", "--out", out, "--device", "bogus"], "argument --device", "'bogus'")
    refused(capsys, ["demo", "--out", out, "--methods", "regions,bogus"], "argument --methods", "'bogus'")
    refused(capsys, ["attack", "all", prot, "--out", out, "--attacks", "bogus"], "argument --attacks")
    assert list(tmp_path.iterdir()) == []


# --- outputs of the wrong kind: a file where a directory goes, and the reverse -----------------

def test_outputs_of_the_wrong_kind_are_refused(place, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_bytes(b"keep me")
    prot, png = str(place / "prot"), str(place / "png")
    before = snapshot(tmp_path)
    for argv in (["train", "digits", "--out", str(f)],
                 ["poison", "regions", "--dataset", "digits", "--out", str(f), "--overwrite"],
                 ["export", prot, "--out", str(f), "--overwrite"],
                 ["import", "png-folder", png, "--base", "digits", "--out", str(f), "--overwrite"],
                 ["audit", prot, "--out", str(f)],
                 ["train", "digits", "--out", str(f / "sub")],
                 ["demo", "--out", str(f)], ["reproduce", "table3", "--dataset", "digits", "--out", str(f)]):
        refused(capsys, argv, "argument --out", str(f), "not a directory")
    for argv, option in ((["show", prot, "--out", str(tmp_path)], "--out"),
                         (["reproduce", "table3", "--dataset", "digits", "--db", str(tmp_path)], "--db"),
                         (["results", "--db", str(tmp_path)], "--db"),
                         (["audit", "separability", prot, "--out", str(tmp_path)], "--out")):
        refused(capsys, argv, f"argument {option}", str(tmp_path), "is a directory, not a file")
    assert snapshot(tmp_path) == before


def test_outputs_never_go_into_or_over_a_dataset(place, tmp_path, capsys):
    prot = place / "prot"
    before = snapshot(place)
    for argv in (["train", "digits", "--out", str(prot)], ["train", "digits", "--out", str(prot / "run")],
                 ["attack", "jpeg", str(prot), "--out", str(prot)], ["audit", str(prot), "--out", str(prot / "a")]):
        refused(capsys, argv, "argument --out", str(prot))
    refused(capsys, ["audit", "separability", str(prot), "--out", str(prot / "manifest.json")],
            "--out", "manifest.json", "reads")
    refused(capsys, ["show", str(prot), "--out", str(prot / "images.npy")], "--out", "images.npy", "reads")
    db = tmp_path / "r.sqlite"
    db.write_bytes(b"not really a database")
    refused(capsys, ["results", "--db", str(db), "--out", str(db)], "--out", "result store")
    assert db.read_bytes() == b"not really a database"
    assert snapshot(place) == before


# --- --overwrite never deletes or replaces an input of the same command ------------------------

def test_overwrite_never_destroys_an_input(place, tmp_path, capsys):
    import shutil

    for name in ("prot", "base", "png"):
        shutil.copytree(place / name, tmp_path / name)
    prot, base, png = (str(tmp_path / n) for n in ("prot", "base", "png"))
    before = snapshot(tmp_path)
    cases = [
        (["import", "png-folder", png, "--base", base, "--out", base, "--overwrite"], "the base set"),
        (["import", "png-folder", png, "--base", base, "--out", png, "--overwrite"], "the released data"),
        (["import", "png-folder", png, "--base", base, "--out", str(tmp_path), "--overwrite"], "holds"),
        (["import", "png-folder", png, "--base", base, "--out", str(Path(png) / "x")], "lies inside"),
        (["export", prot, "--out", prot, "--overwrite"], "the dataset"),
        (["export", png, "--out", png, "--overwrite"], "the dataset"),
        (["export", prot, "--out", str(Path(prot) / "sub")], "lies inside"),
        (["poison", "regions", "--dataset", f"imagefolder:{png}", "--out", png, "--overwrite"], "clean dataset"),
        (["poison", "regions", "--dataset", prot, "--out", prot, "--overwrite"], "already a protected dataset"),
        # The same path spelled differently is the same input.
        (["export", prot, "--out", f"{tmp_path}/./png/../prot", "--overwrite"], "the dataset"),
    ]
    for argv, why in cases:
        refused(capsys, ["-q", *argv, "--no-progress"], why)
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_and_leaves_no_old_copy(place, tmp_path, capsys):
    out = tmp_path / "exp"
    for fmt in ("npz", "png-folder", "npz"):
        assert main(["-q", "export", str(place / "prot"), "--format", fmt, "--out", str(out), "--overwrite",
                     "--no-progress"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["exp"]
    assert sorted(os.listdir(out)) == ["dataset.npz", "export.json"]


# --- leftovers: killed writes, failed trainings ----------------------------------------------------

_KILLED_WRITE = """
import os, signal, sys
from unlearnable.core.files import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "half.bin").write_bytes(b"x" * 4096)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_stale_temporaries_of_killed_writes_are_removed_by_the_next_write(place, tmp_path, capsys):
    out = tmp_path / "exp"
    r = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(out)], capture_output=True)
    assert r.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".exp.") and left[0].endswith(".tmp")  # as a kill leaves it
    # What earlier versions left (no process recorded): removed once older than a day, kept before.
    old_tmp, fresh_tmp = tmp_path / ".exp.abcd1234.tmp", tmp_path / ".exp.zyxw9876.tmp"
    old_tmp.mkdir()
    fresh_tmp.mkdir()
    os.utime(old_tmp, (time.time() - STALE_AFTER_S - 60,) * 2)
    # A live writer's temporary (this process's parent is alive) is never touched.
    live = tmp_path / f".exp.{os.getppid()}@{temp_prefix(out).split('@')[1]}abcdefgh.tmp"
    live.mkdir()
    assert main(["-q", "export", str(place / "prot"), "--format", "npz", "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["exp", fresh_tmp.name, live.name])


def test_an_old_copy_is_kept_while_it_is_the_only_copy(tmp_path, caplog):
    out = tmp_path / "d"
    old = tmp_path / ".d.999999999@elsewhere.0123abcd.old"
    old.mkdir()
    (old / "data").write_text("the only copy")
    os.utime(old, (time.time() - STALE_AFTER_S - 60,) * 2)
    remove_stale(out)  # `d` is missing: a kill fell between the renames of an overwrite
    assert (old / "data").read_text() == "the only copy"
    assert "previous version" in caplog.text
    with atomic_dir(out) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # superseded now, removed


def test_a_training_that_fails_before_its_first_epoch_leaves_nothing(tmp_path):
    ds = load_data("digits", "train").subset(np.arange(64))
    spec = spec_for(ds, "convnet", RECIPES["tiny"].replace(epochs=1), 0)

    def broken_loss(*_):
        raise KeyboardInterrupt  # a Ctrl-C in the first epoch

    out = tmp_path / "new" / "run"
    with pytest.raises(KeyboardInterrupt):
        train_on(ds, None, spec, out, device="cpu", progress=False, batch_loss=broken_loss)
    assert list(tmp_path.iterdir()) == []  # the parent it made too
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(KeyboardInterrupt):
        train_on(ds, None, spec, mine, device="cpu", progress=False, batch_loss=broken_loss)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # After a finished epoch the run is kept for resume.
    train_on(ds, None, spec, out, device="cpu", progress=False)
    assert (out / "run.json").is_file() and (out / "last.pt").is_file()


def test_show_refuses_a_grid_too_large_to_draw(place, tmp_path, capsys):
    refused(capsys, ["show", str(place / "prot"), "--out", str(tmp_path / "g.png"), "--scale", "100000"],
            "--scale", "megapixels")
    refused(capsys, ["show", str(place / "prot"), "--out", str(tmp_path / "g.png"), "--classes", ",".join(["0"] * 40000)],
            "--classes", "megapixels")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where nothing can be created")
def test_what_the_file_system_refuses_is_one_line(place, capsys):
    refused(capsys, ["-q", "export", str(place / "prot"), "--format", "npz", "--out", "/proc/unlearnable-x",
                     "--no-progress"], "/proc/", "No such file or directory")
