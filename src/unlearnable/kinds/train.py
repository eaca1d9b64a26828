"""The `train` job: standard training with a checkpoint per epoch, and where a training's run
directory is for the jobs that read it (DFR, fine-tuning).

    {"kind": "train", "data": data spec, "test": split spec or base name, "arch", "model", "recipe", "seed"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data.imageset import ImageSet
from ..runner.jobs import JobContext, Spec, job_key, register_job
from ..train.recipe import Recipe
from ..train.run import RunSpec, spec_for, train_on
from .data import load_spec_data, load_split, made_by


def run_spec(spec: Spec, train: ImageSet) -> RunSpec:
    """The run a train spec makes on `train`. What run.json records as the data is something
    `load_data` resolves again (a path, or the base dataset whose clean images these are), so
    `audit dfr RUN_DIR` finds the clean side."""
    d = spec["data"]
    return spec_for(train, spec["arch"], Recipe.from_dict(spec["recipe"]), int(spec["seed"]),
                    d.get("_path") or d.get("clean") or d.get("method") or "")


def _train(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> dict[str, Any]:
    train = load_spec_data(spec["data"], ctx)
    test = load_split(spec["test"], "test", ctx)
    out = ctx.dir_of(spec)
    _, res = train_on(train, test, run_spec(spec, train), out, ctx.device, ctx.progress)
    return {"test_accuracy": res.test_accuracy, "test_loss": res.test_loss,
            "train_accuracy": res.train_accuracy, "epochs": res.epochs, "seconds": round(res.seconds, 3),
            "run_dir": str(out),
            "curve": [{"epoch": h["epoch"], "test_accuracy": h.get("test_accuracy")} for h in res.history]}


def run_dir_of(spec: Spec, ctx: JobContext, deps: dict[str, Any]) -> Path:
    """Where the finished training `spec` is for a job that reads it: its directory here, else
    the one its result names, else (a worker without the driver's disk) trained again here from
    its spec, which is deterministic."""
    d = Path(ctx.dir_of(spec))  # where this process sees it (a scratch copy, with a storage URL)
    if not (d / "result.json").exists() and job_key(spec) in deps:
        d = Path(deps[job_key(spec)]["run_dir"])
    if not (d / "result.json").exists():
        d = Path(_train(spec, ctx, {})["run_dir"])
    return d


def _passes(spec: Spec, n_train: int, n_test: int) -> float:
    epochs = spec["recipe"]["epochs"]
    return n_train * epochs + n_test * epochs / 3  # a test pass per epoch: forward only


def _intact(spec: Spec, run_dir: Path) -> bool:
    """Whether a finished training's checkpoints still load (DFR and fine-tuning read them all)."""
    for ck in [run_dir / "last.pt", *sorted((run_dir / "checkpoints").glob("epoch_*.pt"))]:
        try:
            torch.load(ck, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any unreadable checkpoint means: train again
            return False
    return True


register_job("train", _train, deps=lambda spec: made_by(spec["data"]), passes=_passes, title="standard training",
             intact=_intact)
