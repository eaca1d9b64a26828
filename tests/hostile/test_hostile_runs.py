"""Misuse of long runs: two drivers at once, broken checkpoints, steps that fail.

Each case class: one refused or recorded line naming the file or directory, nothing lost, and
nothing run twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from unlearnable import DataError, UnlearnableError
from unlearnable.core.lock import LockHeld, dir_lock
from unlearnable.auditor import AuditConfig, run_audit, verdict
from unlearnable.poisons.make import poison_dataset
from unlearnable.runner import JOBS, JobContext, ResultStore, job_key, register_job, run_jobs
from unlearnable.kinds.data import ensure_poison

from helpers import one_line

SMALL = AuditConfig(level="tiny", attacks=(), epochs=2)
CLI = "import sys; from unlearnable.cli import main; sys.exit(main())"
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    return poison_dataset("regions", "digits", tmp_path_factory.mktemp("hostile") / "regions", seed=0, subset=300,
                          params={"eps": "32/255"})


@pytest.fixture
def echo_kinds(monkeypatch):
    """Two throw-away job kinds: `echo` (its spec's value) and `after` (needs an echo first);
    `calls` lists the keys each process of this test ran."""
    calls: list[str] = []
    gate = {"echo": threading.Event()}
    gate["echo"].set()

    def echo(spec, ctx, deps):
        calls.append(job_key(spec))
        gate["echo"].wait(30)
        return {"v": spec["v"]}

    def after(spec, ctx, deps):
        calls.append(job_key(spec))
        return {"v": sum(r["v"] for r in deps.values()) + 1}

    monkeypatch.setitem(JOBS, "echo", JOBS.get("echo"))
    monkeypatch.setitem(JOBS, "after", JOBS.get("after"))
    register_job("echo", echo)
    register_job("after", after, deps=lambda spec: [spec["on"]])
    return calls, gate


# --- two drivers on one result database ------------------------------------------------------------

def test_two_reproduce_drivers_on_one_database_run_every_job_once(tmp_path):
    db, out = tmp_path / "r.sqlite", tmp_path / "out"
    args = [sys.executable, "-c", CLI, "reproduce", "table2", "--dataset", "digits", "--level", "tiny",
            "--methods", "regions,ops", "--subset", "120", "--epochs", "1", "--db", str(db), "--out", str(out),
            "--no-progress"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-2000:]
        assert "0 failed, 0 blocked" in so
    with ResultStore(db) as store:
        jobs = store.jobs()
        assert jobs and {j["status"] for j in jobs} == {"done"}
        assert [j["attempts"] for j in jobs] == [1] * len(jobs)  # no job ran twice
    table = (out / "table2-digits.md").read_text()
    assert all(m in table for m in ("clean", "regions", "ops"))


def test_a_finished_job_is_never_overwritten_by_another_drivers_failure(tmp_path, echo_kinds):
    spec = {"kind": "echo", "v": 1}
    with ResultStore(tmp_path / "r.sqlite") as a, ResultStore(tmp_path / "r.sqlite") as b:
        key = a.add(spec)
        seen = a.get(key)
        assert a.claim(key, seen) and not b.claim(key, seen)  # one driver wins the claim
        assert not b.fail(key, "OSError: boom", "", 0.0, "h")  # not b's to record
        assert a.get(key)["status"] == "running"
        assert a.finish(key, {"v": 1}, 0.1, "h")
        assert not b.fail(key, "OSError: boom", "", 0.0, "h") and not b.finish(key, {"v": 2}, 0.1, "h")
        row = b.get(key)
        assert row["status"] == "done" and row["result"] == {"v": 1} and row["attempts"] == 1


def test_a_driver_waits_for_a_job_another_runs_and_uses_its_result(tmp_path, echo_kinds):
    calls, gate = echo_kinds
    dep = {"kind": "echo", "v": 2}
    top = {"kind": "after", "on": dep}
    gate["echo"].clear()  # the first driver's echo job runs until the gate opens
    results: dict[str, object] = {}

    def driver(name: str) -> None:
        with ResultStore(tmp_path / "r.sqlite") as store:
            results[name] = run_jobs([top], store, JobContext(tmp_path / "out"))

    first = threading.Thread(target=driver, args=("first",))
    first.start()
    deadline = time.time() + 30
    while not calls and time.time() < deadline:
        time.sleep(0.05)
    second = threading.Thread(target=driver, args=("second",))
    second.start()
    time.sleep(1.0)  # the second driver finds the echo running and polls
    assert calls == [job_key(dep)]
    gate["echo"].set()
    first.join(30)
    second.join(30)
    assert sorted(calls) == sorted([job_key(dep), job_key(top)])  # each job ran once, in one driver
    ran = results["first"].ran + results["second"].ran
    assert sorted(ran) == sorted([job_key(dep), job_key(top)])
    assert not results["first"].failed and not results["second"].failed
    assert not results["first"].blocked and not results["second"].blocked
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.get(job_key(top))["result"] == {"v": 3}
        assert {j["attempts"] for j in store.jobs()} == {1}


def test_a_killed_drivers_running_job_is_taken_over(tmp_path, echo_kinds):
    calls, _ = echo_kinds
    spec = {"kind": "echo", "v": 5}
    db = tmp_path / "r.sqlite"
    code = ("import sys, time; from unlearnable.runner import ResultStore; s = ResultStore(sys.argv[1]); "
            "k = s.add({'kind': 'echo', 'v': 5}); assert s.claim(k, s.get(k)); print('claimed', flush=True); "
            "time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout.readline().strip() == "claimed"
        with ResultStore(db) as store:  # alive: its job is not taken
            row = store.get(job_key(spec))
            assert row["status"] == "running" and store.owner_alive(row["owner"])
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with ResultStore(db) as store:
        s = run_jobs([spec], store, JobContext(tmp_path / "out"))
        assert s.ran == [job_key(spec)] and calls == [job_key(spec)]
        assert store.get(job_key(spec))["attempts"] == 2


def test_a_store_made_before_claims_gets_the_owner_column_and_its_rows_run(tmp_path, echo_kinds):
    calls, _ = echo_kinds
    db = tmp_path / "old.sqlite"
    spec = {"kind": "echo", "v": 7}
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE jobs (key TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
            result TEXT, error TEXT, traceback TEXT, host TEXT, versions TEXT,
            created TEXT NOT NULL, started TEXT, finished TEXT, seconds REAL, attempts INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE grids (grid_id TEXT PRIMARY KEY, tbl TEXT NOT NULL, dataset TEXT NOT NULL, layout TEXT NOT NULL,
            created TEXT NOT NULL, updated TEXT NOT NULL);""")
    from unlearnable.runner import canonical

    con.execute("INSERT INTO jobs (key, kind, spec, status, created, attempts) VALUES (?, 'echo', ?, 'running', "
                "'2024-01-01', 1)", (job_key(spec), canonical(spec)))
    con.commit()
    con.close()
    with ResultStore(db) as store:
        s = run_jobs([spec], store, JobContext(tmp_path / "out"))  # a running row of an old driver: its own gone
        assert s.ran == [job_key(spec)] and calls == [job_key(spec)]
        assert store.get(job_key(spec))["status"] == "done"


