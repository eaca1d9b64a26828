"""The leaderboard (issue 31, item 4): every poison against the attack columns over seeds, its
numbers equal to the store's per-seed results, resumable, rendered as Markdown, CSV and one
colour-scaled page that opens in headless Chromium."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from unlearnable.attacks import best_accuracy, panel
from unlearnable.cli import main
from unlearnable.reproduce import ResultStore, build_grid, grid_jobs, run_grid, write_outputs
from unlearnable.reproduce.leaderboard import summarize

from helpers import chromium, open_in_chromium

COLS = ["jpeg", "ortho-proj-oracle"]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    out = tmp_path_factory.mktemp("leaderboard")
    grid = build_grid("leaderboard", "digits", level="tiny", methods=["regions", "random-noise"], seeds=2,
                      attacks=COLS, subset=400)
    with ResultStore(out / "r.sqlite") as store:
        first = run_grid(grid, store, out / "art")
        again = run_grid(grid, store, out / "art")
        paths = write_outputs(grid.layout(), store, out / "art")
        jobs = grid_jobs(grid.layout(), store)
    return grid, jobs, paths, first, again


def test_cells_are_every_row_column_and_seed_and_the_numbers_are_the_stores(board):
    grid, jobs, _, first, again = board
    assert grid.cols == ["none", *COLS] and grid.rows == ["clean", "regions", "random-noise"]
    assert len(grid.cells) == 3 * 3 * 2 and {c.seed for c in grid.cells} == {0, 1}
    assert first.failed == [] and again.cached == again.total and again.ran == []  # resumed, nothing recomputed
    s = summarize(grid.layout(), jobs)
    for (row, col), e in s["cells"].items():
        accs = [best_accuracy(jobs[c.key]["result"]) for c in grid.cells if (c.row, c.col) == (row, col)]
        assert e["acc"] == accs and e["mean"] == pytest.approx(np.mean(accs))
        assert e["std"] == pytest.approx(np.std(accs, ddof=1))
        assert e["seconds_mean"] > 0
    # The two seeds are two subsets, two poisons and two initializations: not one run twice.
    assert len({jobs[c.key]["result"]["test_accuracy"] for c in grid.cells if c.col == "none"}) > 1
    # The worst case never names an oracle; the mean per attack leaves the clean row out.
    for row, w in s["worst"].items():
        assert w[0] != "ortho-proj-oracle"
        assert w[1] == max(s["cells"][(row, a)]["mean"] for a in ("none", "jpeg"))
    assert s["per_attack"]["jpeg"] == pytest.approx(np.mean([s["cells"][(m, "jpeg")]["mean"]
                                                             for m in ("regions", "random-noise")]))
    assert set(s["crafting"]) == {"regions", "random-noise"}


def test_outputs_are_markdown_csv_and_a_page(board):
    grid, jobs, paths, *_ = board
    md = paths["md"].read_text()
    assert "seeds 0, 1" in md and "worst case" in md and "mean over poisons" in md and " ± " in md
    lines = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert len(lines) == 9 and all(int(r["seeds_done"]) == 2 for r in lines)
    r = next(r for r in lines if (r["training_data"], r["attack"]) == ("regions", "jpeg"))
    per_seed = [float(v) for v in r["accuracy_per_seed"].split()]
    assert float(r["mean"]) == pytest.approx(np.mean(per_seed), abs=1e-4)
    assert float(r["ci95_low"]) <= float(r["mean"]) <= float(r["ci95_high"]) <= 1.0
    assert sum(int(r["worst_case"]) for r in lines) == 3  # one per row


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (make test installs Debian's chromium)")
def test_the_leaderboard_page_renders_in_headless_chromium(board, tmp_path):
    _, _, paths, *_ = board
    shot = tmp_path / "leaderboard.png"
    dom = open_in_chromium(paths["html"], tmp_path / "profile", shot)
    assert 'class="leaderboard"' in dom and "mean over poisons" in dom
    # A coloured cell per (row, column) and the browser kept the colours it was given.
    assert dom.count('class="lb"') == 9 and "hsl(" in dom
    assert shot.stat().st_size > 10_000


def test_cli_leaderboard_and_its_refusals(tmp_path, capsys):
    args = ["reproduce", "leaderboard", "--dataset", "digits", "--level", "tiny", "--methods", "regions",
            "--subset", "200", "--attacks", "jpeg", "--db", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| regions |" in out and (tmp_path / "o" / "leaderboard-digits.html").exists()
    # Other tables run on one seed; unknown attack columns are named.
    assert main(["reproduce", "table3", "--dataset", "digits", "--seeds", "2", "--dry-run"]) == 2
    assert "--seeds 2" in capsys.readouterr().err
    assert main([*args[:-4], "--attacks", "jpg", "--dry-run"]) == 2
    assert "unknown attack 'jpg'" in capsys.readouterr().err


def test_default_columns_are_the_levels_panel():
    grid = build_grid("leaderboard", "digits", level="tiny", methods=["regions"], subset=100)
    assert grid.cols == ["none", *panel("tiny")] and grid.seeds == [0]
