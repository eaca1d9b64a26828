"""Every poison the registry holds, by its own facts: each model-based one's level table decides
every parameter left unset at every rung, and each resumable one, killed after one unit of work,
resumes to exactly the images an uninterrupted run makes (and refuses state made otherwise).
A newly registered poison is tested here the moment it registers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from unlearnable.core.errors import UnlearnableError
from unlearnable.ladder import LEVELS
from unlearnable.poisons import POISONS, PoisonContext, make_poison
from unlearnable.poisons.crafting import Interrupted, resolve

from helpers import check_docstring_template

LEVEL_SCALED = sorted(m for m, info in POISONS.items() if info.fills is not None)
RESUMABLE = sorted(m for m, info in POISONS.items() if info.model_based)


def tiny_ctx(seed: int = 0, **kw) -> PoisonContext:
    """A few steps of everything (each method's "tiny" level): what the tests need."""
    return PoisonContext(seed=seed, level="tiny", progress=False, **kw)


def test_the_registry_names_what_is_level_scaled_and_resumable():
    assert {"em", "ops-em", "tap", "rem", "ntga", "hypo", "entf"} <= set(LEVEL_SCALED) == set(RESUMABLE)


@pytest.mark.parametrize("method", LEVEL_SCALED)
def test_every_level_table_has_every_rung(method):
    info = POISONS[method]
    table, params_cls = info.fills, info.params_cls
    assert set(table) == set(LEVELS)
    unset = {f.name for f in dataclasses.fields(params_cls) if f.default is None}
    for lv in LEVELS:
        assert set(table[lv]) == unset, lv  # each rung decides every field left unset
        assert None not in resolve(params_cls(), table, lv).values()
    with pytest.raises(UnlearnableError, match="level must be one of"):
        resolve(params_cls(), table, "bogus")


@pytest.mark.parametrize("method", RESUMABLE)
def test_resume_equals_uninterrupted(method, tmp_path, digits_train):
    small = digits_train.subset(np.arange(96))
    want = make_poison(method, small, ctx=tiny_ctx(1))
    work = tmp_path / "work"
    with pytest.raises(Interrupted):
        make_poison(method, small, ctx=tiny_ctx(1, work_dir=work, stop_after=1, save_every=0))
    assert (work / "state.pt").exists()
    with pytest.raises(UnlearnableError, match="other settings"):  # state is tied to its settings
        make_poison(method, small, ctx=tiny_ctx(2, work_dir=work))
    with pytest.raises(UnlearnableError, match="other settings"):  # ... its level included
        make_poison(method, small, ctx=PoisonContext(seed=1, level="quick", work_dir=work))
    got = make_poison(method, small, ctx=tiny_ctx(1, work_dir=work))
    assert np.array_equal(got.images, want.images)


@pytest.mark.parametrize("method", sorted(POISONS))
def test_every_poison_has_the_one_docstring_template(method):
    """Paper and link, threat model, arguments with their defaults, shapes, an example, in that
    order, on every registered poison (the attacks' template)."""
    check_docstring_template(POISONS[method].fn, f"unlearnable poison {method}", POISONS[method].params_cls)
