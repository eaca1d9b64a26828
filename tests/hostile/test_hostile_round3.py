"""Hostile input, round 3 (issue 30): strings from a dataset are data, never markup or terminal
control; paths inside a manifest are its own; a cached job is keyed by every split it reads; a
full disk is one line and leaves nothing half-written; one writer per output path.

Image folders read by one rule and "cannot judge" are in test_hostile_images_detect.py.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnable.auditor.report import render_audit_html, render_audit_md, summary_text
from unlearnable.cli import main
from unlearnable.core.text import for_filename, for_html, for_md, for_term
from unlearnable.data.identity import content_id
from unlearnable.data.refs import ALLOW_ENV
from unlearnable.data.resolve import load_data
from unlearnable.imports.images import class_dir_name
from unlearnable.poisons.make import poison_dataset
from unlearnable.train import checkpoint

from helpers import error_line, refused, snapshot, write_png

SRC = str(Path(__file__).resolve().parents[2] / "src")
FORGED = "sample-wise\n\n**Verdict: holds** — forged by the manifest"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
OSC = "\x1b]0;owned\x07\x1b[31mred\x1b[0m\u202e"


class Tags(HTMLParser):
    """Every element, attribute, comment and declaration a piece of HTML makes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.made: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.made.append(f"<{tag} {attrs}>")

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        self.made.append(f"</{tag}>")

    def handle_comment(self, data):
        self.made.append(f"<!--{data}-->")

    def handle_decl(self, decl):
        self.made.append(f"<!{decl}>")

    def handle_pi(self, data):
        self.made.append(f"<?{data}>")

    def unknown_decl(self, data):
        self.made.append(f"<![{data}]>")

    def handle_data(self, data):
        self.text.append(data)


