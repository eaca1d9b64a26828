"""The training loop: the whole dataset as one tensor on the device, batches sliced from a
seeded permutation, batched augmentation, a checkpoint per epoch and exact resume.

    from unlearnable.train import fit, RECIPES
    result = fit(model, (x, y), (x_test, y_test), RECIPES["fast"], seed=0, out_dir="runs/x")

Every random draw of epoch e comes from a generator seeded with (seed, e), so resuming after
epoch e replays epochs e+1.. exactly as an uninterrupted run would (the files: `checkpoint.py`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import resolve_device
from ..core.errors import UnlearnableError
from ..core.progress import bar as progress_bar
from ..data.facts import UNKNOWN
from .augment import AUGMENTATIONS, LABEL_AUGMENTATIONS, batch_crop, batch_flip_lr
from .checkpoint import load_state, read_metrics, resumable_epoch, save_epoch, unreadable_checkpoint
from .optim import make_optimizer
from .recipe import Recipe

# A batch loss: (model, x, y_soft_or_hard, generator) -> (loss, logits). Attacks such as
# adversarial training replace the default cross-entropy with their own.
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_loss(label_smoothing: float = 0.0) -> BatchLoss:
    """The default batch loss: cross-entropy of the model's logits (hard or soft labels), with label
    smoothing."""
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits
    return loss


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch `epoch`'s draws (permutation, augmentation) for `seed`: a resume replays
    them."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def as_float(xb: torch.Tensor) -> torch.Tensor:
    """A batch as float in [0, 1] (uint8 batches are converted in place of a copy)."""
    return xb.float().div_(255) if xb.dtype == torch.uint8 else xb


# Largest forward batch on a CPU. Measured on the 2-core machine (benchmarks/RESULTS.md): a
# 1,000-image batch of 28x28 ConvNet activations (50 MB per layer) falls out of the caches, and
# the 10,000-image test pass takes 0.89 s against 0.45 s in batches of 256, with bitwise equal
# logits; ResNet-18 on 32x32: 1.6x. Accelerators keep the caller's batch size.
CPU_EVAL_BATCH = 256


def eval_batch(batch_size: int, dev: torch.device) -> int:
    """The forward batch size for an evaluation pass of `batch_size` on `dev`."""
    return min(batch_size, CPU_EVAL_BATCH) if dev.type == "cpu" else batch_size


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000,
             transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in [0, 1]) of `model` on (x, y); x uint8 or [0, 1] float."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    batch_size = eval_batch(batch_size, dev)
    total_loss, correct = 0.0, 0
    for s in range(0, len(x), batch_size):
        xb = as_float(x[s:s + batch_size].to(dev, non_blocking=True))
        if transform is not None:
            xb = transform(xb)
        yb = y[s:s + batch_size].to(dev)
        with _autocast(dev):
            logits = model(_layout(xb, dev))
        total_loss += F.cross_entropy(logits.float(), yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    n = max(len(x), 1)
    return total_loss / n, correct / n


# Device types whose training and evaluation run under autocast, and in which dtype. bf16 on
# CUDA: the speed of half precision without loss scaling. A test (and benchmarks/device_check.py)
# adds "cpu" or removes "cuda" to compare against float32 on the same device.
AUTOCAST: dict[str, torch.dtype] = {"cuda": torch.bfloat16}


def _autocast(dev: torch.device) -> contextlib.AbstractContextManager[Any]:
    dtype = AUTOCAST.get(dev.type)
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _layout(x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x


def crop_padding_for(padding: int, size: int) -> int:
    """`padding`, capped at what suits `size`-pixel images of unknown data (4 px of 32, an eighth
    of the side) so an 8x8 image is not shifted by half its width. A recipe adapted to its data
    (`Recipe.for_data`) is within the cap already: this leaves its padding as recorded."""
    return min(padding, UNKNOWN.crop_padding(size)) if padding > 0 else 0


def augment_batch(x: torch.Tensor, y: torch.Tensor, recipe: Recipe, gen: torch.Generator,
                  num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the recipe's augmentations; y stays hard labels unless a label augmentation mixes.
    The crop and flip come first unless `recipe.augment` places them (see `Recipe`)."""
    names = list(recipe.augment)
    for name in ("flip", "crop"):
        if name not in names:
            names.insert(0, name)
    for name in names:
        if name == "crop":
            if recipe.crop_padding:
                x = batch_crop(x, gen, crop_padding_for(recipe.crop_padding, min(x.shape[-2:])))
        elif name == "flip":
            if recipe.flip:
                x = batch_flip_lr(x, gen)
        elif name in AUGMENTATIONS:
            x = AUGMENTATIONS[name](x, gen)
        elif name in LABEL_AUGMENTATIONS:
            if y.dtype == torch.int64:
                y = F.one_hot(y, num_classes).float()
            x, y = LABEL_AUGMENTATIONS[name](x, y, gen)
        else:
            known = ", ".join(sorted([*AUGMENTATIONS, *LABEL_AUGMENTATIONS]))
            raise UnlearnableError(f"unknown augmentation {name!r} (known: {known})")
    return x, y


