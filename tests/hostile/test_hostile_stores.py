"""What an audit reads back from its stores and directories is checked, not trusted: a path in a
result never reaches outside, an edited result or a swapped checkpoint is caught by its checksum
and computed again, a clean set audits cleanly, and what the file system refuses is one line
naming the path (round 3 of the hostile-input cases)."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from unlearnable.auditor import AuditConfig, run_audit
from unlearnable.cli import main
from unlearnable.poisons.make import poison_dataset
from unlearnable.runner.execute import own_files
from unlearnable.runner.store import seal
from unlearnable.viz.html import figure

from helpers import error_line, refused, snapshot

SMALL = AuditConfig(level="tiny", attacks=(), epochs=2)
SECRET = b"the contents of a file outside the audit\n"


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    return poison_dataset("regions", "digits", tmp_path_factory.mktemp("stores") / "regions", seed=0, subset=300,
                          params={"eps": "32/255"})


def _rows(db: Path, kind: str) -> list[tuple[str, dict]]:
    with sqlite3.connect(db) as c:
        return [(k, json.loads(r)) for k, r in c.execute("SELECT key, result FROM jobs WHERE kind = ?", (kind,))]


def _write(db: Path, key: str, result: dict, sealed: bool) -> None:
    """Edit a row as a careless hand would (the result only) or as one who knows the checksum."""
    text = json.dumps(result)
    with sqlite3.connect(db) as c:
        if sealed:
            c.execute("UPDATE jobs SET result = ?, digest = ? WHERE key = ?", (text, seal(key, text), key))
        else:
            c.execute("UPDATE jobs SET result = ? WHERE key = ?", (text, key))


def test_a_result_naming_a_file_outside_the_audit_is_never_read_into_the_report(regions, tmp_path, caplog):
    out, cache = tmp_path / "audit", tmp_path / "cache"
    (tmp_path / "SECRET.txt").write_bytes(SECRET)
    first = run_audit(regions, out, SMALL, progress=False, cache=cache)
    assert first["figures"]["finetune"].endswith("finetune.png")
    secret = base64.b64encode(SECRET).decode()
    for sealed in (False, True):
        (key, result), = _rows(out / "jobs.sqlite", "finetune")
        # From OUT/jobs/finetune-KEY/, three levels up is tmp_path: the file beside the audit.
        _write(out / "jobs.sqlite", key, {**result, "figure": "../../../SECRET.txt"}, sealed)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="unlearnable"):
            again = run_audit(regions, out, SMALL, progress=False, cache=cache)
        assert secret not in (out / "report.html").read_text()
        assert "SECRET" not in again["figures"].get("finetune", "")
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        if sealed:  # a checksum that matches: the path itself is refused, named
            assert any("outside the audit: not embedded" in m and str(tmp_path / "SECRET.txt") in m for m in warned)
        else:  # the edit is caught first: the job runs again and its own figure is back
            assert any("changed after its job finished" in m and "jobs.sqlite" in m for m in warned), warned
            assert again["figures"]["finetune"].endswith("finetune.png")
    # The report's figure helper holds to the same rule for any page it makes.
    html = figure(out, "../SECRET.txt", "x")
    assert "outside" in html and secret not in html


def test_an_edited_cache_row_and_a_swapped_checkpoint_are_caught_and_computed_again(regions, tmp_path, caplog):
    out, cache = tmp_path / "audit", tmp_path / "cache"
    first = run_audit(regions, out, SMALL, progress=False, cache=cache)
    clean = first["clean_reference"]["test_accuracy"]
    db = cache / "results.sqlite"
    (key, result), = _rows(db, "train")
    _write(db, key, {**result, "test_accuracy": 0.123}, sealed=False)
    with caplog.at_level(logging.WARNING, logger="unlearnable"):
        again = run_audit(regions, out, SMALL, progress=False, cache=cache)
    assert any(str(db) in r.getMessage() and key[:12] in r.getMessage() and "runs again" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert again["clean_reference"]["test_accuracy"] == clean  # recomputed, not the edited 0.123
    assert again["verdict"] == first["verdict"]
    # Another run's checkpoint put in place of the clean reference's last one.
    run, = [p for p in (cache / "jobs").iterdir() if p.name.startswith("train-")]
    (run / "last.pt").write_bytes((out / "train-protected" / "last.pt").read_bytes())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unlearnable"):
        third = run_audit(regions, out, SMALL, progress=False, cache=cache)
    assert any(str(run / "last.pt") in r.getMessage() and "changed after its job finished" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert third["clean_reference"]["test_accuracy"] == clean
    # Untouched, a rerun finds nothing to say.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unlearnable"):
        run_audit(regions, out, SMALL, progress=False, cache=cache)
    assert not [r for r in caplog.records if "changed" in r.getMessage()]


def test_auditing_a_clean_dataset_passes_and_says_its_perturbation_is_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(tmp_path / "cache"))
    rc = main(["audit", "digits", "--level", "tiny", "--attacks", "none", "--out", str(tmp_path / "a"),
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    r = json.loads((tmp_path / "a" / "results.json").read_text())
    assert r["failed_steps"] == {}
    sep = r["steps"]["separability-perturbations"]
    assert sep["status"] == "skipped" and "perturbation is zero" in sep["reason"]
    assert r["steps"]["finetune"]["status"] == "done"  # its two starts from one training, not blocked


def test_a_full_disk_is_one_line_naming_the_directory_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    def full(path, arr, allow_pickle=False):  # what numpy says when the disk fills mid-write
        raise OSError(f"{arr.nbytes} requested and {arr.nbytes // 3} written")

    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "p"
    line = refused(capsys, ["poison", "regions", "--dataset", "digits", "--out", str(out)], str(out),
                   "no space left on device", unchanged=tmp_path)
    assert "requested and" in line and not out.exists()


def test_a_cache_that_is_a_file_is_refused_before_out_is_made(regions, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "cachefile"
    bad.write_text("not a directory")
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(bad))
    out = tmp_path / "a"
    refused(capsys, ["audit", str(regions), "--level", "tiny", "--attacks", "none", "--out", str(out)],
            str(bad), "UNLEARNABLE_CACHE", "not a directory", unchanged=tmp_path)
    assert not out.exists()


def test_a_dangling_symlink_as_out_is_named_as_one(regions, tmp_path, capsys):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "nowhere")
    before = snapshot(tmp_path)
    for argv in (["audit", str(regions), "--level", "tiny", "--attacks", "none", "--out", str(link)],
                 ["detect", str(regions), "--budget", "tiny", "--out", str(link)],
                 ["poison", "regions", "--dataset", "digits", "--out", str(link)]):
        capsys.readouterr()
        assert main(argv) == 2
        error_line(capsys.readouterr().err, str(link), "symbolic link", str(tmp_path / "nowhere"))
    assert snapshot(tmp_path) == before and not (tmp_path / "nowhere").exists()


def test_a_jobs_seal_leaves_out_the_store_and_the_locks_beside_its_files(tmp_path):
    # An attack run's OUT is its job's directory and holds OUT/jobs.sqlite, which changes with
    # every record: sealing it would make every rerun look tampered with.
    for rel in ("result.json", "checkpoints/epoch_001.pt", "jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm",
                ".unlearnable.lock", ".jobs.sqlite.drivers/abc.lock"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    assert sorted(own_files(tmp_path)) == ["checkpoints/epoch_001.pt", "result.json"]
