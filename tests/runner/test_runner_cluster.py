"""Grids beyond one process: artifacts behind a storage URL, pinned threads, local jobs side by
side, and a real two-node Ray cluster on loopback giving the local executor's numbers."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from unlearnable.core.errors import DataError
from unlearnable.reproduce import ResultStore, build_grid, run_grid
from unlearnable.runner import JobContext, run_jobs
from unlearnable.runner.ray_executor import is_loopback
from unlearnable.runner.storage import ARTIFACTS, open_storage

HAS_RAY = importlib.util.find_spec("ray") is not None
SRC = str(Path(__file__).resolve().parents[2] / "src")
TINY = {"level": "tiny", "subset": 120}
# What differs between two runs of one job besides its numbers: where, when, how long.
NOT_NUMBERS = {"run_dir", "path", "finished", "created", "host", "versions", "elapsed"}


def numbers(value):
    """A result without its paths and timings: what must not change with the executor."""
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items() if k not in NOT_NUMBERS and not k.startswith("seconds")}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


def grid_numbers(store: ResultStore, grid) -> dict:
    return {(c.row, c.col): numbers(store.get(c.key)["result"]) for c in grid.cells}


def grids():
    # table2: model-free poisons and separability (the table whose numbers moved with Ray's threads);
    # table3: trainings and attacks; both at the tiny level with 2 epochs.
    return [build_grid("table2", "digits", methods=["regions", "random-noise"], **TINY),
            build_grid("table3", "digits", methods=["regions"], epochs=2, **TINY)]


def test_storage_copies_are_checked_against_their_listing(tmp_path):
    st = open_storage(f"memory://unlearnable-test-{secrets.token_hex(4)}")
    src = tmp_path / "job"
    (src / "checkpoints").mkdir(parents=True)
    (src / "result.json").write_text('{"a": 1}')
    (src / "checkpoints" / "epoch_001.pt").write_bytes(os.urandom(3000))
    assert not st.pull("jobs/x", tmp_path / "nothing") and not (tmp_path / "nothing").exists()
    assert st.push(src, "jobs/x") == 2
    assert st.pull("jobs/x", tmp_path / "copy")
    assert (tmp_path / "copy" / "checkpoints" / "epoch_001.pt").read_bytes() == \
        (src / "checkpoints" / "epoch_001.pt").read_bytes()
    # A file changed after its listing was written: refused, naming it.
    with st.fs.open(f"{st.root}/jobs/x/result.json", "w") as f:
        f.write('{"a": 2}')
    with pytest.raises(DataError, match="result.json: does not match its listing"):
        st.pull("jobs/x", tmp_path / "copy2")
    # A listing that names a path outside its directory is refused before anything is fetched.
    with st.fs.open(f"{st.root}/jobs/x/{ARTIFACTS}", "w") as f:
        json.dump({"files": {"../../etc/x": {"size": 1, "sha256": "0"}}}, f)
    with pytest.raises(DataError, match="outside its directory"):
        st.pull("jobs/x", tmp_path / "copy3")
    assert not (tmp_path / "etc").exists()
    st.remove("jobs/x")
    assert not st.exists("jobs/x")


def test_grid_with_artifacts_at_a_url_equals_the_local_grid(tmp_path):
    """Every job copies its inputs from the URL into a scratch directory and its outputs back:
    the same numbers, and nothing under the local --out."""
    for grid in grids():
        got = {}
        for name, kw in (("local", {}), ("url", {"artifacts": f"file://{tmp_path}/art"})):
            with ResultStore(tmp_path / f"{name}.sqlite") as store:
                s = run_grid(grid, store, tmp_path / name, progress=False, **kw)
                assert (s.failed, s.blocked) == ([], [])
                got[name] = grid_numbers(store, grid)
                assert {j["versions"]["torch_threads"] for j in store.jobs()} == {1}
        assert got["url"] == got["local"]
    assert not (tmp_path / "url").exists()
    listings = list((tmp_path / "art" / "jobs").glob(f"*/{ARTIFACTS}"))
    assert len(listings) == len(list((tmp_path / "local" / "jobs").iterdir()))
    with ResultStore(tmp_path / "url.sqlite") as store:  # results name the artifacts' URL
        runs = [j["result"]["run_dir"] for j in store.jobs() if j["kind"] == "train"]
        assert runs and all(r.startswith(f"file://{tmp_path}/art/jobs/train-") for r in runs)


def test_job_threads_are_pinned_recorded_and_restored(tmp_path):
    grid = build_grid("table2", "digits", methods=["regions"], **TINY)
    before = torch.get_num_threads()
    seen = []
    with ResultStore(tmp_path / "r.sqlite") as store:
        ctx = JobContext(tmp_path / "out", threads=3)
        run_jobs([c.spec for c in grid.cells], store, ctx, on_start=lambda *a: seen.append(torch.get_num_threads()))
        assert {j["versions"]["torch_threads"] for j in store.jobs()} == {3}
    assert torch.get_num_threads() == before and seen


def test_local_jobs_side_by_side_give_the_same_numbers(tmp_path):
    grid = build_grid("table2", "digits", methods=["regions", "random-noise"], **TINY)
    got = {}
    for workers in (1, 2):
        with ResultStore(tmp_path / f"w{workers}.sqlite") as store:
            s = run_grid(grid, store, tmp_path / f"w{workers}", progress=False, workers=workers)
            assert (len(s.ran), s.failed) == (len(grid.jobs()), [])
            got[workers] = grid_numbers(store, grid)
    assert got[2] == got[1]


def test_loopback_addresses():
    assert is_loopback(None) and is_loopback("127.0.0.1:6379") and is_loopback("localhost:1")
    assert is_loopback("ray://127.0.0.5:10001") and is_loopback("[::1]:6379")
    assert not is_loopback("auto") and not is_loopback("10.0.0.5:6379") and not is_loopback("head:6379")


# --- a real two-node cluster on loopback --------------------------------------------------------

# `ray start` as a program whose 127.0.0.1 stays 127.0.0.1: Ray on Linux replaces a loopback node
# address by the outward interface's and listens there. The head runs with Ray's single-machine
# switch; a worker node must pass Ray's "clusters only on Linux" check, so it keeps the switch
# on for that check and keeps loopback addresses as they are instead.
RAY_START = """
import sys
import ray._private.ray_constants as c
import ray._private.services as s
from ray._common.network_utils import is_localhost
c.ENABLE_RAY_CLUSTER = True
s.resolve_ip_for_localhost = lambda h: "127.0.0.1" if is_localhost(h) else h
from ray.scripts.scripts import main
sys.argv = ["ray", *sys.argv[1:]]
main()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(pids: set[str]) -> list[str]:
    out = subprocess.run(["ss", "-ltnH", "-p"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if any(f"pid={p}," in line for p in pids)]


@pytest.fixture
def ray_cluster(tmp_path):
    """A head and a worker node (one CPU each, each with its own temp directory), on 127.0.0.1,
    with a token of its own; both process groups are killed afterwards."""
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "PYTHONPATH": SRC}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory",
              str(100 << 20), "--disable-usage-stats"]
    nodes = []
    # Ray's socket paths must stay under 107 bytes: a short directory of its own per node.
    temps = [Path(tempfile.mkdtemp(prefix=f"ray{i}-", dir="/tmp")) for i in range(2)]
    try:
        for i, role in enumerate((["--head", "--port", str(port), "--include-dashboard", "false"],
                                  ["--address", f"127.0.0.1:{port}"])):
            temp = temps[i]
            log = open(tmp_path / f"node{i}.log", "w")
            nodes.append(subprocess.Popen([sys.executable, "-c", RAY_START, "start", *role, *common,
                                           "--temp-dir", str(temp)], stdout=log, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True))
            if i == 0:
                _wait_for(lambda: _connectable(port), 90, tmp_path / "node0.log", nodes[0])
        yield {"address": f"127.0.0.1:{port}", "env": env, "nodes": nodes}
    finally:
        for p in nodes:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the node's own group: its raylet, GCS and workers
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