Batch = tuple[torch.Tensor, torch.Tensor, torch.Generator]


def batches(x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, epoch: int, num_classes: int,
            replays: int = 1) -> Iterator[Batch]:
    """The (augmented images, labels, generator) of every optimizer step of `epoch`: a seeded
    permutation sliced into batches, each augmented as it is drawn.

    `replays` m > 1 is Free adversarial training's order (Shafahi et al. 2019): each minibatch
    trains m consecutive steps, as drawn once. An epoch still holds ceil(n / batch) steps, so a
    run of the recipe's epochs costs what standard training does and passes over its data
    epochs / m times (the authors' count: training steps, a new batch every m). Each minibatch
    then draws from a generator of its own, keyed by its pass and position, so a run resumed at an
    epoch boundary, which can fall between two replays of one minibatch, replays it exactly.
    """
    n, bs = len(x), recipe.batch_size
    spe = math.ceil(n / bs)
    if replays == 1:
        gen = epoch_generator(seed, epoch)
        perm = torch.randperm(n, generator=gen).to(x.device)
        for step in range(spe):
            idx = perm[step * bs:(step + 1) * bs]
            yield (*augment_batch(as_float(x[idx]), y[idx], recipe, gen, num_classes), gen)
        return
    passes: dict[int, torch.Tensor] = {}
    for s in range(epoch * spe, (epoch + 1) * spe):
        b, r = divmod(s, replays)
        if r == 0 or s == epoch * spe:
            p, q = divmod(b, spe)
            if p not in passes:
                passes = {p: torch.randperm(n, generator=epoch_generator(seed, p)).to(x.device)}
            gen = torch.Generator().manual_seed((seed * 1_000_003 + p) * 1_000_033 + q + 1)
            idx = passes[p][q * bs:(q + 1) * bs]
            xb, yb = augment_batch(as_float(x[idx]), y[idx], recipe, gen, num_classes)
        yield xb, yb, gen


