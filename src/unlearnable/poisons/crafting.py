"""What the model-based poisons share: the crafting model, level-scaled parameters, resumable
state, seeded per-unit generators, progress and peak-memory reporting.

A model-based generator works in *units* (a round of EM, a batch of TAP, a block of NTGA, ...).
Every random draw of unit u comes from `unit_generator(seed, stream, u)`, so a run resumed after
unit u replays units u+1.. exactly as an uninterrupted run would, provided the state saved after
unit u (crafting model, optimizer, perturbation so far, counters) is restored. `Resumable`
saves that state to `ctx.work_dir/state.pt` atomically, at most every `ctx.save_every` seconds
and whenever asked to, and refuses state made with other settings or data.

Level-scaled parameters: a field left at `None` takes its value from the method's level table
for `ctx.level` (a rung of `unlearnable.ladder.LEVELS`: "paper" = the original's cost, "quick" =
a CPU-sized run, "tiny" = seconds, for tests); `resolve` returns the effective values, which the
manifest records next to the level.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.device import resolve_device
from ..core.errors import UnlearnableError
from ..core.hashing import sha256_array
from ..core.params import to_dict
from ..core.progress import bar
from ..data.imageset import ImageSet
from ..ladder import PerLevel, check_level
from ..models import Classifier, build_model
from ..train.checkpoint import load_state, save_state
from ..train.loop import eval_batch
from ..train.optim import make_optimizer
from .base import PoisonContext, get_poison

STATE_FILE = "state.pt"
log = logging.getLogger(__name__)


class Interrupted(UnlearnableError):
    """Raised after `ctx.stop_after` units, once the state is saved (simulates a killed run)."""


def default_arch(device: torch.device | str) -> str:
    """ResNet-18 (the papers' crafting model) on CUDA, the small ConvNet on CPU."""
    return "resnet18" if torch.device(device).type == "cuda" else "convnet"


def device_of(ctx: PoisonContext) -> torch.device:
    """The crafting device: the context's, resolved once (`core.device.resolve_device`)."""
    return resolve_device(ctx.device)


def _derive(seed: int, keys: tuple[int, ...]) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0] >> 1)


def unit_generator(seed: int, *keys: int) -> torch.Generator:
    """CPU generator of (seed, *keys), e.g. (seed, stream, unit): independent of all others."""
    return torch.Generator().manual_seed(_derive(seed, keys))


def seed_global(seed: int, *keys: int) -> None:
    """Seed torch's global generator per unit: in-model randomness (dropout) then replays on resume."""
    torch.manual_seed(_derive(seed, (*keys, 1 << 20)))


def crafting_model(base: ImageSet, arch: str, device: torch.device, seed: int) -> Classifier:
    """A freshly initialized `arch` for base's shape and classes, weights seeded by `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, base.num_classes, base.channels, base.image_size)
    return model.to(device)


def sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
        decay_all: bool = False) -> torch.optim.Optimizer:
    """SGD as the training engine sets it up (no weight decay on BatchNorm and biases), or, with
    `decay_all`, weight decay on every parameter (as EM's original code builds it)."""
    return make_optimizer(model, "sgd", lr, momentum, weight_decay, decay_all=decay_all)


def resolve(params: Any, table: PerLevel[Mapping[str, Any]], level: str) -> dict[str, Any]:
    """Effective parameter values: every `None` field filled from `table[level]`, the method's row
    of the ladder's table (`PoisonInfo.fills`; registration checks that each level names every
    None-defaulted field, so no effective value is left None)."""
    check_level(level)
    eff = to_dict(params)
    for k, v in table[level].items():
        if eff.get(k) is None:
            eff[k] = v
    return eff


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak memory of this process so far: resident set (ru_maxrss) and, on CUDA, allocated."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mb = rss / (1 << 20) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux
    out: dict[str, Any] = {"process_max_rss_mib": round(mb, 1)}
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / (1 << 20), 1)
    return out


def progress_bar(ctx: PoisonContext, total: int | None, desc: str, initial: int = 0):
    """The crafting loop's bar, shown as the context's `progress` says (`core.progress`)."""
    return bar(total=total, initial=initial, desc=desc, progress=ctx.progress)


def fingerprint(method: str, params: Any, ctx: PoisonContext, base: ImageSet,
                extra: dict[str, Any] | None = None) -> str:
    """What a saved state must match to be resumed: method, parameters, seed, level, data (the
    data by content). Compared for equality only, so it is the readable JSON text itself, which
    also takes parameters no job key may hold (NTGA's t=inf)."""
    p = to_dict(params) if dataclasses.is_dataclass(params) else params
    return json.dumps({"method": method, "params": p, "seed": ctx.seed, "level": ctx.level,
                       "images": sha256_array(base.images), "labels": sha256_array(base.labels),
                       **(extra or {})}, sort_keys=True, default=str)


