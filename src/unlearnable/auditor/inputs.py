"""What an audit reads: the protected set, its clean test set and, where they can be found, the
clean images behind it; and the row the steps see (`audit_row`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..analyses.dfr import load_indices
from ..core.errors import UnlearnableError
from ..core.hashing import sha256_array
from ..data.clean import clean_side
from ..data.identity import content_id
from ..data.imageset import ImageSet
from ..data.resolve import load_data
from ..kinds.data import split_ref
from ..ladder import Level, level as get_level
from ..models import arch_signature
from ..runner.jobs import Spec
from .config import AuditConfig
from .steps import Row


@dataclass
class AuditInputs:
    """The audited data as loaded once: what every step's job is given from memory."""

    protected: ImageSet
    test: ImageSet | None  # the clean test set; None when the base dataset cannot be found
    base: ImageSet | None  # clean images aligned with `protected`
    clean_full: ImageSet | None  # the whole clean training set (DFR draws its subset here)
    name: str
    notes: list[str]
    base_name: str | None = None


def resolve_inputs(data: str | os.PathLike[str], clean: str | None = None,
                   data_root: str | os.PathLike[str] | None = None) -> AuditInputs:
    """The protected set, the clean test set and, where they can be found, the clean images."""
    protected = load_data(data, "train", data_root)
    man = protected.meta.get("manifest", {})
    asked = clean
    if clean is None and "manifest" not in protected.meta:
        clean = str(data)  # a clean dataset audited as is: its own base
    side = clean_side(protected, clean, data_root)
    if asked is not None and side.test is None:
        # The user named the clean data: that it cannot be had is an error, not a skipped step.
        raise UnlearnableError(f"--clean {asked}: {side.notes[0] if side.notes else 'not found'}")
    name = man.get("name") or protected.name or Path(str(data)).name
    base_name = side.base_name if side.test is not None else None
    return AuditInputs(protected, side.test, side.base, side.pool, name, side.notes, base_name)


def audit_row(inp: AuditInputs, cfg: AuditConfig, data_path: str, lv: Level | None = None) -> Row:
    """The audited set as the steps see it: data by content, with where to find it as a hint.
    `lv`: the audit's level, when the caller has resolved it already."""
    p = inp.protected
    data: Spec = {"content": content_id(p), "_path": data_path, "_name": inp.name}
    clean: Spec | None = None
    if inp.base is not None:
        clean = ({"content": content_id(inp.base), "clean": inp.base_name, "_base_of": data_path,
                  "_name": f"{inp.base_name} (clean)"} if inp.base is not p else data)
    row = Row(data, clean, inp.base_name, p, lv or get_level(cfg.level), cfg.arch,
              arch_signature(cfg.arch, p.num_classes, p.channels, p.image_size), cfg.seed, cfg.epochs,
              cfg.attack_list(), inp.clean_full is not None)
    if inp.base_name and inp.test is not None:
        row.test_ref = split_ref(inp.base_name, inp.test, "test")
    if inp.base_name and inp.clean_full is not None:
        row.pool_ref = split_ref(inp.base_name, inp.clean_full)
    if inp.notes:
        row.why_no_base = inp.notes[0]
    row.dfr_procedure = cfg.dfr_procedure
    if cfg.dfr_indices:
        if inp.clean_full is None:
            raise UnlearnableError(f"--dfr-indices {cfg.dfr_indices}: there is no clean training set to index "
                                   f"({row.why_no_base})")
        idx = load_indices(cfg.dfr_indices, len(inp.clean_full))
        row.dfr_indices = {"sha256": sha256_array(idx), "_path": str(Path(cfg.dfr_indices).resolve())}
    return row
