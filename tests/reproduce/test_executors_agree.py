"""The same grid gives the same printed table under every executor: in process, a pool of local
processes and Ray, at `quick` on digits, from an empty store and from one another executor
left half done, cell for cell; and a table whose cells were computed under different numeric
settings (threads, instruction set) says so under the table."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from unlearnable.reproduce import ResultStore, build_grid, grid_jobs, run_grid, table_data, write_outputs
from unlearnable.reproduce.tables import settings_note
from unlearnable.runner.ray_executor import init_ray

HAS_RAY = importlib.util.find_spec("ray") is not None
EXECUTORS = {"local": {}, "pool": {"workers": 2}, "ray": {"executor": "ray"}}


def printed(grid, store, out) -> tuple[list[list[str]], str]:
    """The table's cells as strings, and the Markdown `reproduce` prints."""
    layout = grid.layout()
    _, rows = table_data(layout, grid_jobs(layout, store))
    return rows, write_outputs(layout, store, out)["md"].read_text()


def differing(a: list[list[str]], b: list[list[str]], cols: list[str]) -> list[str]:
    return [f"{ra[0]} / {col}: {x} vs {y}" for ra, rb in zip(a, b) for col, x, y in zip(cols, ra[1:], rb[1:]) if x != y]


@pytest.fixture
def ray_instance():
    """One local Ray instance (on 127.0.0.1) for every Ray run of the test: the executor uses it
    and leaves it running; it stops afterwards."""
    import ray

    init_ray(None, {})
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="Ray is not importable (pip install 'unlearnable[ray]')")
def test_quick_tables_are_the_same_cell_for_cell_on_every_executor(tmp_path, ray_instance):
    # table2: every model-free poison and its separability (the cells that moved before:
    # docs/reproduce.md); table3: trainings, adversarial training and ortho-proj.
    grids = [build_grid("table2", "digits", level="quick"),
             build_grid("table3", "digits", level="quick", methods=["regions", "ar"])]
    for grid in grids:
        cols = grid.cols
        want = None
        for name, kw in EXECUTORS.items():  # each from an empty store
            with ResultStore(tmp_path / f"{grid.table}-{name}.sqlite") as store:
                s = run_grid(grid, store, tmp_path / f"{grid.table}-{name}", progress=False, **kw)
                assert (len(s.ran), s.failed, s.blocked) == (len(grid.jobs()), [], []), name
                rows, md = printed(grid, store, tmp_path / f"{grid.table}-{name}-tables")
            assert all("–" not in c and "failed" not in c for r in rows for c in r[1:]), rows
            if want is None:
                want = (rows, md)
            assert differing(want[0], rows, cols) == [], name
            assert md == want[1] and "note:" not in md, name
        # Warm: the in-process run's store and files with its cells forgotten (their poisons kept,
        # and the trainings' checkpoints on disk), finished by each of the other executors.
        cells = {c.key for c in grid.cells}
        for name in ("pool", "ray"):
            db, out = tmp_path / f"{grid.table}-warm-{name}.sqlite", tmp_path / f"{grid.table}-warm-{name}"
            shutil.copy(tmp_path / f"{grid.table}-local.sqlite", db)
            shutil.copytree(tmp_path / f"{grid.table}-local", out)
            with ResultStore(db) as store:
                for key in cells:
                    assert store.delete(key)
                s = run_grid(grid, store, out, progress=False, **EXECUTORS[name])
                assert set(s.ran) == cells and s.cached == len(grid.jobs()) - len(cells), name
                rows, md = printed(grid, store, tmp_path / f"{grid.table}-warm-{name}-tables")
            assert differing(want[0], rows, cols) == [], name
            assert md == want[1], name


def test_a_table_of_cells_computed_under_different_settings_says_so():
    cells = [{"row": r, "col": "c", "key": r} for r in ("a", "b", "c")]
    layout = {"cells": cells}

    def job(threads, cpu, status="done"):
        return {"status": status, "versions": {"torch": "2.13.0", "numpy": "2.4.6", "torch_threads": threads,
                                               "cpu_capability": cpu}}

    same = {"a": job(1, "AVX512"), "b": job(1, "AVX512"), "c": job(2, "AVX2", status="failed")}
    assert settings_note(layout, same) is None  # a failed cell has no number to compare
    mixed = {**same, "c": job(1, "AVX2")}
    note = settings_note(layout, mixed)
    assert note.startswith("note: the cells were computed under different cpu_capability AVX2 (1 cells), "
                           "AVX512 (2 cells):") and "torch_threads" not in note
    older = {**mixed, "b": {"status": "done", "versions": {"torch": "2.13.0", "numpy": "2.4.6"}}}
    assert "torch_threads 1 (2 cells), unrecorded (1 cells)" in settings_note(layout, older)