def _no_control(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf") and c not in "\n\t" for c in text)


def _hostile(d: Path, **fields: object) -> None:
    f = d / "manifest.json"
    man = json.loads(f.read_text())
    man.update(fields)
    os.chmod(f, 0o644)
    f.write_text(json.dumps(man))


def _image_folder(root: Path, images: np.ndarray, labels: np.ndarray, split: str, classes: list[str]) -> None:
    for i, (im, y) in enumerate(zip(images, labels)):
        write_png(root / split / classes[y] / f"{i}.png", im[..., 0])


@pytest.fixture
def cache(tmp_path_factory, monkeypatch) -> Path:
    """A shared cache outside tmp_path: the lock files of --out paths live there, and a refused
    command must leave tmp_path, the user's side, as it was."""
    d = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    """digits as an image folder (train/ and test/, classes 0-9), the base the path tests move."""
    root = tmp_path_factory.mktemp("r3") / "relbase"
    for split in ("train", "test"):
        ds = load_data("digits", split)
        _image_folder(root, ds.images, ds.labels, split, ds.classes)
    return root


# ---------------------------------------------------------------------------------------------
# Untrusted strings: markup, forged verdicts, terminal escapes

def test_a_hostile_manifest_reaches_no_report_or_terminal_as_markup_or_control(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(tmp_path / "cache"))
    d = poison_dataset("regions", "digits", tmp_path / "p", seed=0, subset=300, params={"eps": "32/255"})
    _hostile(d, name=SCRIPT + OSC, method=IMG, kind=FORGED)
    out = tmp_path / "audit"
    capsys.readouterr()
    rc = main(["audit", str(d), "--level", "tiny", "--attacks", "none", "--out", str(out), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    # The terminal: the table and every log line show the escape sequence, none obeys it.
    assert "\x1b" not in cap.out + cap.err and "\x07" not in cap.out + cap.err and "\u202e" not in cap.out
    assert "\\x1b]0;owned\\x07" in cap.out  # shown, visibly
    md = (out / "report.md").read_text()
    assert SCRIPT not in md and IMG not in md and "\x1b" not in md
    verdicts = [ln for ln in md.splitlines() if "**Verdict:" in ln]  # as Markdown renders it: bold
    assert len(verdicts) == 1 and verdicts[0].startswith("**Verdict: ")  # the verdict code's line only
    assert "sample-wise\\\\x0a\\\\x0a\\*\\*Verdict: holds\\*\\* — forged by the manifest" in md  # as text
    page = (out / "report.html").read_text()
    assert SCRIPT not in page and IMG not in page and "onerror=alert" not in page.replace("onerror=alert(2)&gt;", "")
    parser = Tags()
    parser.feed(page)
    assert not [t for t in parser.made if t.startswith("<img") and "onerror" in t]
    assert "alert(1)</script>" not in page


def test_every_field_of_a_record_is_escaped_in_markdown_html_and_the_table():
    bad = SCRIPT + "\n| x | y |\n![img](http://evil/x.png) [link](javascript:alert(3)) `code` " + OSC
    res = {"dataset": {"name": bad, "method": IMG, "kind": FORGED, "base": bad, "num_samples": 3, "shape": bad,
                       "num_classes": 2, "notes": [bad]},
           "verdict": {"overall": "holds\n**Verdict: broken**", "reason": bad, "clean_accuracy": 0.5,
                       "per_attack": {bad: {"test_accuracy": 0.1, "accuracy": 0.1, "recovered_fraction": 0.2,
                                            "verdict": bad}}},
           "analyses": [{"name": bad, "title": bad, "status": bad, "headline": bad, "reason": bad}],
           "separability": {bad: {"train_accuracy_mean": 0.5}},
           "figures": {bad: "../x) ![y](http://evil"}, "steps": {bad: {"status": bad, "reason": bad}},
           "config": {"arch": bad}, "versions": {bad: bad}}
    md = render_audit_md(res)
    assert "<" not in md.replace("&lt;", "") and "\x1b" not in md and "](http" not in md.replace("\\]", "")
    assert sum("**Verdict:" in ln for ln in md.splitlines()) == 1
    # Outside tables every pipe is escaped; inside one, every row has its header's cells.
    for block in md.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("| "):
            assert len({ln.count("|") - ln.count("\\|") for ln in lines if not set(ln) <= set("|-:")}) == 1, block
        else:
            assert all(ln.count("|") == ln.count("\\|") for ln in lines), block
    page = render_audit_html(res, Path("."))
    parser = Tags()
    parser.feed(page)
    assert not [t for t in parser.made if t.startswith(("<img", "<a ")) and ("onerror" in t or "javascript" in t)]
    assert "\x1b" not in page and SCRIPT not in page
    assert _no_control(summary_text([res]))


def test_the_renderers_fuzzed_give_text_only_html_and_one_line_markdown():
    rng = random.Random(0)
    alphabet = ([chr(c) for c in range(0, 0x20)] + ["\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\u202e", "\u200b",
                                                  "\ufeff", "\U0001f600", "é", "中"]
                + list("<>&\"'`*_[]()#|!~\\/=:;-+. abcXYZ019") + ["<script>", "</b>", "<!--", "-->", "<![CDATA[",
                                                                    "&amp;", "&#x3c;", "javascript:", "](", "\n\n"])
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        h = for_html(s)
        parser = Tags()
        parser.feed(f"<p>{h}</p>")
        parser.close()
        assert parser.made == ["<p []>", "</p>"], (s, h)
        assert "".join(parser.text) == for_term(s)  # what shows is the string, controls as escapes
        m = for_md(s)
        assert len(m.splitlines()) <= 1 and "<" not in m and "\x1b" not in m, (s, m)
        assert _no_control(for_term(s)) and "\n" not in for_term(s)
        f = for_filename(s)
        assert f and not f.startswith(".") and "/" not in f and f.isascii() and len(f) <= 80
        assert class_dir_name(s) not in (".", "..") and "/" not in class_dir_name(s)


# ---------------------------------------------------------------------------------------------
# Paths inside a manifest

def test_a_relative_base_is_the_manifests_from_any_directory(digits_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(tmp_path / "cache"))
    work = digits_folder.parent
    monkeypatch.chdir(work)
    assert main(["-q", "poison", "regions", "--dataset", "imagefolder:relbase", "--out", "sets/p",
                 "--subset", "200"]) == 0
    name = json.loads((work / "sets" / "p" / "manifest.json").read_text())["base"]["name"]
    assert name == "imagefolder:../../relbase"  # relative to the set, not to where it was made
    want = content_id(load_data(f"imagefolder:{digits_folder}", "test"))
    # Elsewhere a folder of the same name holds other images: the manifest's own base is read.
    other = tmp_path / "elsewhere"
    ds = load_data("digits", "test")
    _image_folder(other / "relbase", ds.images[::-1], ds.labels[::-1], "test", ds.classes)
    _image_folder(other / "relbase", ds.images[:20], ds.labels[:20], "train", ds.classes)
    for cwd, spec in ((work, "sets/p"), (other, str(work / "sets" / "p")), (work / "sets", "p")):
        monkeypatch.chdir(cwd)
        assert content_id(load_data(spec, "test")) == want, cwd


def test_an_absolute_base_or_a_url_in_a_manifest_is_refused_unless_allowed(digits_folder, tmp_path, monkeypatch,
                                                                          capsys, cache):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    d = poison_dataset("regions", f"imagefolder:{digits_folder}", tmp_path / "p", seed=0, subset=100)
    for base, why in ((f"imagefolder:{digits_folder}", "absolute path"), ("https://evil.example/data", "URL")):
        _hostile(d, base={"name": base})
        refused(capsys, ["train", str(d), "--out", str(tmp_path / "run"), "--epochs", "1"], "manifest.json", why,
                unchanged=tmp_path)
    _hostile(d, base={"name": f"imagefolder:{digits_folder}"})
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert len(load_data(str(d), "test")) == 360
    monkeypatch.delenv(ALLOW_ENV)
    # Named by the user on the command line, the same absolute base is used.
    rc = main(["audit", str(d), "--clean", f"imagefolder:{digits_folder}", "--level", "tiny", "--attacks", "none",
               "--out", str(tmp_path / "a"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Cache identity: every split a cached job reads

def test_a_base_whose_test_labels_changed_gets_a_new_clean_reference(digits_folder, tmp_path, monkeypatch, capsys):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(digits_folder, base)
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(cache))
    d = poison_dataset("regions", f"imagefolder:{base}", tmp_path / "p", seed=0, subset=300, params={"eps": "32/255"})

    def audit(out: str) -> dict:
        rc = main(["audit", str(d), "--level", "tiny", "--attacks", "none", "--out", str(tmp_path / out),
                   "--no-progress"])
        assert rc == 0, capsys.readouterr().err
        return json.loads((tmp_path / out / "results.json").read_text())

    first = audit("a1")
    # Two classes of the test split swap their labels; the training split is untouched.
    (base / "test" / "0").rename(base / "test" / "tmp")
    (base / "test" / "1").rename(base / "test" / "0")
    (base / "test" / "tmp").rename(base / "test" / "1")
    second = audit("a2")
    with sqlite3.connect(cache / "results.sqlite") as c:
        clean = [json.loads(r)["test_accuracy"] for (s, r) in c.execute(
            "SELECT spec, result FROM jobs WHERE kind = 'train' AND status = 'done'")
            if "clean" in json.loads(s)["data"]]
    assert len(clean) == 2  # one clean reference per test split, none reused across them
    assert second["verdict"]["clean_accuracy"] != first["verdict"]["clean_accuracy"]
    assert second["verdict"]["clean_accuracy"] in clean and first["verdict"]["clean_accuracy"] in clean
    want = second["verdict"]["per_attack"]["none"]["test_accuracy"]
    assert want != first["verdict"]["per_attack"]["none"]["test_accuracy"]  # both on the new test split


# ---------------------------------------------------------------------------------------------
# Full disks

def test_a_full_disk_in_train_is_one_line_leaves_nothing_and_a_rerun_resumes(tmp_path, monkeypatch, capsys, cache):
    real = torch.save
    calls = {"n": 0, "fail_at": 1}

    def save(obj, f, *a, **k):  # what torch's zip writer raises when a write comes up short
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 24704 vs 24600")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    monkeypatch.setattr("shutil.disk_usage", lambda p: type("U", (), {"free": 0})())
    out = tmp_path / "run"
    argv = ["train", "digits", "--out", str(out), "--epochs", "3", "--recipe", "tiny", "--no-progress"]
    line = refused(capsys, argv, str(out / "checkpoints" / "epoch_001.pt"), "No space left on device",
                   unchanged=tmp_path)
    assert "Traceback" not in line and not out.exists()
    calls.update(n=0, fail_at=4)  # epoch 1 and its last.pt, epoch 2; then epoch 2's last.pt fails
    assert main(argv) == 2
    error_line(capsys.readouterr().err, str(out / "last.pt"), "No space left on device")
    assert not list(out.rglob("*.tmp"))
    calls.update(n=0, fail_at=-1)
    assert main(argv) == 0, capsys.readouterr().err
    res = json.loads((out / "result.json").read_text())
    assert res["epochs"] == 3 and len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_full_disk_in_an_audits_report_is_one_line_and_no_record_claims_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(tmp_path / "cache"))
    d = poison_dataset("regions", "digits", tmp_path / "p", seed=0, subset=300, params={"eps": "32/255"})
    out = tmp_path / "a"
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out / ".report.md")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    argv = ["-q", "audit", str(d), "--level", "tiny", "--attacks", "none", "--out", str(out), "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 2
    error_line(capsys.readouterr().err, str(out / "report.md"), "No space left on device")
    assert not (out / "results.json").exists() and not (out / "report.md").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(os, "fsync", real)
    assert main(argv) == 0, capsys.readouterr().err  # the rerun reuses every step and writes the reports
    assert (out / "report.md").exists() and (out / "results.json").exists()


# ---------------------------------------------------------------------------------------------
# One writer per output path

HOLD = ("import sys, time; from unlearnable.core.lock import out_lock\n"
        "with out_lock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True); time.sleep(120)\n")


def test_a_second_writer_to_an_output_path_is_refused_and_a_killed_one_blocks_nothing(tmp_path, capsys, cache):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": SRC}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(cache)], stdout=subprocess.PIPE, env=env,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        npz = tmp_path / "x.npz"
        np.savez(npz, images=np.zeros((2, 8, 8, 1), np.uint8))
        link = tmp_path / "same"
        link.symlink_to(out.parent)
        for argv in (["train", "digits", "--out", str(out), "--epochs", "1"],
                     ["train", "digits", "--out", str(link / "out"), "--epochs", "1"],  # spelled otherwise
                     ["attack", "none", "digits", "--out", str(out), "--epochs", "1"],
                     ["poison", "regions", "--dataset", "digits", "--out", str(out)],
                     ["import", "npz", str(npz), "--base", "digits", "--out", str(out)],
                     ["export", "digits", "--out", str(out)],
                     ["detect", "digits", "--level", "tiny", "--out", str(out)]):
            line = refused(capsys, argv, "another process is writing it", f"pid {holder.pid}", unchanged=tmp_path)
            assert argv[argv.index("--out") + 1] in line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    before = set(snapshot(tmp_path))
    assert main(["train", "digits", "--out", str(out), "--epochs", "1", "--recipe", "tiny", "--no-progress"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert {p for p in set(snapshot(tmp_path)) - before if not p.startswith("out")} == set()
