"""A training run on disk: `run.json` (how to rebuild the model), checkpoints, metrics, result.

    RUN_DIR/run.json        arch, model shape, dataset, recipe, seed, versions
    RUN_DIR/checkpoints/    epoch_001.pt ... (weights only)
    RUN_DIR/last.pt         weights + optimizer of the last finished epoch (resume)
    RUN_DIR/metrics.jsonl   one line per epoch
    RUN_DIR/result.json     test_accuracy (fraction), epochs, seconds, ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.device import resolve_device
from ..core.errors import UnlearnableError
from ..core.files import read_json, write_json
from ..core.provenance import now_iso, versions
from ..data.imageset import ImageSet
from ..data.refs import follow_ref, record_ref
from ..data.resolve import load_data
from ..data.sources import facts_for
from ..models import Classifier, build_model, model_signature
from .loop import FitResult, fit
from .recipe import Recipe


@dataclass
class RunSpec:
    """How to rebuild a training run's model and what it trained with: architecture, shapes, classes,
    the recipe as it applied to the data, the seed, and the data's name. run.json records it."""
    arch: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    recipe: Recipe
    seed: int
    data: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "num_classes": self.num_classes, "in_channels": self.in_channels,
                "image_size": list(self.image_size), "recipe": self.recipe.to_dict(),
                "seed": self.seed, "data": self.data}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        return cls(d["arch"], d["num_classes"], d["in_channels"], tuple(d["image_size"]),
                   Recipe.from_dict(d["recipe"]), d["seed"], d.get("data", ""))

    def build(self) -> Classifier:
        torch.manual_seed(self.seed)  # the initial weights are part of the seeded run
        return build_model(self.arch, self.num_classes, self.in_channels, self.image_size)


def spec_for(data: ImageSet, arch: str, recipe: Recipe, seed: int, data_name: str = "") -> RunSpec:
    """The run of `arch` on `data` with `recipe` as it applies to the data: no flip where a mirror
    changes a label, the crop padding that suits the images (`facts_for`, `Recipe.for_data`)."""
    return RunSpec(arch, data.num_classes, data.channels, data.image_size, adapt_recipe(recipe, data), seed,
                   data_name or data.name)


def adapt_recipe(recipe: Recipe, data: ImageSet) -> Recipe:
    """`recipe` as it trains on `data` (its dataset's facts applied): what specs and runs record."""
    facts = facts_for(data)
    return recipe.for_data(facts.hflip, facts.crop_padding(min(data.image_size)))


