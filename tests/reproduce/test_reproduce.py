"""`unlearnable reproduce` / `results`: grids of job specs, the SQLite store, local and Ray executors."""

from __future__ import annotations

import importlib.util
import json
import sqlite3

import pytest

from unlearnable.core.errors import DataError
from unlearnable.cli import main
from unlearnable.reproduce import (
    TABLES, Cell, Grid, ResultStore, build_grid, job_key, run_grid, table_data, write_outputs,
)
from unlearnable.runner import execute as ex
from unlearnable.runner.jobs import dependencies

HAS_RAY = importlib.util.find_spec("ray") is not None
TINY = {"level": "tiny", "subset": 120, "epochs": 1}


def metrics(store: ResultStore, grid: Grid) -> dict[tuple[str, str], tuple]:
    """The numbers a table shows, per cell (timings and hosts excluded)."""
    out = {}
    for c in grid.cells:
        r = store.get(c.key)["result"]
        out[(c.row, c.col)] = tuple(r.get(k) for k in ("test_accuracy", "test_accuracy_transformed_test",
                                                       "train_accuracy_mean", "max_dfr_accuracy"))
    return out


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_builds_a_grid_with_dependencies_first(table):
    steps = ["dfr", "attack:jpeg"] if table == "steps" else None
    g = build_grid(table, "digits", archs=["convnet"], methods=["regions", "ops"], steps=steps, **TINY)
    assert g.rows == ["clean", "regions", "ops"]
    assert len({(c.row, c.col) for c in g.cells}) == len(g.cells) == len(g.rows) * len(g.cols)
    jobs = g.jobs()
    keys = [job_key(s) for s in jobs]
    assert len(set(keys)) == len(keys)
    pos = {k: i for i, k in enumerate(keys)}
    for s in jobs:  # every dependency is scheduled, and before its dependent
        assert all(pos[job_key(d)] < pos[job_key(s)] for d in dependencies(s))
    # The key is the content hash: another seed changes every key, the same call none.
    assert [c.key for c in build_grid(table, "digits", methods=["regions", "ops"], steps=steps, **TINY).cells] == \
        [c.key for c in g.cells]
    assert not {c.key for c in g.cells} & {c.key for c in build_grid(table, "digits", methods=["regions", "ops"],
                                                                      seed=1, steps=steps, **TINY).cells}