def test_a_protected_set_made_by_two_drivers_at_once_is_made_once(tmp_path, monkeypatch):
    import unlearnable.kinds.data as poisons  # where the job kinds make protected sets

    real = poisons.poison_dataset
    made: list[Path] = []

    def counting(*a, **kw):
        made.append(Path(a[2]))
        time.sleep(0.5)  # long enough for the other driver to arrive while this one makes it
        return real(*a, **kw)

    monkeypatch.setattr(poisons, "poison_dataset", counting)
    spec = {"kind": "poison", "method": "regions", "params": {}, "dataset": "digits", "subset": 60, "seed": 0,
            "level": "tiny"}
    got: list[Path] = []
    threads = [threading.Thread(target=lambda: got.append(ensure_poison(spec, JobContext(tmp_path))))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(made) == 1 and len(got) == 2 and got[0] == got[1]
    from unlearnable import load_dataset_dir

    assert len(load_dataset_dir(got[0])) == 60
    # A broken copy in its place is replaced; nothing else is left beside it.
    (got[0] / "images.npy").write_bytes(b"junk")
    assert ensure_poison(spec, JobContext(tmp_path)) == got[0] and len(made) == 2
    assert len(load_dataset_dir(got[0])) == 60
    assert sorted(p.name for p in got[0].parent.iterdir() if not p.name.endswith(".lock")) == ["data"]


def test_two_audits_sharing_the_cache_train_the_clean_reference_once(regions, tmp_path):
    ops = poison_dataset("ops", "digits", tmp_path / "ops", seed=0, subset=300)
    cache = tmp_path / "cache"
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def audit(data: Path, name: str) -> None:
        try:
            results[name] = run_audit(data, tmp_path / name, SMALL, progress=False, cache=cache)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=audit, args=(d, n)) for d, n in ((regions, "a"), (ops, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for r in results.values():
        assert {s["status"] for s in r["steps"].values()} == {"done"}, r["steps"]
    assert results["a"]["clean_reference"] == results["b"]["clean_reference"]
    with ResultStore(cache / "results.sqlite") as store:
        jobs = store.jobs()
        assert {j["kind"] for j in jobs} >= {"train", "dfr-random"}
        assert {j["status"] for j in jobs} == {"done"} and {j["attempts"] for j in jobs} == {1}


# --- one audit directory, one audit ----------------------------------------------------------------

def test_a_second_audit_into_one_directory_is_refused_at_once(regions, tmp_path, monkeypatch):
    import unlearnable.runner.executors as ex

    out = tmp_path / "a"
    inside, release = threading.Event(), threading.Event()
    real = ex.execute

    def slow(spec, ctx, deps):
        inside.set()
        release.wait(60)
        return real(spec, ctx, deps)

    monkeypatch.setattr(ex, "execute", slow)
    first: dict[str, object] = {}
    t = threading.Thread(target=lambda: first.update(r=run_audit(regions, out, SMALL, progress=False,
                                                                 cache=tmp_path / "c")))
    t.start()
    assert inside.wait(60)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    t0 = time.perf_counter()
    with pytest.raises(LockHeld) as e:
        run_audit(regions, out, SMALL, progress=False, cache=tmp_path / "c")
    assert time.perf_counter() - t0 < 10  # refused at once, not after waiting
    msg = str(e.value)
    assert one_line(msg) and str(out) in msg and f"pid {os.getpid()}" in msg
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the refused run touched nothing
    release.set()
    t.join(120)
    r = first["r"]
    assert {s["status"] for s in r["steps"].values()} == {"done"}
    lines = (out / "train-protected" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]  # one writer


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    code = ("import sys, time; from unlearnable.core.lock import dir_lock\n"
            "with dir_lock(sys.argv[1], 'audit'):\n    print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {p.pid}"):
            with dir_lock(tmp_path, "audit"):
                pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with dir_lock(tmp_path, "audit"):  # the kernel dropped the dead holder's lock
        pass


# --- checkpoints ----------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "epoch", "directory", "metrics"])
def test_a_bad_last_pt_on_resume_is_one_line_naming_it(tmp_path, digits_train, digits_test, damage):
    from unlearnable.train.recipe import RECIPES
    from unlearnable.train.run import spec_for, train_on

    small = digits_train.subset(range(200))
    rs = spec_for(small, "convnet", RECIPES["tiny"].replace(epochs=2), 0)
    train_on(small, None, rs, tmp_path, "cpu", False, stop_after_epoch=1)
    last = tmp_path / "last.pt"
    raw = last.read_bytes()
    if damage == "truncated":
        last.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        last.write_bytes(b"\x00not a checkpoint" * 10)
    elif damage == "foreign":
        torch.save({"epoch": 1, "model": {"w": torch.zeros(3)}, "optimizer": {}}, last)
    elif damage == "epoch":
        state = torch.load(last, weights_only=True)
        torch.save({**state, "epoch": 99}, last)
    elif damage == "directory":
        last.unlink()
        last.mkdir()
    else:
        last = tmp_path / "metrics.jsonl"
        last.write_bytes(b"\xff\xfe binary\n[1, 2]\n")
    with pytest.raises(DataError) as e:
        train_on(small, None, rs, tmp_path, "cpu", False)
    msg = str(e.value)
    assert one_line(msg) and msg.startswith(str(last)) and "is unreadable" in msg and "--restart" in msg


def _interrupt_training(monkeypatch, run_name: str, after_epoch: int) -> None:
    import unlearnable.train.loop as engine

    real = engine.save_epoch

    def save(out, model, opt, epoch, *rest):
        real(out, model, opt, epoch, *rest)
        if Path(out).name == run_name and epoch == after_epoch:
            raise KeyboardInterrupt  # killed right after the epoch was saved

    monkeypatch.setattr(engine, "save_epoch", save)


def test_a_truncated_last_pt_in_an_audit_is_recorded_and_restart_repairs_it(regions, tmp_path, monkeypatch):
    out = tmp_path / "a"
    _interrupt_training(monkeypatch, "train-protected", 1)
    with pytest.raises(KeyboardInterrupt):
        run_audit(regions, out, SMALL, progress=False, cache=tmp_path / "c")
    monkeypatch.undo()
    last = out / "train-protected" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    for _ in range(2):  # recorded on each rerun, never a traceback
        r = run_audit(regions, out, SMALL, progress=False, cache=tmp_path / "c")
        why = r["failed_steps"]["train-protected"]
        assert r["steps"]["train-protected"]["status"] == "failed"
        assert one_line(why) and str(last) in why and "unreadable" in why
        assert r["steps"]["dfr"]["status"] == "blocked"
        assert r["failed_steps"]["dfr"].startswith("step train-protected failed: ")
        assert r["verdict"]["overall"] == "incomplete"
        assert r["verdict"]["reason"].startswith("step train-protected failed: ")
        assert "failed" in (out / "report.md").read_text()
    r = run_audit(regions, out, SMALL, progress=False, cache=tmp_path / "c", restart=True)
    assert {s["status"] for s in r["steps"].values()} == {"done"} and r["failed_steps"] == {}
    assert r["verdict"]["overall"] != "incomplete"
    torch.load(last, weights_only=True)


def test_a_corrupt_checkpoint_read_by_dfr_fails_that_step_and_restart_retrains(regions, tmp_path, monkeypatch,
                                                                               caplog):
    import unlearnable.kinds.dfr as dfr_mod

    out = tmp_path / "a"
    real = dfr_mod.dfr_curve

    def crash(run_dir, *a, **k):  # killed in DFR of this audit's own training
        if str(out) in str(run_dir):
            raise KeyboardInterrupt
        return real(run_dir, *a, **k)

    monkeypatch.setattr(dfr_mod, "dfr_curve", crash)
    with pytest.raises(KeyboardInterrupt):
        run_audit(regions, out, SMALL, progress=False, cache=tmp_path / "c")
    monkeypatch.undo()
    ck = out / "train-protected" / "checkpoints" / "epoch_001.pt"
    good = ck.read_bytes()
    ck.write_bytes(b"PK\x03\x04 cut short")
    # A sealed training (its files' checksums recorded): the change is caught before DFR reads
    # it, with a warning naming the file, and the training runs again.
    with caplog.at_level(logging.WARNING, logger="unlearnable"):
        r = run_audit(regions, out, SMALL, progress=False, cache=tmp_path / "c")
    assert any(str(ck) in m.getMessage() and "changed after its job finished" in m.getMessage()
               for m in caplog.records)
    assert {s["status"] for s in r["steps"].values()} == {"done"} and ck.read_bytes() == good
    # A training recorded before seals existed: DFR meets the broken file and fails, naming it.
    with sqlite3.connect(out / "jobs.sqlite") as c:
        c.execute("UPDATE jobs SET files = NULL, status = 'done' WHERE kind = 'train'")
        c.execute("UPDATE jobs SET status = 'pending', result = NULL, digest = NULL WHERE kind = 'dfr'")
    ck.write_bytes(b"PK\x03\x04 cut short")
    r = run_audit(regions, out, SMALL, progress=False, cache=tmp_path / "c")
    assert r["steps"]["train-protected"]["status"] == "done"
    why = r["failed_steps"]["dfr"]
    assert r["steps"]["dfr"]["status"] == "failed" and one_line(why) and str(ck) in why
    assert r["verdict"]["overall"] == "incomplete" and r["verdict"]["reason"].startswith("step dfr failed: ")
    r = run_audit(regions, out, SMALL, progress=False, cache=tmp_path / "c", restart=True)
    assert {s["status"] for s in r["steps"].values()} == {"done"}
    torch.load(ck, weights_only=True)


# --- failed steps ---------------------------------------------------------------------------------

def test_a_step_failing_on_a_bogus_device_is_recorded_and_named_by_the_verdict(regions, tmp_path):
    out, cache = tmp_path / "a", tmp_path / "c"
    cfg = AuditConfig(level="tiny", attacks=(), epochs=2, device="bogus")
    r = run_audit(regions, out, cfg, progress=False, cache=cache)
    for step in ("train-protected", "train-clean"):
        assert r["steps"][step]["status"] == "failed"
        assert "bogus" in r["failed_steps"][step] and one_line(r["failed_steps"][step])
    assert r["steps"]["separability-images"]["status"] == "done"  # what could run, ran
    v = r["verdict"]
    assert v["overall"] == "incomplete" and v["reason"].startswith("step train-protected failed: ")
    assert "clean images are unknown" not in v["reason"]
    saved = (out / "results.json").read_text()
    assert "bogus" in saved and "bogus" in (out / "report.md").read_text()
    # The cause gone (another device), the same audit continues and the failed steps run again.
    r = run_audit(regions, out, AuditConfig(level="tiny", attacks=(), epochs=2, device="cpu"), progress=False,
                  cache=cache)
    assert {s["status"] for s in r["steps"].values()} == {"done"} and r["failed_steps"] == {}


def test_the_verdict_never_judges_without_a_failed_step():
    attacks = {"none": {"test_accuracy": 0.2}, "jpeg": {"test_accuracy": 0.3}}
    v = verdict(None, attacks, None, num_classes=10, failed={"train-clean": "RuntimeError: no CUDA"})
    assert v["overall"] == "incomplete" and v["reason"] == "step train-clean failed: RuntimeError: no CUDA"
    v = verdict(0.9, attacks, None, num_classes=10, failed={"attack:ortho-proj": "MemoryError"})
    assert v["overall"] == "incomplete" and v["reason"].startswith("step attack:ortho-proj failed: MemoryError; ")
    broken = {**attacks, "jpeg": {"test_accuracy": 0.85}}  # what did run broke it: that stands
    assert verdict(0.9, broken, None, num_classes=10, failed={"dfr": "x"})["overall"] == "broken"
    assert verdict(0.9, attacks, None, num_classes=10)["overall"] == "holds"


def test_a_demo_says_which_steps_failed(tmp_path, monkeypatch):
    import unlearnable.runner.execute as ex
    from unlearnable.auditor.demo import DemoConfig, run_demo

    real = ex.run_job

    def jpeg_fails(spec, *a, **kw):
        if spec.get("attack") == "jpeg":
            raise OSError("disk full")
        return real(spec, *a, **kw)

    monkeypatch.setattr(ex, "run_job", jpeg_fails)
    cfg = DemoConfig(data="digits", methods=("regions",), subset=300, level="tiny", attacks=("jpeg",), epochs=2)
    results = run_demo(tmp_path / "demo", cfg, progress=False, cache=tmp_path / "c")
    assert results[0]["failed_steps"] == {"attack:jpeg": "OSError: disk full"}
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["failed_steps"] == {"regions": {"attack:jpeg": "OSError: disk full"}}
    assert summary["rows"][0]["verdict"]["overall"] in ("incomplete", "broken", "ineffective")
    with dir_lock(tmp_path / "demo", "demo"), pytest.raises(UnlearnableError, match="another demo"):
        run_demo(tmp_path / "demo", cfg, progress=False, cache=tmp_path / "c")


def test_the_audit_command_exits_1_naming_a_failed_step(regions, tmp_path, monkeypatch, capsys):
    """A step that fails is not a result: `unlearnable audit` says which, on stderr, and exits 1;
    the report is still written and its verdict names the failure. `--restart` is accepted."""
    import unlearnable.kinds.dfr as dfr_mod
    from unlearnable.cli import main

    def broken(*a, **k):
        raise ValueError("the DFR head did not converge")

    monkeypatch.setattr(dfr_mod, "dfr_curve", broken)
    out = tmp_path / "a"
    rc = main(["audit", str(regions), "--out", str(out), "--level", "tiny", "--attacks", "jpeg",
               "--no-progress", "--restart"])
    cap = capsys.readouterr()
    assert rc == 1
    lines = [x for x in cap.err.splitlines() if x.startswith("unlearnable: audit step")]
    assert lines == [f"unlearnable: audit step {s} failed: ValueError: the DFR head did not converge"
                     for s in ("dfr", "dfr-clean")]
    assert (out / "report.html").exists() and "verdict:" in cap.out
    # Fixed, the rerun runs the failed step again and exits 0.
    monkeypatch.undo()
    assert main(["audit", str(regions), "--out", str(out), "--level", "tiny", "--attacks", "jpeg",
                 "--no-progress"]) == 0


def test_a_clean_dataset_that_cannot_be_had_is_refused_before_anything_runs(regions, tmp_path, capsys):
    from unlearnable.cli import main

    rc = main(["audit", str(regions), "--out", str(tmp_path / "a"), "--level", "tiny", "--clean", "no-such-set",
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--clean no-such-set" in err[0]
    assert not (tmp_path / "a").exists()


def test_an_attack_whose_settings_changed_since_the_last_run_replaces_its_old_directory(regions, tmp_path,
                                                                                          monkeypatch):
    """A newer version's preset for an attack (its job key changes, its place attacks/NAME does
    not): the rerun replaces the earlier job and its files instead of refusing the directory."""
    import dataclasses

    from unlearnable.attacks import ATTACKS
    from unlearnable.ladder import AttackRow, PerLevel

    cfg = AuditConfig(level="tiny", attacks=("jpeg",), epochs=1)
    out, cache = tmp_path / "a", tmp_path / "c"
    first = run_audit(regions, out, cfg, progress=False, cache=cache)
    assert first["steps"]["attack:jpeg"]["status"] == "done"
    newer = AttackRow(params=PerLevel({"tiny": {"quality": "50"}}, default={}))
    monkeypatch.setitem(ATTACKS, "jpeg", dataclasses.replace(ATTACKS["jpeg"], levels=newer))
    again = run_audit(regions, out, cfg, progress=False, cache=cache)
    assert again["steps"]["attack:jpeg"]["status"] == "done", again["steps"]["attack:jpeg"]
    assert again["steps"]["attack:jpeg"]["key"] != first["steps"]["attack:jpeg"]["key"]
    assert json.loads((out / "attacks" / "jpeg" / "result.json").read_text())["params"]["quality"] == 50
    with ResultStore(out / "jobs.sqlite") as store:  # the earlier job is forgotten, not left behind
        assert store.get(first["steps"]["attack:jpeg"]["key"]) is None


def test_a_failure_two_dependencies_down_blocks_the_chain_without_waiting(echo_kinds, tmp_path, monkeypatch):
    """echo fails -> the `after` that needs it is blocked -> the `after` that needs *that* one is
    blocked too, in the same pass (it once waited forever for a job that could no longer run)."""
    def boom(spec, ctx, deps):
        raise ValueError("disk full")

    register_job("echo", boom)
    bottom = {"kind": "echo", "v": 1}
    mid = {"kind": "after", "on": bottom}
    top = {"kind": "after", "on": mid}
    done: list = []

    def go() -> None:
        with ResultStore(tmp_path / "r.sqlite") as store:
            done.append(run_jobs([bottom, mid, top], store, JobContext(tmp_path / "out"), retry_failed=True))

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the scheduler waited for a job that cannot run"
    s = done[0]
    assert s.failed == [job_key(bottom)] and set(s.blocked) == {job_key(mid), job_key(top)}
