"""Running one job anywhere: pinned threads, a scratch directory when artifacts live at a URL,
and the outcome packaged for the driver (which alone records it).

    out = execute(spec, ctx, deps)                     # {"ok", "result" | "error", "seconds", "host", ...}
    out = execute_elsewhere(spec, portable(ctx), *deps)   # in a Ray worker or a pool process
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UnlearnableError
from ..core.hashing import sha256_tree
from ..core.lock import LOCK_NAME
from ..core.malloc import tune_malloc
from ..core.provenance import versions
from .jobs import JobContext, Spec, dependencies, job_key, run_job
from .scheduler import rel_dir
from .storage import open_storage, relocate, staged


def execute(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    """Run one job and package the outcome; never raises (the driver records failures). The job
    runs with `ctx.threads` threads (recorded in `versions`), in a scratch directory filled from
    and copied back to `ctx.storage` when that is a URL."""
    t0 = time.perf_counter()
    host = socket.gethostname()
    try:
        files = None  # at a URL, the storage's listing seals the files
        with pinned_threads(ctx.threads) as threads:
            if ctx.storage is not None and ctx.storage.remote:
                result = run_staged(spec, ctx, deps)
            else:
                result = run_job(spec, ctx, deps)
                files = own_files(ctx.dir_of(spec))
        return {"ok": True, "result": result, "seconds": time.perf_counter() - t0, "host": host,
                "versions": {**versions(), "torch_threads": threads, **instruction_set()}, "files": files}
    except Exception as e:  # noqa: BLE001 - any failure of a cell is recorded, not fatal to the grid
        # `exception` stays in this process (the driver may raise it again); the rest is recorded.
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0, "host": host, "exception": e}


def own_files(job_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The seal of a finished job's files (relative path -> sha256): everything in its directory
    but a result store and the locks that may live there too (an attack run's OUT is the job's
    directory and holds OUT/jobs.sqlite, which changes as the store is written)."""
    def store_or_lock(rel: str) -> bool:
        parts = rel.split("/")
        return ".sqlite" in parts[-1] or parts[-1] == LOCK_NAME or any(p.endswith(".drivers") for p in parts[:-1])
    return {rel: d for rel, d in sha256_tree(job_dir).items() if not store_or_lock(rel)}


def instruction_set() -> dict[str, str]:
    """What the CPU's vector width makes of a job's floating-point sums, beside its threads: the
    instruction set torch's kernels use, and MKL's when `MKL_CBWR` pins it (read at process start).
    The same job on an AVX2 and an AVX-512 machine can differ in its last digits (docs/reproduce.md)."""
    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if os.environ.get("MKL_CBWR"):
        out["mkl_cbwr"] = os.environ["MKL_CBWR"]
    return out


def run_staged(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    """`run_job` in a scratch directory holding the job's own and its dependencies' artifacts."""
    if ctx.place is not None:
        raise UnlearnableError("artifacts at a URL need the default job layout (no `place`)")
    own = rel_dir(spec)
    with staged(ctx.storage, [own, *(rel_dir(d) for d in dependencies(spec))], own) as scratch:
        result = run_job(spec, dataclasses.replace(ctx, out_root=scratch, cache={}), deps)
        return relocate(result, str(scratch), ctx.storage.url)


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Run with `threads` torch intra-op threads and BLAS/OpenMP threads (None: as they are);
    yields the torch thread count in effect. The previous settings come back afterwards."""
    before = torch.get_num_threads()
    if threads is None:
        yield before
        return
    try:
        from threadpoolctl import threadpool_limits
        limits: Any = threadpool_limits(limits=threads)
    except ImportError:  # scikit-learn brings it; without it only torch is pinned
        limits = contextlib.nullcontext()
    torch.set_num_threads(threads)
    try:
        with limits:
            yield threads
    finally:
        torch.set_num_threads(before)


def portable(ctx: JobContext) -> dict[str, Any]:
    """What another process needs to rebuild `ctx` (a Ray task, a pool worker): plain values."""
    if ctx.place is not None:
        raise UnlearnableError("jobs with their own layout (`place`) run only in this process")
    return {"root": str(ctx.out_root), "storage": ctx.storage.url if ctx.storage is not None else None,
            "device": ctx.device, "data_root": ctx.data_root, "threads": ctx.threads}


def from_portable(d: dict[str, Any]) -> JobContext:
    """The JobContext `portable` described, rebuilt in another process."""
    storage = open_storage(d["storage"]) if d.get("storage") else None
    return JobContext(Path(d["root"]), d["device"], False, d["data_root"], storage=storage,
                      threads=d["threads"])


def execute_elsewhere(spec: Spec, where: dict[str, Any], *deps: dict[str, Any]) -> dict[str, Any]:
    """A job in another process (a Ray worker, a pool worker). `deps` are the dependencies'
    outcomes, each with its key; a failed one fails this job without running it."""
    tune_malloc()  # a worker process is a fresh one: the command's allocator settings
    bad = [d for d in deps if not d.get("ok")]
    if bad:
        return {"ok": False, "error": f"a dependency failed: {bad[0]['error']}", "traceback": "",
                "seconds": 0.0, "host": socket.gethostname(), "key": job_key(spec)}
    out = execute(spec, from_portable(where), {d["key"]: d["result"] for d in deps})
    out.pop("exception", None)  # it travels back as text only
    out["key"] = job_key(spec)
    return out
