"""A training run's files on disk: per-epoch weights, `last.pt` (what a resume restores),
`metrics.jsonl`, and the one way every resumable state is saved and read back.

    save_state(path, state)          # atomic torch.save: a kill leaves the old file or the new one
    load_state(path)                 # weights_only=True, a regular file only; a one-line error otherwise
    load_weights(model, path)        # a checkpoint `fit` wrote (weights, or last.pt's model)
    checkpoint_paths(run_dir)        # [(epoch, RUN_DIR/checkpoints/epoch_NNN.pt), ...]

`fit` saves last.pt after every epoch and resumes from it; a model-based poison saves its
crafting state the same way (`poisons.crafting.Resumable`). Finished results are the runner's
store's to reuse; these files only ever continue unfinished work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import DataError, UnlearnableError, one_line
from ..core.files import MAX_JSON_BYTES, atomic_file, write_failed
from ..core.safe import open_regular, read_bounded


def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write `state` (tensors and plain values) to `path` atomically."""
    with atomic_file(path) as f:
        try:
            torch.save(state, f)
        except RuntimeError as e:  # torch's zip writer says "unexpected pos", not "disk full"
            raise write_failed(e, path) from None


def load_state(path: str | os.PathLike[str], map_location: Any = "cpu", what: str = "checkpoint",
               remedy: str = "delete it or rerun with --restart", given: bool = False) -> Any:
    """What `save_state` wrote at `path`: read with `weights_only=True` (never code) from a regular
    file. Whatever stands in the way (not a regular file, cut short, not torch's, unsafe) is one
    `unreadable_checkpoint` line naming the file and the remedy; for a path the user `given`, a
    missing or irregular file is its own one-line DataError instead (no remedy to offer)."""
    try:
        with open_regular(path) as fh:
            return torch.load(fh, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a broken or unsafe file
        if given and isinstance(e, DataError):
            raise
        raise unreadable_checkpoint(path, e, what, remedy) from None


def save_epoch(out: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                save_checkpoints: bool, loss_state: dict[str, Any] | None = None) -> None:
    """After epoch `epoch`: its weights in checkpoints/epoch_NNN.pt, then last.pt (weights, optimizer
    and a batch loss's state) for a resume."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if save_checkpoints:
        save_state(out / "checkpoints" / f"epoch_{epoch:03d}.pt", weights)
    # last.pt is written after the epoch checkpoint: if it says epoch e, checkpoint e exists.
    state = {"epoch": epoch, "model": weights, "optimizer": opt.state_dict()}
    if loss_state is not None:
        state["batch_loss"] = loss_state
    save_state(out / "last.pt", state)


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


def read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
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


def unreadable_checkpoint(path: str | os.PathLike[str], e: BaseException, what: str = "checkpoint",
                          remedy: str = "delete it or rerun with --restart") -> UnlearnableError:
    """The one-line error for a checkpoint (or a run's other resume state) that cannot be
    restored from: a DataError naming the file, what it is and the remedy."""
    why = f"{type(e).__name__}: {one_line(e)}" if str(e).strip() else type(e).__name__
    return DataError(path, f"{what} is unreadable ({why}); {remedy}")


def resumable_epoch(state: Any, opt: torch.optim.Optimizer, epochs: int) -> int:
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
    """Load a checkpoint saved by `fit` (tensors only: `weights_only=True`, never code); a path
    that is not there, or not a regular file, is the DataError naming it."""
    state = load_state(path, given=True)
    if isinstance(state, dict) and "model" in state and "optimizer" in state:
        state = state["model"]
    try:
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - a foreign file: wrong keys, shapes or types
        raise unreadable_checkpoint(path, e) from None
    return model