def test_table3_local_grid_outputs_and_cli(tmp_path, capsys):
    args = ["reproduce", "table3", "--dataset", "digits", "--budget", "tiny", "--methods", "regions",
            "--subset", "120", "--epochs", "1", "--db", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "out"),
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| regions |" in out and "7 jobs, 0 cached, 7 ran" in out
    for ext in ("md", "csv", "html"):
        assert (tmp_path / "out" / f"table3-digits.{ext}").is_file()
    csv_rows = (tmp_path / "out" / "table3-digits.csv").read_text().splitlines()
    assert csv_rows[0].startswith("training data,none (%)") and len(csv_rows) == 3
    assert all("–" not in r and "failed" not in r for r in csv_rows[1:])
    # Rerun: everything cached, nothing recomputed.
    assert main(args) == 0
    assert "7 jobs, 7 cached, 0 ran" in capsys.readouterr().out
    # `results` lists and exports.
    assert main(["results", "--db", str(tmp_path / "r.sqlite")]) == 0
    listing = capsys.readouterr().out
    assert "7 done" in listing and "adv-train" in listing
    assert main(["results", "--db", str(tmp_path / "r.sqlite"), "--table", "table3", "--format", "json",
                 "--out", str(tmp_path / "t3.json")]) == 0
    exported = json.loads((tmp_path / "t3.json").read_text())
    assert exported[0]["rows"] == [r.split(",") for r in csv_rows[1:]]
    assert main(["results", "--db", str(tmp_path / "r.sqlite"), "--table", "table1"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="Ray is not importable (pip install 'unlearnable[ray]')")
def test_table3_ray_executor_matches_local(tmp_path):
    grid = build_grid("table3", "digits", methods=["random-noise"], **TINY)
    results = {}
    for executor in ("local", "ray"):
        with ResultStore(tmp_path / f"{executor}.sqlite") as store:
            s = run_grid(grid, store, tmp_path / executor, executor=executor, progress=False)
            assert (len(s.ran), s.failed, s.blocked) == (7, [], [])
            assert store.counts() == {"done": 7}
            hosts = {j["host"] for j in store.jobs()}
            assert all(hosts)
            results[executor] = metrics(store, grid)
    assert results["ray"] == results["local"]
    assert all(v[0] is not None for v in results["ray"].values())


def test_killed_grid_resumes_only_missing_cells(tmp_path, monkeypatch):
    grid = build_grid("table6", "digits", methods=["random-noise", "regions", "lsp"], **TINY)
    total = len(grid.jobs())  # 3 poisons + 4 separability cells
    calls: list[str] = []
    real = ex.run_job

    def dying(spec, *a, **kw):
        if len(calls) == 3:  # the process dies inside the 4th job
            raise KeyboardInterrupt
        calls.append(job_key(spec))
        return real(spec, *a, **kw)

    monkeypatch.setattr(ex, "run_job", dying)
    with ResultStore(tmp_path / "r.sqlite") as store, pytest.raises(KeyboardInterrupt):
        run_grid(grid, store, tmp_path / "out", progress=False)
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.counts() == {"done": 3, "running": 1, "pending": total - 4}
        done_before = {j["key"] for j in store.jobs("done")}
    calls.clear()
    monkeypatch.setattr(ex, "run_job", lambda spec, *a, **kw: (calls.append(job_key(spec)), real(spec, *a, **kw))[1])
    with ResultStore(tmp_path / "r.sqlite") as store:
        s = run_grid(grid, store, tmp_path / "out", progress=False)
        assert s.cached == 3 and len(s.ran) == total - 3
        assert set(calls) == {job_key(j) for j in grid.jobs()} - done_before and len(calls) == total - 3
        assert store.counts() == {"done": total}
        headers, rows = table_data(grid.layout(), {c.key: store.get(c.key) for c in grid.cells})
        assert [r[0] for r in rows] == ["clean", "random-noise", "regions", "lsp"]
        assert all("±" in r[1] for r in rows)


def test_same_spec_runs_once(tmp_path, monkeypatch):
    spec = build_grid("table2", "digits", methods=["regions"], **TINY).cells[0].spec
    reordered = dict(reversed(list(spec.items())))  # same content, other key order
    grid = Grid("table2", "digits", ["convnet"], "tiny", 0, 120, ["a", "b"], ["perturbations"],
                [Cell("a", "perturbations", spec), Cell("b", "perturbations", reordered)])
    calls = []
    real = ex.run_job
    monkeypatch.setattr(ex, "run_job", lambda s, *a, **kw: (calls.append(job_key(s)), real(s, *a, **kw))[1])
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_grid(grid, store, tmp_path / "out", progress=False)
        assert calls == [job_key(spec)]
        # Table 3's "none" column is Table 1's standard training: one job in the store for both.
        t1 = build_grid("table1", "digits", methods=["regions"], **TINY)
        t3 = build_grid("table3", "digits", methods=["regions"], **TINY)
        assert {job_key(c.spec["run"]) for c in t1.cells} == \
            {c.key for c in t3.cells if c.col == "none"}


def test_failed_cells_are_kept_blocked_and_retried(tmp_path, monkeypatch):
    grid = build_grid("table2", "digits", methods=["regions"], **TINY)
    real = ex.run_job

    def broken(spec, *a, **kw):
        if spec["kind"] == "poison":
            raise ValueError("disk full")
        return real(spec, *a, **kw)

    monkeypatch.setattr(ex, "run_job", broken)
    with ResultStore(tmp_path / "r.sqlite") as store:
        s = run_grid(grid, store, tmp_path / "out", progress=False)
        assert len(s.failed) == 1 and len(s.blocked) == 1 and len(s.ran) == 1  # clean row ran
        bad = store.get(s.failed[0])
        assert bad["status"] == "failed" and bad["error"] == "ValueError: disk full" and "Traceback" in bad["traceback"]
        monkeypatch.setattr(ex, "run_job", real)
        s = run_grid(grid, store, tmp_path / "out", progress=False)
        assert s.ran == [] and len(s.skipped_failed) == 1 and len(s.blocked) == 1
        s = run_grid(grid, store, tmp_path / "out", progress=False, retry_failed=True)
        assert len(s.ran) == 2 and store.counts() == {"done": 3}
        assert store.get(s.ran[0])["attempts"] == 2


def test_corrupted_database_is_refused_untouched(tmp_path, capsys):
    db = tmp_path / "results.sqlite"
    for content in (b"this is not a database\n" * 50, b"SQLite format 3\x00" + bytes(range(256)) * 8):
        db.write_bytes(content)
        rc = main(["reproduce", "table2", "--dataset", "digits", "--budget", "tiny", "--methods", "regions",
                   "--subset", "50", "--db", str(db), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and str(db) in err
        assert db.read_bytes() == content
        assert main(["results", "--db", str(db)]) == 2
        assert str(db) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["results", "--db", str(tmp_path / "missing.sqlite")]) == 2
    assert not (tmp_path / "missing.sqlite").exists()


def test_locked_database_gives_clear_error_and_loses_nothing(tmp_path):
    db = tmp_path / "results.sqlite"
    spec = build_grid("table2", "digits", methods=["regions"], **TINY).cells[0].spec
    with ResultStore(db) as store:
        key = store.add(spec)
        store.finish(key, {"train_accuracy_mean": 0.5}, 1.0, "h")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(DataError, match="locked by another process"):
        ResultStore(db, busy_timeout=0.2)
    other.execute("COMMIT")
    other.close()
    with ResultStore(db) as store:
        assert store.get(key)["result"] == {"train_accuracy_mean": 0.5} and store.counts() == {"done": 1}


def test_dry_run_estimates_without_running(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    assert main(["reproduce", "table1", "--dataset", "digits", "--budget", "tiny", "--methods", "regions",
                 "--subset", "100", "--db", str(db), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # poison, 2 trainings, 2 DFR curves, and the random networks' DFR both rows share (3 inits)
    assert "table1 on digits: 2 cells, 8 jobs (0 already done)" in out
    assert "device-hours" in out and "samples/s" in out
    assert not db.exists() and not (tmp_path / "out").exists()


def test_write_outputs_html_is_self_contained(tmp_path):
    grid = build_grid("table2", "digits", methods=["regions", "ar"], subset=10)
    grid.dataset = "cifar10"  # the layout of a CIFAR-10 grid: the paper's numbers join the table
    with ResultStore(tmp_path / "r.sqlite") as store:
        for spec in grid.jobs():
            store.add(spec)
        c = grid.cells[2]  # ar: pretend it finished
        store.finish(c.key, {"train_accuracy_mean": 0.4, "train_accuracy_std": 0.0, "of": "perturbations"}, 1, "h")
        store.save_grid(grid.grid_id, grid.layout())
        paths = write_outputs(grid.layout(), store, tmp_path / "out")
    md = paths["md"].read_text()
    assert "| ar | 40.00 | 39.58 |" in md and "| clean | – | 53.88 |" in md  # ours vs the paper's
    html = paths["html"].read_text()
    assert html.startswith("<!doctype html>") and "39.58" in html and "http" not in html.split("<body>")[1]
