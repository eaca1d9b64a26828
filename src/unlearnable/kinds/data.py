"""How a job spec names its data, and how a job gets it.

Data inside a spec is identified by content (`unlearnable.data.identity.content_id`):

    {"content": "sha256:...", "_path": "/abs/runs/lsp"}                    a dataset directory
    {"content": "sha256:...", "clean": "fashion-mnist", "_base_of": path}  the clean images behind one
    {"content": "sha256:...", "clean": "digits", "_subset": 120, "_seed": 0}  a seeded subset of a base
    {"content": "sha256:...", "clean": "digits", "split": "test"}         a base's test split (`split_ref`)
    {"content": "sha256:..."}                                              a set the caller holds
                                                                           (`JobContext.cache`)
    {"method": "regions", "params": {}, "dataset": "digits", "subset": 120, "seed": 0, "level": "tiny"}
                                                                           a poison made from its spec

The last form is made by a `poison` job first (it is deterministic: same spec, same bytes), so
every kind that reads data depends on it (`made_by`); a loaded set is checked against the
`content` it claims. A base dataset's splits are named by content too (`split_ref`); a bare name
(`"test": "digits"`) is still read, for callers that hold nothing.
Keys that begin with `_` are hints: where to find the data, not what it is.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import DataError, UnlearnableError
from ..core.files import put_in_place, temp_prefix
from ..core.lock import FileLock
from ..data.clean import clean_side
from ..data.identity import content_id
from ..data.imageset import ImageSet
from ..data.resolve import load_base, load_data
from ..data.store import load_dataset_dir
from ..data.subsets import random_subset
from ..poisons import PoisonContext, poison_dataset
from ..runner.jobs import JobContext, Spec, job_dir, job_key

log = logging.getLogger(__name__)


def poison_spec_of(data: Spec) -> Spec:
    """The poison job that makes a data spec given by its method."""
    return {"kind": "poison", **data}


def made_by(data: Any) -> list[Spec]:
    """The job a data spec needs first: the poison job of a set given by its method, else none."""
    if isinstance(data, dict) and data.get("method") and data.get("method") != "clean":
        return [poison_spec_of(data)]
    return []


def _cached(ctx: JobContext, key: Any, load: Callable[[], ImageSet]) -> ImageSet:
    if key not in ctx.cache:
        ctx.cache[key] = load()
    return ctx.cache[key]


def named_split(name: str, split: str, ctx: JobContext) -> ImageSet:
    """Split "train" or "test" of the dataset `name` (a registered name or a directory)."""
    return _cached(ctx, (split, name), lambda: load_data(name, split, ctx.data_root))


def load_split(ref: str | Spec, split: str, ctx: JobContext) -> ImageSet:
    """A split a spec names: by its dataset's name (`named_split`), or a data spec by content."""
    return named_split(ref, split, ctx) if isinstance(ref, str) else load_spec_data(ref, ctx)


def _loads(d: Path) -> bool:
    if not d.exists():
        return False
    try:
        load_dataset_dir(d)
        return True
    except UnlearnableError:
        return False  # a broken or partial copy: remade


def ensure_poison(spec: Spec, ctx: JobContext) -> Path:
    """The protected set's directory, made now if it is not there (deterministic: same spec, same
    bytes), so a worker without the driver's disk can still run a dependent job.

    Made under a lock next to it (processes on one machine make it once, the others wait and
    use it) into a temporary sibling that is put in place; where another process put a loadable
    copy there first (a machine the lock does not reach), that copy is used."""
    # A caller's layout (the demo's data/NAME) when it has one; else the job's own directory.
    own = ctx.place is not None and spec.get("kind") == "poison"
    d = ctx.place(spec) if own else job_dir(ctx.out_root, spec) / "data"
    if _loads(d):
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(d.parent / f".{d.name}.lock")
    lock.acquire(what=f"{d} (another process is making it)")
    try:
        if _loads(d):  # made by the process this one waited for
            return d
        stage = Path(tempfile.mkdtemp(prefix=temp_prefix(d), suffix=".tmp", dir=d.parent))
        try:
            pctx = PoisonContext(seed=int(spec["seed"]), device=ctx.device, progress=ctx.progress,
                                 work_dir=d.parent / f"{d.name}.work", level=spec.get("level", "paper"))
            # Made under d's own name (the manifest records it), in the temporary directory.
            made = poison_dataset(spec["method"], spec["dataset"], stage / d.name, seed=int(spec["seed"]),
                                  params=spec["params"], subset=spec.get("subset"), data_root=ctx.data_root,
                                  ctx=pctx, subset_seed=int(spec["seed"]))  # a grid's clean row draws with it
            put_in_place(made, d, keep=_loads)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        lock.release()
    return d


def load_spec_data(data: Spec, ctx: JobContext) -> ImageSet:
    """The training set a data spec names, checked against the content it claims."""
    if data.get("method"):  # made from its spec
        return _cached(ctx, ("poison", job_key(poison_spec_of(data))),
                       lambda: load_dataset_dir(ensure_poison(poison_spec_of(data), ctx)))
    want = data.get("content")
    if want in ctx.cache:
        return ctx.cache[want]
    if "_path" in data:
        ds = load_data(data["_path"], "train", ctx.data_root)
    elif "_base_of" in data:
        ds = load_base(load_data(data["_base_of"], "train", ctx.data_root), ctx.data_root, clean=data["clean"])
    elif "clean" in data:
        ds = named_split(data["clean"], data.get("split", "train"), ctx)
        if data.get("_subset") is not None and data["_subset"] < len(ds):
            ds = ds.subset(random_subset(ds, int(data["_subset"]), int(data.get("_seed", 0))))
    else:
        raise UnlearnableError(f"a data spec says neither how to make nor where to find it: {data}")
    if content_id(ds) != want:
        raise DataError(data.get("_path") or data.get("_base_of") or data.get("clean"),
                        "does not hold the data this job was made for (its content changed)")
    ctx.cache[want] = ds
    return ds


def split_ref(name: str, ds: ImageSet, split: str = "train") -> Spec:
    """A base dataset's split as a spec names it: by content, found by the base's name. A job
    that reads it is keyed by the split's images and labels, not by a name whose files can change."""
    ref: Spec = {"content": content_id(ds), "clean": name}
    return ref if split == "train" else {**ref, "split": split}


def base_of(data: Spec, train: ImageSet, ctx: JobContext) -> ImageSet | None:
    """The clean images aligned with `train` (itself when the data spec is a clean set)."""
    if "clean" in data:
        return train
    return _cached(ctx, ("base", data.get("content") or job_key(data)),
                   lambda: clean_side(train, data_root=ctx.data_root).base)


def preload(ctx: JobContext, *sets: ImageSet | None) -> list[Spec | None]:
    """Data specs by content for sets the caller holds, put in `ctx.cache` so jobs take them from
    there (a set's `name` travels as the spec's `_name` hint); None stays None."""
    out: list[Spec | None] = []
    for ds in sets:
        if ds is None:
            out.append(None)
            continue
        cid = content_id(ds)
        ctx.cache[cid] = ds
        out.append({"content": cid, "_name": ds.name} if ds.name else {"content": cid})
    return out
