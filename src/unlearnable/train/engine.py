"""The training engine: the whole dataset as one tensor on the device, batches sliced from a
seeded permutation, batched augmentation, a checkpoint per epoch and exact resume.

    from unlearnable.train import fit, RECIPES
    result = fit(model, (x, y), (x_test, y_test), RECIPES["fast"], seed=0, out_dir="runs/x")

Every random draw of epoch e comes from a generator seeded with (seed, e), so resuming after
epoch e replays epochs e+1.. exactly as an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.files import MAX_JSON_BYTES, atomic_file
from ..core.errors import DataError, UnlearnableError, one_line
from ..core.safe import open_regular, read_bounded
from .augment import AUGMENTATIONS, LABEL_AUGMENTATIONS, batch_crop, batch_flip_lr


EVALUATE = ("epoch", "last")


@dataclass
class Recipe:
    """Hyperparameters of one training run. Defaults: the paper's section 4.2 recipe.

    The random crop (`crop_padding`) and flip come before the `augment` names unless `augment`
    names "crop" or "flip": then each runs at its place there, still as the recipe's fields and
    the data's facts allow (the released pipeline: rotate, shear-scale, jitter, crop, flip).
    `optimizer` "sgd" uses `momentum`/`nesterov`; "adam" uses torch's Adam with its default betas
    (0.9, 0.999) and `weight_decay` as an L2 term, as the released ViT training does.
    """

    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | constant
    milestones: tuple[int, ...] = ()  # epochs at which "step" multiplies the lr by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    crop_padding: int = 4  # 0 disables the random crop
    flip: bool = True
    augment: tuple[str, ...] = ()  # extra names from AUGMENTATIONS / LABEL_AUGMENTATIONS
    label_smoothing: float = 0.0
    eval_batch_size: int = 1000
    optimizer: str = "sgd"  # sgd | adam
    # When fit measures the clean test set: after every epoch ("epoch", the curve Fig. 2 and DFR
    # draw) or after the last one only ("last": what an attack reports; no effect on training).
    evaluate: str = "epoch"

    def __post_init__(self) -> None:
        # Every construction, replace() and from_dict() passes here, so the Python API refuses
        # what the CLI refuses: a batch size of 0 divides by zero, a nan lr trains a chance-level
        # model without an error, a negative epoch count trains nothing.
        import numbers

        def integer(v: object) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def finite(v: object) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

        rules = (
            ("epochs", integer(self.epochs) and self.epochs >= 1, "an integer >= 1"),
            ("batch_size", integer(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
            ("eval_batch_size", integer(self.eval_batch_size) and self.eval_batch_size >= 1, "an integer >= 1"),
            ("crop_padding", integer(self.crop_padding) and self.crop_padding >= 0, "an integer >= 0"),
            ("lr", finite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("momentum", finite(self.momentum) and 0 <= self.momentum < 1, "a finite number in [0, 1)"),
            ("weight_decay", finite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0"),
            ("gamma", finite(self.gamma) and self.gamma > 0, "a finite number > 0"),
            ("warmup_epochs", finite(self.warmup_epochs) and self.warmup_epochs >= 0, "a finite number >= 0"),
            ("label_smoothing", finite(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             "a finite number in [0, 1)"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            ("evaluate", self.evaluate in EVALUATE, " or ".join(map(repr, EVALUATE))),
        )
        for name, ok, rule in rules:
            if not ok:
                raise UnlearnableError(f"recipe: {name} must be {rule}, got {getattr(self, name)!r}")

    def replace(self, **kw: Any) -> Recipe:
        return dataclasses.replace(self, **kw)

    def with_epochs(self, epochs: int) -> Recipe:
        """The same recipe over `epochs`; a step schedule keeps its milestones at the same
        fractions of the run (75 and 90 of 100 epochs become 15 and 18 of 20; at least 1)."""
        if epochs < 1:
            raise UnlearnableError(f"epochs must be at least 1, got {epochs}")
        if epochs == self.epochs:
            return self
        kw: dict[str, Any] = {"epochs": epochs}
        if self.milestones:
            kw["milestones"] = tuple(max(1, round(m * epochs / self.epochs)) for m in self.milestones)
        return self.replace(**kw)

    def for_data(self, hflip: bool, crop_padding: int) -> Recipe:
        """This recipe on images whose label survives a mirror only if `hflip` and a shift of at
        most `crop_padding` pixels (`unlearnable.data.facts_for`): what a run trains and records.
        Applying it twice changes nothing."""
        flip, padding = self.flip and hflip, min(self.crop_padding, crop_padding)
        if (flip, padding) == (self.flip, self.crop_padding):
            return self
        return self.replace(flip=flip, crop_padding=padding)

    def lr_at(self, t: float) -> float:
        """Learning rate at fractional epoch t (a pure function, so resume needs no scheduler)."""
        if self.warmup_epochs and t < self.warmup_epochs:
            return self.lr * t / self.warmup_epochs
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * min(t / max(self.epochs, 1), 1.0)))
        if self.schedule == "step":
            return self.lr * self.gamma ** sum(t >= m for m in self.milestones)
        if self.schedule == "constant":
            return self.lr
        raise UnlearnableError(f"unknown lr schedule {self.schedule!r} (cosine, step, constant)")

    def evaluates_after(self, epoch: int) -> bool:
        """Whether fit measures the test set after `epoch` (1-based)."""
        return self.evaluate == "epoch" or epoch >= self.epochs

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["augment"] = list(self.augment)
        # The default is left out so that every run, job key and audit recorded before the
        # option existed keeps its identity (from_dict fills it in again).
        if d["evaluate"] == "epoch":
            del d["evaluate"]
        if d["optimizer"] == "sgd":
            del d["optimizer"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        d = dict(d)
        d["milestones"] = tuple(d.get("milestones", ()))
        d["augment"] = tuple(d.get("augment", ()))
        return cls(**d)


OPTIMIZERS = ("sgd", "adam")

# The released orthogonal_projection_step_2.py's training pipeline, in its order (torchvision's
# RandomRotation, RandomAffine, ColorJitter, RandomCrop, RandomHorizontalFlip; CutMix per batch).
RELEASED_AUGMENT = ("rotate", "shear-scale", "color-jitter-per-image", "crop", "flip", "cutmix")

RECIPES: dict[str, Recipe] = {
    # Section 4.2 / App. A.1: SGD 0.9, wd 5e-4, lr 0.1 cosine, batch 128, 40 epochs, crop + flip.
    "paper": Recipe(),
    # For 2 CPU cores: a few epochs with larger batches; what the `quick` level uses.
    "fast": Recipe(epochs=8, batch_size=256, lr=0.05, warmup_epochs=0.5),
    # For a few thousand small images (digits, subsets in tests): small batches, few epochs.
    "tiny": Recipe(epochs=4, batch_size=64, lr=0.05, warmup_epochs=0.5),
    # The released orthogonal-projection step 2: 50 epochs, wd 1e-4, lr x0.1 at 25 and 37, its
    # augmentation pipeline in its order, then CutMix.
    "released": Recipe(epochs=50, weight_decay=1e-4, schedule="step", milestones=(25, 37),
                       augment=RELEASED_AUGMENT),
    # The same step for a ViT as released: Adam lr 1e-3, betas (0.9, 0.999), wd 5e-5, 5 warm-up
    # epochs, then cosine; batch 128, 50 epochs, the same augmentations (docs/models.md).
    "vit-released": Recipe(epochs=50, lr=1e-3, optimizer="adam", weight_decay=5e-5, warmup_epochs=5.0,
                           augment=RELEASED_AUGMENT),
    # Adversarial training baseline (section 4.4.2): 100 epochs, lr x0.1 at 75 and 90.
    "adv": Recipe(epochs=100, schedule="step", milestones=(75, 90)),
}


def get_recipe(name: str) -> Recipe:
    from ..core.registry import lookup

    return lookup(RECIPES, name, "recipe")


# A batch loss: (model, x, y_soft_or_hard, generator) -> (loss, logits). Attacks such as
# adversarial training replace the default cross-entropy with their own.
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_loss(label_smoothing: float = 0.0) -> BatchLoss:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits
    return loss


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UnlearnableError("--device cuda asked for, but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UnlearnableError(f"--device {name} asked for, but this machine has "
                                   f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UnlearnableError("--device mps asked for, but MPS is not available")
    elif dev.type != "cpu":
        raise UnlearnableError(f"--device {name}: only cpu, cuda and mps devices are supported")
    return dev


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def as_float(xb: torch.Tensor) -> torch.Tensor:
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


def _autocast(dev: torch.device):
    dtype = AUTOCAST.get(dev.type)
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else _nullcontext()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _layout(x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x


def crop_padding_for(padding: int, size: int) -> int:
    """`padding`, capped at what suits `size`-pixel images of unknown data (4 px of 32, an eighth
    of the side) so an 8x8 image is not shifted by half its width. A recipe adapted to its data
    (`Recipe.for_data`) is within the cap already: this leaves its padding as recorded."""
    from ..data.facts import UNKNOWN

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
    test_accuracy: float | None
    test_loss: float | None
    train_accuracy: float
    train_loss: float
    epochs: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return sys.stderr.isatty()


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
    `state_dict`/`load_state_dict` has that state saved in last.pt and restored on resume.
    """
    from tqdm.auto import tqdm

    dev = torch.device(device) if device is not None else next(model.parameters()).device
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
    decay, no_decay = [], []
    for p in model.parameters():
        # No weight decay on BatchNorm and bias vectors, as the field's fast trainers do.
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adam":  # torch's default betas (0.9, 0.999), L2 decay: the released ViT's
        opt: torch.optim.Optimizer = torch.optim.Adam(groups, lr=recipe.lr)
    else:
        opt = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
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
            try:
                with open_regular(last) as fh:
                    state = torch.load(fh, map_location=dev, weights_only=True)
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                if stateful is not None:
                    if "batch_loss" not in state:
                        raise ValueError("it holds no state of this run's batch loss")
                    stateful.load_state_dict(state["batch_loss"])
                start_epoch = _resumable(state, opt, recipe.epochs)
            except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
                raise unreadable_checkpoint(last, e) from None
            try:
                history = _read_metrics(out / "metrics.jsonl", start_epoch)
            except Exception as e:  # noqa: BLE001 - not text, not one JSON object per line
                raise unreadable_checkpoint(out / "metrics.jsonl", e, "metrics file") from None

    t0 = time.perf_counter() - (history[-1]["elapsed"] if history else 0.0)
    bar = tqdm(total=recipe.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
               desc=desc, disable=not _progress_enabled(progress), leave=False, dynamic_ncols=True)
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
                opt.step()
                # Accumulate on the device: a .item() per step would stall a GPU.
                sum_loss += loss.detach().float() * len(yb)
                seen += len(yb)
                hard = yb if yb.dtype == torch.int64 else yb.argmax(1)
                sum_correct += (logits.detach().argmax(1) == hard).sum()
                bar.update(1)
            rec: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": sum_loss.item() / seen,
                "train_accuracy": sum_correct.item() / seen,
                "lr": lr,
            }
            if test is not None and recipe.evaluates_after(epoch + 1):
                rec["test_loss"], rec["test_accuracy"] = evaluate(
                    model, test[0], test[1], recipe.eval_batch_size, test_transform)
            rec["elapsed"] = time.perf_counter() - t0
            history.append(rec)
            bar.set_postfix(epoch=epoch + 1, loss=f"{rec['train_loss']:.3f}",
                            test=f"{rec.get('test_accuracy', float('nan')):.3f}")
            if out is not None:
                _save_epoch(out, model, opt, epoch + 1, save_checkpoints,
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


def _save_epoch(out: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                save_checkpoints: bool, loss_state: dict[str, Any] | None = None) -> None:
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if save_checkpoints:
        with atomic_file(out / "checkpoints" / f"epoch_{epoch:03d}.pt") as f:
            torch.save(weights, f)
    # last.pt is written after the epoch checkpoint: if it says epoch e, checkpoint e exists.
    with atomic_file(out / "last.pt") as f:
        state = {"epoch": epoch, "model": weights, "optimizer": opt.state_dict()}
        if loss_state is not None:
            state["batch_loss"] = loss_state
        torch.save(state, f)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a one-object-per-line file (metrics.jsonl), read within a size bound.
    Only the last line may be cut off (a crash mid-write): it is passed over; anything else that
    is not one object with an integer epoch per line is a one-line DataError."""
    try:
        lines = read_bounded(path, MAX_JSON_BYTES).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(path, "is not text (one JSON object per line expected)") from None
    rows = []
    for i, line in enumerate(lines):
        try:
            r = json.loads(line)
        except (ValueError, RecursionError):
            if i == len(lines) - 1:
                continue
            raise DataError(path, f"line {i + 1} is not JSON") from None
        if not isinstance(r, dict) or not isinstance(r.get("epoch", 0), int):
            raise DataError(path, f"line {i + 1} is not an object with an integer epoch")
        rows.append(r)
    return rows


def _read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """Metrics of epochs <= upto_epoch; rewrites the file without lines of unfinished epochs."""
    if not path.exists():
        return []
    rows = []
    for r in read_jsonl(path):
        if r.get("epoch", 0) <= upto_epoch:
            rows.append(r)
    rows = list({r["epoch"]: r for r in rows}.values())
    with atomic_file(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def checkpoint_paths(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(epoch, path) of every per-epoch checkpoint in a run directory, in epoch order."""
    ck = Path(run_dir) / "checkpoints"
    out = []
    for p in sorted(ck.glob("epoch_*.pt")):
        try:
            out.append((int(p.stem.split("_")[1]), p))
        except (IndexError, ValueError):
            continue
    return out


def unreadable_checkpoint(path: str | os.PathLike[str], e: BaseException, what: str = "checkpoint") -> UnlearnableError:
    """The one-line error for a checkpoint (or a run's other resume state) that cannot be
    restored from: a DataError naming the file."""
    why = f"{type(e).__name__}: {one_line(e)}" if str(e).strip() else type(e).__name__
    return DataError(path, f"{what} is unreadable ({why}); delete it or rerun with --restart")


def _resumable(state: Any, opt: torch.optim.Optimizer, epochs: int) -> int:
    """The epoch a loaded last.pt resumes after, once it is known to belong to this run: an
    epoch within the recipe and optimizer buffers shaped like the parameters (a foreign file
    would otherwise fail mid-epoch or report a run that never trained)."""
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        raise ValueError(f"epoch {epoch!r} is not one of this {epochs}-epoch run's")
    for group in opt.param_groups:
        for p in group["params"]:
            for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):  # SGD's and Adam's buffers
                buf = opt.state.get(p, {}).get(key)
                if buf is not None and buf.shape != p.shape:
                    raise ValueError(f"an optimizer buffer of shape {tuple(buf.shape)} for a parameter of "
                                     f"shape {tuple(p.shape)}")
    return epoch


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a checkpoint saved by `fit` (tensors only: `weights_only=True`, never code)."""

    try:
        with open_regular(path) as fh:
            state = torch.load(fh, map_location="cpu", weights_only=True)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises several types for a broken or unsafe file
        raise unreadable_checkpoint(path, e) from None
    if isinstance(state, dict) and "model" in state and "optimizer" in state:
        state = state["model"]
    try:
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - a foreign file: wrong keys, shapes or types
        raise unreadable_checkpoint(path, e) from None
    return model
