"""The device check runs before a device exists: its CPU smoke run, a failing section, and the
device-independence of the code (no hidden CUDA, one-line refusals, bf16 autocast on CPU)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unlearnable.cli import main as cli
from unlearnable.train import RECIPES
from unlearnable.train import loop as engine
from unlearnable.train.run import as_tensors

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "device_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_cpu_smoke_run_prints_every_section_with_a_figure(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(tmp_path / "dc")],
                       env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    seconds = time.perf_counter() - t
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    summary = json.loads((tmp_path / "dc" / "summary.json").read_text())
    names = [s.name for s in load_script().SECTIONS]
    assert [s["name"] for s in summary["sections"]] == names and summary["failed"] == []
    assert summary["device"]["device"] == "cpu" and summary["device"]["torch"] == torch.__version__
    for s in summary["sections"]:
        assert s["status"] == "ok" and s["figure"] and s["figures"], s
        assert f"[ok] {s['name']} (" in r.stdout
    figs = {s["name"]: s["figures"] for s in summary["sections"]}
    assert figs["engine_vs_dataloader"]["ratio"] > 0 and figs["train_40_epochs"]["estimated_40_epoch_seconds"] > 0
    assert set(figs["table3_cell"]["cost_factor"]) == {"ortho-proj", "adv-train"}
    assert figs["audit"]["steps"] and not figs["audit"]["failed_steps"]
    md = (tmp_path / "dc" / "summary.md").read_text()
    assert all(f"| {n} | ok |" in md for n in names)
    print(f"smoke run: {seconds:.1f} s")


def test_a_failing_section_is_named_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    dc = load_script()

    def broken(cfg, fig):
        fig["partial"] = 1
        raise ValueError("the kernel said no")

    def hangs(cfg, fig):
        time.sleep(60)
        return "never"

    sections = {s.name: s for s in dc.SECTIONS}
    monkeypatch.setattr(dc, "SECTIONS", [
        dc.Section("broken", "a section that fails", broken, 10),
        dc.Section("hangs", "a section that runs past its limit", hangs, 10, smoke_limit_s=1),
        sections["projection"], sections["ntga_block"]])
    t = time.perf_counter()
    rc = dc.main(["--device", "cpu", "--smoke", "--out", str(tmp_path / "dc")])
    assert rc == 1 and time.perf_counter() - t < 50
    summary = json.loads((tmp_path / "dc" / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["sections"]}
    assert status == {"broken": "failed", "hangs": "timeout", "projection": "ok", "ntga_block": "ok"}
    assert summary["failed"] == ["broken", "hangs"]
    bad = summary["sections"][0]
    assert bad["error"] == "ValueError: the kernel said no" and "the kernel said no" in bad["traceback"]
    assert bad["figures"] == {"partial": 1} and len(bad["traceback"].splitlines()) <= 12
    md = (tmp_path / "dc" / "summary.md").read_text()
    assert "| broken | failed |" in md and "## broken: ValueError: the kernel said no" in md
    out = capsys.readouterr().out
    assert "[failed] broken" in out and "[timeout] hangs" in out and "2 failed: broken, hangs" in out


def test_cuda_without_cuda_is_refused_up_front_in_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    dc = load_script()
    assert dc.main(["--device", "cuda", "--out", str(tmp_path / "dc")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["device_check: --device cuda asked for, but CUDA is not available"]
    assert not (tmp_path / "dc").exists()
    for dev, why in (("cuda", "CUDA is not available"), ("cuda:3", "CUDA is not available"),
                     ("mps", "MPS is not available"), ("meta", "only cpu, cuda and mps")):
        if dev == "mps" and torch.backends.mps.is_available():
            continue
        assert cli(["train", "digits", "--out", str(tmp_path / "o"), "--device", dev]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "argument --device" in err and why in err, err
    assert not (tmp_path / "o").exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call):
                    yield node.name, sub


def test_no_hidden_cuda_in_the_package():
    """Every tensor goes where the caller's device says: no `.cuda()`, and a CUDA device is made
    only where a device is chosen (resolve_device, the crafting device)."""
    allowed = {"resolve_device", "device_of", "default_arch"}
    found = []
    for path in sorted((ROOT / "src" / "unlearnable").rglob("*.py")):
        for fn, call in _calls(ast.parse(path.read_text())):
            f = call.func
            if isinstance(f, ast.Attribute) and f.attr == "cuda":
                found.append(f"{path.name}:{call.lineno} .cuda()")
            text = ast.unparse(call)
            if "device(" in text and "'cuda'" in text and fn not in allowed:
                found.append(f"{path.name}:{call.lineno} {text}")
    assert found == []


@pytest.mark.skipif(not torch.amp.autocast_mode.is_autocast_available("cpu"), reason="no CPU autocast")
def test_bf16_autocast_keeps_accuracy_within_noise_of_float32(digits_train, digits_test, monkeypatch, one_thread):
    recipe = RECIPES["tiny"].replace(epochs=6, flip=False, crop_padding=0)
    from unlearnable.models import build_model

    acc = {}
    for name, table, seed in (("float32", {}, 0), ("float32 seed 1", {}, 1), ("bf16", {"cpu": torch.bfloat16}, 0)):
        monkeypatch.setattr(engine, "AUTOCAST", table)
        with engine._autocast(torch.device("cpu")):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if table else torch.float32)
        torch.manual_seed(seed)
        model = build_model("convnet", 10, 1, (8, 8))
        acc[name] = engine.fit(model, as_tensors(digits_train), as_tensors(digits_test), recipe, seed=seed,
                               device="cpu", progress=False).test_accuracy
    assert min(acc.values()) > 0.85, acc
    # Within noise: no further from float32 than another seed of float32 is (or 2 points).
    noise = max(0.02, 2 * abs(acc["float32"] - acc["float32 seed 1"]))
    assert abs(acc["bf16"] - acc["float32"]) <= noise, acc
