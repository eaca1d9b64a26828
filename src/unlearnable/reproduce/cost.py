"""`--dry-run`: the grid with a cost estimate from the measured throughput of this machine.

For each architecture the estimate times a few SGD steps (forward, backward, update) on random
inputs of the dataset's shape at the recipe's batch size, then extrapolates: a job's cost is its
number of training sample-passes divided by that throughput. Each job kind says its own passes
(`runner.JOBS[kind].passes`); an attack's are its registry entry's cost factor times the
training part (orthogonal projection 1.1, adversarial training PGD steps + 1). Separability
and model-free poisons are not counted (seconds); model-based poisons are marked as unestimated.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..core.device import resolve_device
from ..ladder import recipe_for
from ..models import build_model
from ..poisons import POISONS
from ..runner.jobs import Spec, get_kind, job_key, method_of
from ..train.optim import make_optimizer
from .grid import Grid


def measure_throughput(arch: str, chw: tuple[int, int, int], num_classes: int, batch_size: int,
                       device: str = "cpu", steps: int = 3) -> float:
    """Training samples per second of `arch` on inputs of shape `chw` (median of `steps` steps)."""
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    model = build_model(arch, num_classes, chw[0], chw[1:]).to(dev).train()
    opt = make_optimizer(model, "sgd", lr=0.01, momentum=0.9, weight_decay=0.0)
    x = torch.rand(batch_size, *chw, generator=g).to(dev)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(dev)
    times = []
    for i in range(steps + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return batch_size / sorted(times)[len(times) // 2]


def passes(spec: Spec, n_train: int, n_test: int) -> float:
    """Training sample-passes of one job (its kind's own cost model)."""
    data = spec.get("data") or (spec.get("run") or {}).get("data") or {}
    n = min(n_train, data["subset"]) if data.get("subset") else n_train
    n = min(n, data["_subset"]) if data.get("_subset") else n
    return get_kind(spec["kind"]).passes(spec, n, n_test)


def estimate(grid: Grid, chw: tuple[int, int, int], num_classes: int, n_train: int, n_test: int,
             done: set[str], device: str = "cpu") -> dict[str, Any]:
    """Cells, jobs, epochs and device-hours of the grid's remaining jobs (`done`: finished keys)."""
    bs = recipe_for(grid.level).batch_size
    tput = {a: measure_throughput(a, chw, num_classes, bs, device) for a in grid.archs}
    jobs = []
    total_s = 0.0
    epochs = 0
    for spec in grid.jobs():
        key = job_key(spec)
        arch = spec.get("arch") or spec.get("run", {}).get("arch")
        p = passes(spec, n_train, n_test)
        secs = p / tput[arch] if arch else 0.0
        ep = spec.get("recipe", {}).get("epochs", 0) if spec["kind"] in ("train", "attack") else 0
        method = method_of(spec)
        note = ""
        if spec["kind"] == "poison" and POISONS[method].model_based:
            note = "model-based poison: not estimated"
        if key not in done:
            total_s += secs
            epochs += ep
        jobs.append({"key": key[:12], "kind": spec["kind"], "method": method, "arch": arch or "",
                     "detail": spec.get("attack") or spec.get("of") or "", "epochs": ep,
                     "est_seconds": round(secs, 1), "done": key in done, "note": note})
    return {"cells": len(grid.cells), "jobs": len(jobs), "jobs_done": sum(j["done"] for j in jobs),
            "epochs_remaining": epochs, "device_hours_remaining": total_s / 3600,
            "throughput_samples_per_s": {a: round(v, 1) for a, v in tput.items()}, "batch_size": bs,
            "device": device, "job_list": jobs}


def format_estimate(grid: Grid, est: dict[str, Any]) -> str:
    """The dry run's printout: one line per job with its estimated seconds, then the total."""
    lines = [f"{grid.table} on {grid.dataset}: {est['cells']} cells, {est['jobs']} jobs "
             f"({est['jobs_done']} already done), rows {', '.join(grid.rows)}; columns {', '.join(grid.cols)}",
             f"{'key':<12}  {'kind':<12} {'method':<14} {'arch':<10} {'detail':<14} {'epochs':>6} {'est':>9}  status"]
    for j in est["job_list"]:
        lines.append(f"{j['key']:<12}  {j['kind']:<12} {j['method']:<14} {j['arch']:<10} {j['detail']:<14} "
                     f"{j['epochs']:>6} {j['est_seconds']:>8.0f}s  {'done' if j['done'] else 'to run'}"
                     + (f"  ({j['note']})" if j["note"] else ""))
    tp = ", ".join(f"{a} {v:g} samples/s" for a, v in est["throughput_samples_per_s"].items())
    lines.append(f"remaining: {est['epochs_remaining']} training epochs, about "
                 f"{est['device_hours_remaining']:.2f} device-hours on {est['device']} "
                 f"(measured here: {tp} at batch {est['batch_size']}; one device, jobs in sequence)")
    return "\n".join(lines)