def _connectable(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(ok, seconds: float, log: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"Ray did not start in {seconds} s:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="Ray is not importable (pip install 'unlearnable[ray]')")
def test_two_node_ray_cluster_on_loopback_gives_the_local_numbers(ray_cluster, tmp_path):
    env, address = ray_cluster["env"], ray_cluster["address"]
    # Both nodes joined (asked of the cluster itself, from a process with the cluster's token).
    ask = [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False);"
           "print(sum(n['Alive'] for n in ray.nodes()))", address]
    deadline = time.monotonic() + 90
    while (alive := subprocess.run(ask, env=env, capture_output=True, text=True, timeout=120)).stdout.strip() != "2":
        assert time.monotonic() < deadline, alive.stderr[-2000:]
        time.sleep(2)
    hosts = set()
    for grid in grids():
        with ResultStore(tmp_path / "local.sqlite") as store:
            run_grid(grid, store, tmp_path / "local", progress=False)
            local = grid_numbers(store, grid)
        # The driver is the command, in its own process (Ray's connection state stays out of
        # this one); artifacts at a URL, so no node reads another's disk.
        db = tmp_path / "ray.sqlite"
        cmd = [sys.executable, "-c", "import sys; from unlearnable.cli import main; sys.exit(main(sys.argv[1:]))", "reproduce", grid.table, "--dataset", "digits",
               "--budget", "tiny", "--subset", "120", "--methods", ",".join(grid.rows[1:]), "--executor", "ray",
               "--address", address, "--artifacts", f"file://{tmp_path}/art", "--db", str(db),
               "--out", str(tmp_path / "ray"), "--no-progress", "--device", "cpu"]
        if grid.table == "table3":
            cmd += ["--epochs", "2"]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        with ResultStore(db) as store:
            assert grid_numbers(store, grid) == local
            hosts |= {j["host"] for j in store.jobs()}
            assert {j["versions"]["torch_threads"] for j in store.jobs()} == {1}
    assert len(hosts) == 2, hosts  # jobs ran on both nodes (the host names the Ray node)
    assert not (tmp_path / "ray" / "jobs").exists()
    # Every server either node started listens on 127.0.0.1 only.
    pids = set()
    for p in ray_cluster["nodes"]:
        pids |= set(subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split())
    lines = _listening(pids)
    others = [line for line in lines if not line.split()[3].rsplit(":", 1)[0].strip("[]").endswith("127.0.0.1")]
    assert lines and not others, others