class Resumable:
    """The resumable state of one generator run in `ctx.work_dir` (nothing saved without one).

    `load()` returns the saved state (tensors on CPU) or None; `step(unit, state_fn)` is called
    after each finished unit (1-based count of finished units): it saves `state_fn()` when
    `ctx.save_every` seconds have passed since the last save, or always when `force`, and raises
    `Interrupted` once `ctx.stop_after` units are done (after saving).
    """

    def __init__(self, ctx: PoisonContext, fp: str):
        self.ctx = ctx
        self.fp = fp
        self.path = Path(ctx.work_dir) / STATE_FILE if ctx.work_dir is not None else None
        self.last_save = time.monotonic()
        self.saves = 0

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None without one; state of other settings or data is refused."""
        if self.path is None or not os.path.lexists(self.path):
            return None
        state = load_state(self.path, what="poison state", remedy="delete it to start over")
        if not isinstance(state, dict) or state.get("fingerprint") != self.fp:
            raise UnlearnableError(f"{self.path}: state of a run with other settings or data; "
                                   "delete the work directory or use the same settings")
        return state

    def begin(self) -> dict[str, Any] | None:
        """The saved state to resume from, or None after marking the work dir as this run's
        (so a later run with other settings is refused even before the first real save)."""
        state = self.load()
        if state is None or state.get("phase") == "start":
            self.save({"phase": "start"})
            return None
        log.info("resuming from %s", self.path)
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write `state` with this run's fingerprint (nothing without a work directory)."""
        if self.path is None:
            return
        save_state(self.path, {"fingerprint": self.fp, **state})
        self.last_save = time.monotonic()
        self.saves += 1

    def step(self, unit: int, state_fn: Callable[[], dict[str, Any]], force: bool = False) -> None:
        """After `unit` finished units: save when due (see the class docstring), stop when asked."""
        stop = self.ctx.stop_after is not None and unit >= self.ctx.stop_after
        if self.path is not None and (force or stop or time.monotonic() - self.last_save >= self.ctx.save_every):
            self.save(state_fn())
        if stop:
            raise Interrupted(f"stopped after {unit} units as asked (stop_after); resume to finish")


def begin_crafting(method: str, params: Any, ctx: PoisonContext, base: ImageSet,
                   eff: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                   ) -> tuple[dict[str, Any], torch.device, Resumable, dict[str, Any] | None]:
    """What a model-based run begins with: its effective parameters at `ctx.level` (`eff`, else
    the registry entry's level table), its device, its resumable state in the work directory and
    the state to resume from (`Resumable.begin`, read once: state another run left is refused
    now, before anything trains into the directory). `extra`: more the state must match."""
    eff = resolve(params, get_poison(method).fills, ctx.level) if eff is None else eff
    ck = Resumable(ctx, fingerprint(method, eff, ctx, base, extra))
    return eff, device_of(ctx), ck, ck.begin()


def cpu_state(module_or_opt: Any) -> dict[str, Any]:
    """A state_dict with every tensor on the CPU (saved states load on any device)."""
    def conv(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().clone()
        if isinstance(v, dict):
            return {k: conv(w) for k, w in v.items()}
        if isinstance(v, list):
            return [conv(w) for w in v]
        return v
    return conv(module_or_opt.state_dict())


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                idx: torch.Tensor, batch_size: int,
                transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                grad_clip: float = 0.0) -> tuple[float, float]:
    """SGD steps over `idx` in batches (x, y on one device); returns (mean loss, accuracy).

    `transform(xb, idx_b)` builds each batch's input (e.g. clean + perturbation). `grad_clip` > 0
    clips the gradient's global norm to it before each step (EM's original: 5).
    """
    model.train()
    tot_loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    for s in range(0, len(idx), batch_size):
        b = idx[s:s + batch_size]
        xb = x[b] if transform is None else transform(x[b], b)
        logits = model(xb)
        loss = torch.nn.functional.cross_entropy(logits, y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        tot_loss += loss.detach() * len(b)
        correct += (logits.detach().argmax(1) == y[b]).sum()
    return tot_loss.item() / max(len(idx), 1), correct.item() / max(len(idx), 1)


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000,
                      delta: Callable[[slice], torch.Tensor] | None = None,
                      clamp: bool = True) -> tuple[float, float]:
    """Eval-mode mean cross-entropy and accuracy on x (+ delta(slice)), clipped to [0, 1] unless
    `clamp` is False (EM's original measures its stop rule on the unclipped sum)."""
    model.eval()
    batch_size = eval_batch(batch_size, next(model.parameters()).device)
    tot, correct = 0.0, 0
    for s in range(0, len(x), batch_size):
        sl = slice(s, s + batch_size)
        xb = x[sl] if delta is None else x[sl] + delta(sl)
        if clamp:
            xb = xb.clamp(0, 1)
        logits = model(xb)
        tot += torch.nn.functional.cross_entropy(logits, y[sl], reduction="sum").item()
        correct += int((logits.argmax(1) == y[sl]).sum())
    return tot / len(x), correct / len(x)


def crafting_summary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: np.ndarray,
                     dev: torch.device) -> dict[str, float]:
    """The crafting model's loss and accuracy on the clean images and on the finished uint8 ones."""
    xp = torch.from_numpy(out).permute(0, 3, 1, 2).float().div(255).to(dev)
    clean_loss, clean_acc = loss_and_accuracy(model, x, y)
    prot_loss, prot_acc = loss_and_accuracy(model, xp, y)
    return {"clean_loss": clean_loss, "clean_accuracy": clean_acc,
            "protected_loss": prot_loss, "protected_accuracy": prot_acc}