@dataclass
class FitResult:
    """What `fit` returns: the last epoch's test and train figures, epochs trained, seconds, and every
    epoch's record."""
    test_accuracy: float | None
    test_loss: float | None
    train_accuracy: float
    train_loss: float
    epochs: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor] | None,
    recipe: Recipe,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    batch_loss: BatchLoss | None = None,
    test_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    save_checkpoints: bool = True,
    desc: str = "train",
    stop_after_epoch: int | None = None,
) -> FitResult:
    """Train `model` in place on (x, y) with `recipe`; evaluate on `test` after every epoch (or,
    with `recipe.evaluate == "last"`, after the last one only).

    x is uint8 or float NCHW in [0, 1]; it is moved to the device once. With `out_dir`, writes
    `checkpoints/epoch_NNN.pt` (model weights) and `last.pt` (weights + optimizer) after every
    epoch, appends to `metrics.jsonl`, and resumes from `last.pt` when it exists.
    `stop_after_epoch` ends the run early as a crash would (used to test resume).
    `batch_loss` (model, x, y, generator) -> (loss, logits) replaces cross-entropy; one with a
    `replays` attribute trains each minibatch that many steps in a row (`batches`), and one with
    `state_dict`/`load_state_dict` has that state saved in last.pt and restored on resume; one
    with `max_grad_norm` clips the gradients' norm to it; logits None (a model that does not
    classify) leaves train_accuracy out of the record.
    """
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    x, y = train[0].to(dev), train[1].to(dev)
    n = len(x)
    if n == 0:
        raise UnlearnableError("empty training set")
    num_classes = int(getattr(getattr(model, "head", None), "out_features", int(y.max()) + 1))
    loss_fn = batch_loss or cross_entropy_loss(recipe.label_smoothing)
    # A batch loss may carry state across steps (Free adversarial training's perturbation) and
    # ask for each minibatch to be replayed: both are part of what a resume must restore.
    replays = getattr(loss_fn, "replays", 1)
    if isinstance(replays, bool) or not isinstance(replays, int) or replays < 1:
        raise UnlearnableError(f"batch loss: replays must be an integer >= 1, got {replays!r}")
    stateful = loss_fn if hasattr(loss_fn, "state_dict") else None
    # A generative model's loss clips its gradients (D-VAE's norm 5) and has no logits to score.
    max_grad_norm = getattr(loss_fn, "max_grad_norm", None)
    opt = make_optimizer(model, recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay, recipe.nesterov)
    steps_per_epoch = math.ceil(n / recipe.batch_size)

    start_epoch, history = 0, []
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
        last = out / "last.pt"
        if last.exists():
            # It comes from disk: cut short by a full disk, copied from another run, or planted.
            # Whatever fails while restoring from it is the file's fault, said in one line.
            state = load_state(last, dev)
            try:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                if stateful is not None:
                    if "batch_loss" not in state:
                        raise ValueError("it holds no state of this run's batch loss")
                    stateful.load_state_dict(state["batch_loss"])
                start_epoch = resumable_epoch(state, opt, recipe.epochs)
            except Exception as e:  # noqa: BLE001 - a foreign file: wrong keys, shapes or types
                raise unreadable_checkpoint(last, e) from None
            try:
                history = read_metrics(out / "metrics.jsonl", start_epoch)
            except Exception as e:  # noqa: BLE001 - not text, not one JSON object per line
                raise unreadable_checkpoint(out / "metrics.jsonl", e, "metrics file") from None

    t0 = time.perf_counter() - (history[-1]["elapsed"] if history else 0.0)
    bar = progress_bar(total=recipe.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
                       desc=desc, progress=progress)
    try:
        for epoch in range(start_epoch, recipe.epochs):
            # Dropout and other in-model randomness draw from the global generator: seed it per
            # epoch too, so a resumed run replays the same draws.
            torch.manual_seed(seed * 1_000_003 + epoch)
            model.train()
            sum_loss = torch.zeros((), device=dev)
            sum_correct = torch.zeros((), device=dev)
            seen = 0
            for step, (xb, yb, gen) in enumerate(batches(x, y, recipe, seed, epoch, num_classes, replays)):
                lr = recipe.lr_at(epoch + step / steps_per_epoch)
                for g in opt.param_groups:
                    g["lr"] = lr
                with _autocast(dev):
                    loss, logits = loss_fn(model, _layout(xb, dev), yb, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                opt.step()
                # Accumulate on the device: a .item() per step would stall a GPU.
                sum_loss += loss.detach().float() * len(yb)
                seen += len(yb)
                if logits is not None:
                    hard = yb if yb.dtype == torch.int64 else yb.argmax(1)
                    sum_correct += (logits.detach().argmax(1) == hard).sum()
                bar.update(1)
            rec: dict[str, Any] = {"epoch": epoch + 1, "train_loss": sum_loss.item() / seen}
            if logits is not None:
                rec["train_accuracy"] = sum_correct.item() / seen
            rec["lr"] = lr
            if test is not None and recipe.evaluates_after(epoch + 1):
                rec["test_loss"], rec["test_accuracy"] = evaluate(
                    model, test[0], test[1], recipe.eval_batch_size, test_transform)
            rec["elapsed"] = time.perf_counter() - t0
            history.append(rec)
            bar.set_postfix(epoch=epoch + 1, loss=f"{rec['train_loss']:.3f}",
                            test=f"{rec.get('test_accuracy', float('nan')):.3f}")
            if out is not None:
                save_epoch(out, model, opt, epoch + 1, save_checkpoints,
                            stateful.state_dict() if stateful is not None else None)
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
    finally:
        bar.close()
    final = history[-1] if history else {}
    return FitResult(
        test_accuracy=final.get("test_accuracy"), test_loss=final.get("test_loss"),
        train_accuracy=final.get("train_accuracy", 0.0), train_loss=final.get("train_loss", 0.0),
        epochs=len(history), seconds=final.get("elapsed", 0.0), history=history,
    )
