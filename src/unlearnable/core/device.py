"""Where tensors compute: the one rule that turns `--device` into a torch device.

    resolve_device("auto")   # cuda if available, else mps, else cpu
    resolve_device("cuda:1") # checked against the machine: a one-line error if it has no such device

A context (a job's, an attack's, a poison's) resolves its device once and passes the torch
device down; `resolve_device` of a torch device returns it as it is.
"""

from __future__ import annotations

import torch

from .errors import UnlearnableError


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device `name` means on this machine ("auto": cuda, then mps, then cpu)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
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
        if not _mps_available():
            raise UnlearnableError("--device mps asked for, but MPS is not available")
    elif dev.type != "cpu":
        raise UnlearnableError(f"--device {name}: only cpu, cuda and mps devices are supported")
    return dev
