"""Device check: every figure the GPU targets ask for, in one run, with a time limit per section.

    python benchmarks/device_check.py --device cuda --out runs/device-check      # at most 7.3 min (the limits)
    python benchmarks/device_check.py --device cpu --smoke                       # CI: tiny sizes, every code path

Sections (each with its own limit; one that fails or runs out of time is reported and the next
one runs): the engine vs the released-style per-sample DataLoader (ResNet-18, CIFAR-shaped
50,000 x 3x32x32 random images, target >= 5x); a 40-epoch ResNet-18 run's wall time (target
<= 60 s, extrapolated from timed epochs); the projection of 50,000 x 3,072 (ours vs the
released per-direction loop, time and peak memory); one round of class-wise and sample-wise EM,
one TAP block and one NTGA block with ResNet-18; one Table-3 cell (standard training,
ortho-proj, adv-train for a few epochs) and the attacks' cost factors; a quick audit of a
CIFAR-shaped synthetic protected set; bf16 autocast against float32 accuracy.

Writes OUT/summary.json (device, versions, each section's status, seconds, figures, and for a
failure its error and a short traceback) and OUT/summary.md, prints one line per section, and
exits 1 when a section failed or timed out. `--smoke` runs every code path at tiny sizes; the
figures are then meaningless, only that each section ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling benchmark scripts


class SectionTimeout(BaseException):
    """Not an Exception: library code that records a failed job and goes on must not catch it."""


@dataclass
class Config:
    device: torch.device
    smoke: bool
    out: Path
    arch: str = "resnet18"

    def n(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class Section:
    name: str
    title: str
    fn: Callable[[Config, dict[str, Any]], str]  # fills figures, returns the one-line figure
    limit_s: float  # seconds on the device
    # With --smoke (CPU, tiny sizes): a few seconds each on an idle 2-core machine; the limit
    # leaves room for a CI machine shared by other jobs (measured 10-60 s each at load 40).
    smoke_limit_s: float = 180.0

SECTIONS: list[Section] = []


def section(name: str, title: str, limit_s: float):
    def deco(fn):
        SECTIONS.append(Section(name, title, fn, limit_s))
        return fn
    return deco


# --- data -----------------------------------------------------------------------------------------

def synthetic_cifar(n: int, seed: int = 0, classes: int = 10):
    """n CIFAR-shaped uint8 images whose class shows in a smooth colour pattern under noise: a
    model can learn it, so accuracies mean something; random pixels would not."""
    from unlearnable.data import ImageSet

    rng = np.random.default_rng(seed)
    protos = rng.uniform(40, 215, size=(classes, 4, 4, 3))
    protos = protos.repeat(8, 1).repeat(8, 2)  # 32 x 32, blocky class patterns
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = protos[labels] + rng.normal(0, 40, size=(n, 32, 32, 3))
    return ImageSet(images.clip(0, 255).astype(np.uint8), labels.astype(np.int64),
                    [f"c{i}" for i in range(classes)], "synthetic-cifar")


def register_synthetic(n_train: int, n_test: int) -> str:
    """A dataset name the audit can resolve (base of a protected set, clean test split)."""
    from unlearnable.data.sources import Source, register_dataset

    register_dataset(Source("synthetic-cifar", lambda root, split: synthetic_cifar(
        n_train if split == "train" else n_test, 0 if split == "train" else 1), "", (),
        how_to_get="made by benchmarks/device_check.py", shape_chw=(3, 32, 32), embedded=True))
    return "synthetic-cifar"


def random_cifar(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def model(cfg: Config, arch: str | None = None, channels: int = 3, size: int = 32):
    from unlearnable.models import build_model

    torch.manual_seed(0)
    return build_model(arch or cfg.arch, 10, channels, (size, size))


# --- sections -------------------------------------------------------------------------------------

@section("engine_vs_dataloader", "engine vs per-sample DataLoader, ResNet-18, CIFAR-shaped", 55)
def engine_vs_dataloader(cfg: Config, fig: dict[str, Any]) -> str:
    import engine_vs_dataloader as evd

    n = cfg.n(50_000, 256)
    images, labels = random_cifar(n)
    batch = cfg.n(128, 32)
    steps_engine, steps_dl = cfg.n(200, 4), cfg.n(60, 3)
    workers = 0 if cfg.smoke else min(8, os.cpu_count() or 1)
    x, y = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
    evd.engine_train(model(cfg), x, y, 2, batch, cfg.device, 0)  # warm-up: kernels, allocator, cuDNN
    evd.conventional_train(model(cfg), images, labels, 2, batch, 0, cfg.device, False, 4, 0)
    t_e = evd.engine_train(model(cfg), x, y, steps_engine, batch, cfg.device, 0)
    t_d = evd.conventional_train(model(cfg), images, labels, steps_dl, batch, workers, cfg.device, False, 4, 0)
    fig.update(engine_images_per_s=steps_engine * batch / t_e, dataloader_images_per_s=steps_dl * batch / t_d,
               dataloader_workers=workers, batch_size=batch, n=n)
    fig["ratio"] = fig["engine_images_per_s"] / fig["dataloader_images_per_s"]
    return (f"engine {fig['engine_images_per_s']:,.0f} img/s vs DataLoader (pil, {workers} workers) "
            f"{fig['dataloader_images_per_s']:,.0f} img/s: {fig['ratio']:.2f}x (target >= 5x)")


@section("train_40_epochs", "40-epoch ResNet-18 run, CIFAR-shaped 50,000 (extrapolated)", 60)
def train_40_epochs(cfg: Config, fig: dict[str, Any]) -> str:
    from unlearnable.train import RECIPES, fit

    n, timed = cfg.n(50_000, 128), cfg.n(3, 2)
    images, labels = random_cifar(n)
    x, y = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
    res = fit(model(cfg), (x, y), None, RECIPES["paper"], seed=0, device=cfg.device, progress=False,
              stop_after_epoch=timed)
    cfg.sync()
    ends = [h["elapsed"] for h in res.history]
    per_epoch = [b - a for a, b in zip([0.0, *ends], ends)]
    steady = float(np.mean(per_epoch[1:])) if len(per_epoch) > 1 else per_epoch[0]
    fig.update(n=n, epochs_timed=len(per_epoch), epoch_seconds=per_epoch,
               estimated_40_epoch_seconds=per_epoch[0] + 39 * steady)
    return (f"epochs {', '.join(f'{s:.1f}' for s in per_epoch)} s -> 40 epochs ~ "
            f"{fig['estimated_40_epoch_seconds']:.0f} s (target <= 60 s)")


@section("projection", "orthogonal projection of 50,000 x 3,072: ours vs the released loop", 40)
def projection(cfg: Config, fig: dict[str, Any]) -> str:
    import tracemalloc

    import projection as pj

    from unlearnable.attacks.ortho_proj import project, projection_basis

    n, d, k = cfg.n(50_000, 500), 3072, 10
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, d), dtype=np.uint8)
    w = rng.standard_normal((k, d))
    tracemalloc.start()  # numpy reports its allocations to tracemalloc: the released way's peak
    t = time.perf_counter()
    pj.released_way(x, w)
    fig["released_seconds"] = time.perf_counter() - t
    fig["released_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    xd = torch.from_numpy(x).to(cfg.device)
    q, _ = projection_basis(torch.from_numpy(w))
    if cfg.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(cfg.device)
        base = torch.cuda.memory_allocated(cfg.device)
    t = time.perf_counter()
    project(xd, q)
    cfg.sync()
    fig["ours_seconds"] = time.perf_counter() - t
    if cfg.device.type == "cuda":
        fig["ours_peak_mib"] = (torch.cuda.max_memory_allocated(cfg.device) - base) / 2**20
    peak = f", peak +{fig['ours_peak_mib']:.0f} MiB" if "ours_peak_mib" in fig else ""
    fig["speedup"] = fig["released_seconds"] / fig["ours_seconds"]
    return (f"released {fig['released_seconds']:.2f} s, peak {fig['released_peak_mib']:.0f} MiB | ours "
            f"{fig['ours_seconds']:.3f} s on {cfg.device.type}{peak} | {fig['speedup']:.1f}x")


def _poison_unit(cfg: Config, fig: dict[str, Any], method: str, params: dict[str, str], n: int,
                 level: str, stop_after: int | None) -> float:
    from unlearnable.poisons import PoisonContext, make_poison
    from unlearnable.poisons.crafting import Interrupted

    base = synthetic_cifar(n)
    with tempfile.TemporaryDirectory(dir=cfg.out) as work:
        ctx = PoisonContext(seed=0, device=str(cfg.device), progress=False, level=level,
                            work_dir=Path(work), stop_after=stop_after)
        if cfg.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(cfg.device)
        t = time.perf_counter()
        try:
            make_poison(method, base, params, seed=0, ctx=ctx)
        except Interrupted:
            pass  # stopped after the units asked for, as a kill would
        cfg.sync()
        sec = time.perf_counter() - t
    fig.update(n=n, level=level, seconds=sec, params=params)
    if cfg.device.type == "cuda":
        fig["cuda_peak_mib"] = torch.cuda.max_memory_allocated(cfg.device) / 2**20
    return sec


@section("em_classwise", "one round of class-wise EM, ResNet-18", 30)
def em_classwise(cfg: Config, fig: dict[str, Any]) -> str:
    n = cfg.n(5_000, 64)
    sec = _poison_unit(cfg, fig, "em", {"mode": "class", "arch": cfg.arch, "max_rounds": "1"}, n,
                       "tiny" if cfg.smoke else "paper", None)
    return f"one round (10 SGD steps + 20 PGD steps over {n:,} images): {sec:.1f} s"


@section("em_samplewise", "one round of sample-wise EM, ResNet-18", 35)
def em_samplewise(cfg: Config, fig: dict[str, Any]) -> str:
    n = cfg.n(5_000, 64)
    sec = _poison_unit(cfg, fig, "em", {"mode": "sample", "arch": cfg.arch, "max_rounds": "1"}, n,
                       "tiny" if cfg.smoke else "paper", None)
    return f"one round over {n:,} images: {sec:.1f} s ({n / sec:,.0f} images/s)"


@section("tap_block", "one TAP block (crafting model 1 epoch + one PGD batch), ResNet-18", 25)
def tap_block(cfg: Config, fig: dict[str, Any]) -> str:
    n = cfg.n(10_000, 64)
    sec = _poison_unit(cfg, fig, "tap", {"arch": cfg.arch, "epochs": "1"}, n, "tiny" if cfg.smoke else "quick", 1)
    return f"1 crafting epoch on {n:,} + 1 block of 256 x 20 PGD steps: {sec:.1f} s"


@section("ntga_block", "one NTGA block (512 images against a 2,048-image target)", 25)
def ntga_block(cfg: Config, fig: dict[str, Any]) -> str:
    n = cfg.n(4096, 128)
    sec = _poison_unit(cfg, fig, "ntga", {}, n, "tiny" if cfg.smoke else "quick", 1)
    return f"one block: {sec:.1f} s"


@section("table3_cell", "one Table-3 cell: standard, ortho-proj, adv-train, ResNet-18", 80)
def table3_cell(cfg: Config, fig: dict[str, Any]) -> str:
    from unlearnable.attacks import AttackContext
    from unlearnable.kinds import run_attack
    from unlearnable.poisons import PoisonContext, make_poison
    from unlearnable.train import RECIPES

    n, epochs = cfg.n(20_000, 64), cfg.n(2, 1)
    clean, test = synthetic_cifar(n), synthetic_cifar(cfg.n(2_000, 64), seed=1)
    train = make_poison("random-noise", clean, {}, seed=0, ctx=PoisonContext(seed=0))
    recipe = RECIPES["paper"].replace(epochs=epochs)
    seconds = {}
    for attack in ("none", "ortho-proj", "adv-train"):
        actx = AttackContext(train, test, cfg.arch, recipe, 0, cfg.out / "table3" / attack, str(cfg.device),
                             False, clean, "random-noise")
        t = time.perf_counter()
        r = run_attack(attack, actx, {}, reuse=False)
        cfg.sync()
        seconds[attack] = time.perf_counter() - t
        fig[f"{attack}_test_accuracy"] = r["test_accuracy"]
    fig.update(n=n, epochs=epochs, seconds=seconds,
               cost_factor={a: seconds[a] / seconds["none"] for a in ("ortho-proj", "adv-train")})
    return (f"{epochs} epochs on {n:,}: standard {seconds['none']:.1f} s, ortho-proj "
            f"{fig['cost_factor']['ortho-proj']:.2f}x, adv-train {fig['cost_factor']['adv-train']:.2f}x")


@section("audit", "quick audit of a CIFAR-shaped synthetic protected set", 60)
def audit(cfg: Config, fig: dict[str, Any]) -> str:
    from unlearnable.auditor.pipeline import AuditConfig, run_audit
    from unlearnable.poisons import poison_dataset

    n = cfg.n(5_000, 200)
    name = register_synthetic(n, cfg.n(1_000, 100))
    data = poison_dataset("regions", name, cfg.out / "audit-data", seed=0, overwrite=True)
    t = time.perf_counter()
    # Smoke: one attack (the audit's other steps all run); on the device, the level's attacks.
    acfg = AuditConfig(arch=cfg.arch, level="tiny", epochs=cfg.n(2, 1), device=str(cfg.device),
                       attacks=("ortho-proj",) if cfg.smoke else None)
    rec = run_audit(data, cfg.out / "audit", acfg,
                    progress=False, cache=cfg.out / "audit-cache", restart=True)
    fig["seconds"] = time.perf_counter() - t
    steps = rec.get("steps", {})
    fig["steps"] = {k: (v.get("status") if isinstance(v, dict) else v) for k, v in steps.items()}
    fig["failed_steps"] = rec.get("failed_steps", {})
    if fig["failed_steps"]:
        raise RuntimeError(f"audit steps failed: {fig['failed_steps']}")
    return f"{len(steps)} steps on {n:,} images in {fig['seconds']:.1f} s"


@section("autocast", "bf16 autocast vs float32: ConvNet on digits, same seed", 30)
def autocast(cfg: Config, fig: dict[str, Any]) -> str:
    from unlearnable.data import load_data
    from unlearnable.train import RECIPES
    from unlearnable.train import loop as engine
    from unlearnable.train.run import as_tensors

    if cfg.device.type == "cpu" and not hasattr(torch.backends, "mkldnn"):
        raise RuntimeError("no bf16 autocast on this CPU build")
    train, test = load_data("digits", "train"), load_data("digits", "test")
    recipe = RECIPES["tiny"].replace(epochs=cfg.n(8, 2), flip=False, crop_padding=0)
    acc = {}
    saved = dict(engine.AUTOCAST)
    try:
        for name, table in (("float32", {}), ("bf16", {cfg.device.type: torch.bfloat16})):
            engine.AUTOCAST.clear()
            engine.AUTOCAST.update(table)
            res = engine.fit(model(cfg, "convnet", 1, 8), as_tensors(train), as_tensors(test), recipe, seed=0,
                             device=cfg.device, progress=False)
            acc[name] = res.test_accuracy
    finally:
        engine.AUTOCAST.clear()
        engine.AUTOCAST.update(saved)
    fig.update(test_accuracy=acc, difference_points=100 * (acc["bf16"] - acc["float32"]))
    return f"test accuracy float32 {100 * acc['float32']:.2f}%, bf16 {100 * acc['bf16']:.2f}%"


# --- running --------------------------------------------------------------------------------------

def device_info(dev: torch.device) -> dict[str, Any]:
    info = {"device": str(dev), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "python": platform.python_version(), "host": socket.gethostname(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                    bf16=torch.cuda.is_bf16_supported())
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def _alarm(signum, frame):
    raise SectionTimeout()


def run_section(sec: Section, cfg: Config, limit: float) -> dict[str, Any]:
    """Run one section under a hard time limit (SIGALRM); never raises."""
    fig: dict[str, Any] = {}
    rec: dict[str, Any] = {"name": sec.name, "title": sec.title, "limit_s": limit, "figures": fig}
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    t = time.perf_counter()
    try:
        rec["figure"] = sec.fn(cfg, fig)
        rec["status"] = "ok"
    except SectionTimeout:
        rec.update(status="timeout", error=f"ran past its {limit:.0f} s limit")
    except Exception as e:  # noqa: BLE001 - a failed section is reported; the others still run
        rec.update(status="failed", error=f"{type(e).__name__}: {e}"[:500],
                   traceback="".join(traceback.format_exc().splitlines(True)[-12:]))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    rec["seconds"] = round(time.perf_counter() - t, 2)
    return rec


def markdown(summary: dict[str, Any]) -> str:
    d = summary["device"]
    lines = [f"# Device check: {d.get('name')} ({d['device']})", "",
             f"torch {d['torch']}, CUDA {d['cuda']}, cuDNN {d['cudnn']}, Python {d['python']}, "
             f"{d['cpu_count']} CPU cores; {'smoke run (tiny sizes)' if summary['smoke'] else 'full sizes'}; "
             f"started {summary['started']}, {summary['seconds']:.0f} s in all.", "",
             "| section | status | seconds | figure |", "|---|---|---:|---|"]
    for r in summary["sections"]:
        lines.append(f"| {r['name']} | {r['status']} | {r['seconds']:.1f} | "
                     f"{(r.get('figure') or r.get('error', '')).replace('|', '/')} |")
    for r in summary["sections"]:
        if r.get("traceback"):
            lines += ["", f"## {r['name']}: {r['error']}", "", "```", r["traceback"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: every code path, no meaningful figure")
    ap.add_argument("--out", default=None, help="output directory (default runs/device-check-DEVICE-TIME)")
    ap.add_argument("--only", default=None, help="comma-separated sections to run (default: all)")
    ap.add_argument("--arch", default=None,
                    help="model of the training and crafting sections (default resnet18; convnet with --smoke)")
    args = ap.parse_args(argv)

    from unlearnable.core.errors import UnlearnableError
    from unlearnable.core.device import resolve_device

    try:
        dev = resolve_device(args.device)
    except UnlearnableError as e:
        print(f"device_check: {e}", file=sys.stderr)
        return 2
    names = [s.name for s in SECTIONS]
    only = names if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in names]
    if unknown:
        print(f"device_check: unknown sections {unknown} (known: {', '.join(names)})", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/device-check-{dev.type}-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config(dev, args.smoke, out, args.arch or ("convnet" if args.smoke else "resnet18"))
    summary: dict[str, Any] = {"device": device_info(dev), "smoke": args.smoke, "argv": sys.argv[1:] if argv is None
                               else argv, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "sections": []}
    print(f"device check on {summary['device'].get('name')} ({dev}), torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}{' [smoke]' if args.smoke else ''}", flush=True)
    t0 = time.perf_counter()
    for sec in SECTIONS:
        if sec.name not in only:
            continue
        rec = run_section(sec, cfg, sec.smoke_limit_s if args.smoke else sec.limit_s)
        summary["sections"].append(rec)
        print(f"[{rec['status']}] {sec.name} ({rec['seconds']:.1f} s): {rec.get('figure') or rec['error']}", flush=True)
    summary["seconds"] = time.perf_counter() - t0
    summary["failed"] = [r["name"] for r in summary["sections"] if r["status"] != "ok"]
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(markdown(summary))
    print(f"{len(summary['sections'])} sections, {len(summary['failed'])} failed"
          f"{': ' + ', '.join(summary['failed']) if summary['failed'] else ''}; {summary['seconds']:.0f} s "
          f"-> {out / 'summary.json'}, {out / 'summary.md'}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
