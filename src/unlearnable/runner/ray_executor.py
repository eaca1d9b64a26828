"""The Ray executor: each job a Ray task, on a local instance or a cluster.

Each job is a `ray.remote` task (`num_gpus=1` when CUDA is used, else `num_cpus` = the job's
pinned threads); a dependent job gets its dependencies' object refs as arguments, so Ray starts
it only after they finished, and the driver records results as they arrive (`ray.wait`).
Workers find their inputs and put their outputs through the job storage: a directory every
node mounts, or a URL (`storage.py`); a worker that finds no copy of a dependency's files
remakes them from the spec, which is deterministic.

Loopback: a local instance (no address), or a cluster at a loopback address, keeps every Ray
server on 127.0.0.1. Ray on Linux otherwise replaces 127.0.0.1 by the address of the machine's
outward interface (`resolve_ip_for_localhost`) and its servers listen there; while it starts
or connects, the driver tells Ray it is a single-machine cluster (`ENABLE_RAY_CLUSTER`, the
switch Ray reads for macOS and Windows), which makes Ray's own node address 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core.errors import UnlearnableError
from .execute import execute_elsewhere, portable
from .jobs import JobContext, job_key
from .scheduler import Scheduler, record

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def is_loopback(address: str | None) -> bool:
    """Whether a Ray address (None: a new local instance; HOST:PORT; ray://HOST:PORT) is on this
    machine's loopback interface."""
    if address is None:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "auto", a host name: Ray's own choice stands


@contextlib.contextmanager
def loopback_ray() -> Iterator[None]:
    """While Ray starts or connects: its node address is 127.0.0.1, and the processes it starts
    now (servers, agents, the workers they spawn) inherit the same setting."""
    from ray._private import ray_constants

    saved_env = {k: os.environ.get(k) for k in LOOPBACK_ENV}
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def init_ray(address: str | None, ray_init: dict[str, Any]) -> None:
    """Start (or connect to) Ray for this driver: workers find this package, a local instance keeps its
    servers on 127.0.0.1."""
    import ray

    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
    if address:
        kw["address"] = address
    else:
        kw["num_cpus"] = max(1, min(os.cpu_count() or 1, 2))
        kw["_node_ip_address"] = "127.0.0.1"
    # Workers import the package the driver runs; make sure they find it on every node.
    src = str(Path(__file__).resolve().parents[2])
    kw.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}})
    kw.update(ray_init)
    if address is not None and "include_dashboard" not in ray_init:
        kw.pop("include_dashboard")  # only a new instance has one to leave out
    with loopback_ray() if is_loopback(address) else contextlib.nullcontext():
        ray.init(**kw)


def run_ray(sched: Scheduler, ctx: JobContext, address: str | None,
            on_done: Callable[[str, dict[str, Any]], None] | None, ray_init: dict[str, Any]) -> None:
    """Run the scheduler's jobs as Ray tasks, dependents after their dependencies, recording each
    outcome as it arrives."""
    try:
        import ray
    except ImportError:
        raise UnlearnableError("the ray executor needs Ray: pip install 'unlearnable[ray]'") from None
    if not sched.pending:
        return
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(address, ray_init)
    try:
        # Asked of the cluster, not of this driver (which may have no GPU): "cuda..." asks for one;
        # "auto" does where the driver itself sees CUDA.
        use_gpu = ctx.device.startswith("cuda") or (ctx.device == "auto" and ctx.torch_device.type == "cuda")
        # One task per CPU it pins: Ray packs tasks by num_cpus, and more threads would oversubscribe.
        threads = ctx.threads or 1
        opts = {"num_gpus": 1} if use_gpu else {"num_cpus": threads}
        remote = ray.remote(**opts)(_ray_job)
        where = {**portable(ctx), "threads": threads}
        mine: dict[str, Any] = {}  # key -> ref of a job submitted here and not yet recorded
        pending: dict[Any, str] = {}
        while sched.pending or pending:
            for spec, deps in sched.ready(mine):  # dependencies first, so their refs exist for dependents
                key = job_key(spec)
                args = [v if dk in mine else {"ok": True, "key": dk, "result": v} for dk, v in deps.items()]
                mine[key] = remote.remote(spec, where, *args)
                pending[mine[key]] = key
            wait_s = sched.idle(sched.progressed) if sched.pending else None
            if not pending:
                time.sleep(wait_s or 0.0)
                continue
            done, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            for ref in done:
                key = pending.pop(ref)
                out = ray.get(ref)
                record(sched.store, key, out, sched.summary)
                mine.pop(key, None)
                if on_done is not None:
                    on_done(key, out)
    finally:
        if started_here:
            ray.shutdown()


def _ray_job(spec: dict[str, Any], where: dict[str, Any], *deps: dict[str, Any]) -> dict[str, Any]:
    """A job in a Ray worker; its host names the node too (containers may share a host name)."""
    import ray

    out = execute_elsewhere(spec, where, *deps)
    out["host"] = f"{out['host']} (ray node {ray.get_runtime_context().get_node_id()[:8]})"
    return out