def as_tensors(d: ImageSet | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 NCHW, int64 labels) of an ImageSet; tensors pass through unchanged."""
    if isinstance(d, ImageSet):
        return d.uint8_tensor(), torch.from_numpy(d.labels)
    return d


def train_on(
    train: ImageSet | tuple[torch.Tensor, torch.Tensor],
    test: ImageSet | tuple[torch.Tensor, torch.Tensor] | None,
    spec: RunSpec,
    out_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: bool | None = None,
    extra: dict[str, Any] | None = None,
    **fit_kw: Any,
) -> tuple[Classifier, FitResult]:
    """Build `spec`'s model, train it, and (with `out_dir`) write the run directory.

    `train` may be an ImageSet or ready tensors (x float in [0, 1] or uint8 NCHW, y int64): the
    attacks train on tensors they have transformed. An existing `out_dir` made with the same
    spec is resumed; one made with a different spec is refused. On an ImageSet the recipe is
    adapted to its data as `spec_for` does, and recorded so.
    """
    if isinstance(train, ImageSet):
        # Whoever built the spec: an attack that adds an augmentation to its context's recipe
        # must not bring back a flip the data does not allow.
        spec = dataclasses.replace(spec, recipe=spec_for(train, spec.arch, spec.recipe, spec.seed).recipe)
    dev = resolve_device(device)
    out = Path(out_dir) if out_dir is not None else None
    model = spec.build()
    signature = model_signature(model)
    made: list[Path] = []  # what this call created, removed again if no epoch finishes
    if out is not None:
        prev = out / "run.json"
        if prev.exists():
            old = read_json(prev)
            if old.get("spec") != spec.to_dict():
                raise UnlearnableError(f"{out}: holds a run with different settings; use another --out")
            if old.get("model_signature") != signature:
                raise UnlearnableError(f"{out}: holds a run of another definition of {spec.arch!r} "
                                       "(made by another version of unlearnable); use another --out")
        else:
            made = [prev, *(d for d in (out, *out.parents) if not d.exists())]
    try:
        if made:
            out.mkdir(parents=True, exist_ok=True)
            write_json(prev, {"spec": spec.to_dict(), "model_signature": signature, "created": now_iso(),
                              "versions": versions(), **(extra or {})})
        model = model.to(dev)
        xy = as_tensors(train)
        txy = as_tensors(test) if test is not None else None
        res = fit(model, xy, txy, spec.recipe, spec.seed, out, dev, progress, **fit_kw)
    except BaseException:
        if made and not (out / "last.pt").exists():
            _unmake(out, made)
        raise
    if out is not None and res.epochs >= spec.recipe.epochs:
        write_json(out / "result.json", {
            "test_accuracy": res.test_accuracy, "test_loss": res.test_loss,
            "train_accuracy": res.train_accuracy, "train_loss": res.train_loss,
            "epochs": res.epochs, "seconds": round(res.seconds, 3), "arch": spec.arch,
            "seed": spec.seed, "data": spec.data, "recipe": spec.recipe.to_dict(),
            "device": str(dev), "num_train": len(xy[0]), "finished": now_iso(), "versions": versions(),
            **(extra or {}),
        })
    return model, res


def _unmake(out: Path, made: list[Path]) -> None:
    """Undo a new run that failed before its first epoch: a directory holding only run.json
    would be resumed from nothing, or refused as "a run with different settings" after a fix.
    Only what this run wrote goes: run.json, the first epoch's checkpoint when last.pt could not
    follow it (a full disk), fit's checkpoints/, the directories it made."""
    with contextlib.suppress(FileNotFoundError):
        (out / "checkpoints" / "epoch_001.pt").unlink()  # a new run: this call wrote it
    with contextlib.suppress(OSError):
        (out / "checkpoints").rmdir()
    with contextlib.suppress(FileNotFoundError):
        made[0].unlink()
    for d in made[1:]:  # innermost first; a directory someone else filled meanwhile stays
        with contextlib.suppress(OSError):
            d.rmdir()


def train_data(
    data: str | os.PathLike[str],
    arch: str,
    recipe: Recipe,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: bool | None = None,
) -> tuple[Classifier, FitResult]:
    """`unlearnable train`: load DATA's train split and its clean test split, train, evaluate."""
    t0 = time.perf_counter()
    tr = load_data(data, "train", data_root)
    te = load_data(data, "test", data_root)
    if te.chw != tr.chw:
        raise UnlearnableError(f"test images {te.chw} differ in shape from training images {tr.chw}")
    # A path is recorded relative to the run directory, which `load_run` resolves it from.
    spec = spec_for(tr, arch, recipe, seed, str(data) if out_dir is None else record_ref(str(data), out_dir))
    return train_on(tr, te, spec, out_dir, device, progress,
                    extra={"load_seconds": round(time.perf_counter() - t0, 3)})


def load_run(run_dir: str | os.PathLike[str]) -> tuple[RunSpec, dict[str, Any]]:
    """The spec (to rebuild the model) and the whole run.json of a run directory."""
    meta = read_json(Path(run_dir) / "run.json")
    try:
        spec = RunSpec.from_dict(meta["spec"])
        # A path there is relative to the run directory (`unlearnable train` records it so).
        return dataclasses.replace(spec, data=follow_ref(spec.data, Path(run_dir) / "run.json", True)), meta
    except (KeyError, TypeError) as e:
        raise UnlearnableError(f"{Path(run_dir) / 'run.json'}: not a run description ({e})") from None
