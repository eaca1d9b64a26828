"""Parameter count and training throughput (forward + backward, images/s) of every registered model.

    .venv/bin/python benchmarks/models_throughput.py [--batch-size 128] [--steps 3] [--threads 2]
        [--device cpu] [--models resnet18 vgg16]

Each step is a train-mode forward, cross-entropy and backward on a random 3x32x32 batch (no
optimizer step: that is the same for every engine). One warm-up step, then the median over
`--steps`, per wall-clock second and per CPU second of this process. Prints a Markdown table
for docs/models.md together with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from unlearnable import MODELS, build_model


def throughput(name: str, batch_size: int, steps: int, device: torch.device,
               classes: int = 10, size: int = 32) -> tuple[int, float, float]:
    """(parameter count, median images per wall second, median images per CPU second of this
    process) of forward + backward for `name` on 3 x size x size. On a shared machine the CPU-time
    figure is the steadier one: it does not count the time other processes held the cores."""
    torch.manual_seed(0)
    model = build_model(name, classes, 3, size).to(device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, classes, (batch_size,), generator=gen).to(device)
    times, cpu_times = [], []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
    return (sum(p.numel() for p in model.parameters()), batch_size / statistics.median(times),
            batch_size / statistics.median(cpu_times))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="*", default=sorted(MODELS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"device: {device} ({where}), torch {torch.__version__}, {args.threads} thread(s), "
          f"{os.cpu_count()} cores, load average before: {load}")
    print(f"batch {args.batch_size} of 3x32x32, 10 classes, forward + backward, median of {args.steps} steps\n")
    print("| model | parameters | images/s (wall) | images/CPU-s |")
    print("|---|---:|---:|---:|")
    for name in args.models:
        params, ips, ips_cpu = throughput(name, args.batch_size, args.steps, device)
        print(f"| {name} | {params:,} | {ips:,.1f} | {ips_cpu:,.1f} |", flush=True)


if __name__ == "__main__":
    main()
