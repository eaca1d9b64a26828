"""Arguments shared by sub-commands, so every command spells them the same way, and the one
validation layer for values from the command line.

Every numeric option goes through a typed `type=` function (`positive_int`, `nonneg_int`,
`seed_int`, `finite_float(...)`, `fraction`), every path that is written through `out_dir` or
`out_file`: a value out of range, nan or inf, or an output that is a file where a directory
belongs (or the reverse) is refused while the arguments are parsed, before anything is read or
created. `Parser` makes argparse's own errors the project's one line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..auditor.config import cache_dir
from ..core.device import resolve_device
from ..core.errors import UnlearnableError
from ..core.files import read_json, refuse_dangling, refuse_overlap
from ..core.lock import out_lock
from ..core.params import parse_number
from ..core.registry import lookup_all
from ..core.text import for_term
from ..data.resolve import read_paths
from ..data.store import FORMAT_NAME
from ..ladder import LEVELS, recipe_for
from ..models import MODELS
from ..train.recipe import RECIPES, Recipe


@dataclass(frozen=True)
class AuditCommand:
    """A sub-command of `unlearnable audit` (`audit dfr`, `audit finetune`, ...): its help line,
    the function that adds its arguments, the one that runs it, and the checks between
    arguments made before `run` creates anything (an output that would overwrite an input)."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]  # adds the arguments
    run: Callable[[argparse.Namespace], int]
    # Checks between arguments (an output that would overwrite an input), made before `run`
    # creates anything; the values alone are checked by their argparse types.
    check: Callable[[argparse.Namespace], None] | None = None


class Parser(argparse.ArgumentParser):
    """argparse's parser with its errors as `UnlearnableError`: `cli.main` prints them as one
    line (`unlearnable: error: argument --lr: ...`) and exits 2, instead of a usage block.
    Sub-parsers inherit the class (add_subparsers uses the parent's)."""

    def error(self, message: str) -> NoReturn:
        """Raise the usage error as `UnlearnableError` instead of printing usage and exiting."""
        raise UnlearnableError(message)


# Counts beyond this are typing mistakes, and some reach C code (numpy, torch, L-BFGS) that
# overflows a 32-bit integer.
COUNT_MAX = 2**31 - 1
# numpy's and torch's seeds are unsigned; the engine multiplies a seed by 1,000,003 per epoch
# and torch's must stay below 2**64.
SEED_MAX = 2**32 - 1


@contextlib.contextmanager
def writing(out: str | None) -> Iterator[None]:
    """One writer per output path: hold `out`'s lock (`core.lock.out_lock`, under the shared
    cache) for the block, refused at once in one line while another process writes it."""
    if not out:
        yield
        return
    with out_lock(out, cache_dir()):
        yield


def tell(text: str) -> None:
    """One line on stderr (a failed step, a note): its dataset strings shown, never obeyed."""
    print(for_term(text), file=sys.stderr, flush=True)


def int_in(lo: int, hi: int = COUNT_MAX) -> Callable[[str], int]:
    """A `type=` for integers in [lo, hi]; the message names the range and the value given."""
    rule = f"an integer >= {lo}" if hi == COUNT_MAX else f"an integer in [{lo}, {hi}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if not lo <= value <= hi:
            most = f" (at most {hi})" if value > hi and hi == COUNT_MAX else ""
            raise argparse.ArgumentTypeError(f"must be {rule}{most}, got {text!r}")
        return value

    return parse


positive_int = int_in(1)
nonneg_int = int_in(0)
seed_int = int_in(0, SEED_MAX)


def finite_float(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 hi_open: bool = False) -> Callable[[str], float]:
    """A `type=` for finite numbers (nan and inf refused) within the bounds given; fractions
    such as 8/255 are accepted, as `--param` accepts them."""
    if lo is not None and hi is not None:
        rule = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        rule = f"{'>' if lo_open else '>='} {lo:g}"
    else:
        rule = ""

    def parse(text: str) -> float:
        try:
            value = parse_number(text, float)
        except UnlearnableError:
            value = math.nan
        ok = math.isfinite(value) and (lo is None or (value > lo if lo_open else value >= lo)) \
            and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a finite number {rule}".rstrip() + f", got {text!r}")
        return value

    return parse


fraction = finite_float(0.0, 1.0)
positive_float = finite_float(0.0, lo_open=True)


def _place(text: str, want_dir: bool) -> str:
    """`text` if a directory (`want_dir`) or a file can be written there: what exists there is of
    that kind, and the nearest existing ancestor is a directory."""
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"must name a {'directory' if want_dir else 'file'}, got {text!r}")
    p = Path(text)
    try:
        refuse_dangling(p)  # mkdir and open would say "File exists"
        if p.exists() and want_dir and not p.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: is a file, not a directory")
        if p.exists() and not want_dir and p.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: is a directory, not a file")
        if p.exists() and not want_dir and not p.is_file():
            raise argparse.ArgumentTypeError(f"{text}: is not a regular file (a device, FIFO or socket)")
        up = p.absolute().parent
        while not up.exists() and up != up.parent:
            up = up.parent
        if not up.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: {up} is a file, not a directory")
    except OSError as e:  # a name too long, a loop of symlinks
        raise argparse.ArgumentTypeError(f"{text}: {e.strerror or e}") from None
    except UnlearnableError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def out_dir(text: str) -> str:
    """A `type=` for a directory to write (or resume in)."""
    return _place(text, True)


def run_dir(text: str) -> str:
    """A `type=` for the directory of a run, an audit or a grid, which is resumed when it exists:
    never a dataset directory nor inside one (its files would be mixed into the dataset's)."""

    out_dir(text)
    p = Path(text).absolute()
    for d in (p, *p.parents):
        if (d / "manifest.json").is_file():
            try:
                is_dataset = read_json(d / "manifest.json").get("format") == FORMAT_NAME
            except (UnlearnableError, AttributeError):
                is_dataset = False
            if is_dataset:
                where = "is" if d == p else "lies inside"
                raise argparse.ArgumentTypeError(f"{text}: {where} the dataset directory {d}; choose another")
    return text


def out_file(text: str) -> str:
    """A `type=` for a file to write (or a database to open)."""
    return _place(text, False)


def in_file(text: str) -> str:
    """A `type=` for a file to read: an existing regular file."""
    p = Path(text) if text and "\0" not in text else None
    try:
        if p is None or not p.exists():
            raise argparse.ArgumentTypeError(f"{text}: no such file")
        if not p.is_file():
            raise argparse.ArgumentTypeError(f"{text}: is not a regular file")
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: {e.strerror or e}") from None
    return text


def device(text: str) -> str:
    """A `type=` for --device: auto, or a device torch knows and this machine has."""
    try:
        resolve_device(text)
    except UnlearnableError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--device ")) from None
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (auto, cpu, cuda, cuda:N, mps)") from None
    return text


def names_in(registry: dict[str, Any], what: str, many: bool = True) -> Callable[[str], str]:
    """A `type=` for one registry name, or (`many`) a comma-separated list of them; the value
    stays the string given."""

    def parse(text: str) -> str:
        names = [n.strip() for n in text.split(",") if n.strip()] if many else [text]
        try:
            lookup_all(registry, names, what)
        except UnlearnableError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    return parse


arch_name = names_in(MODELS, "architecture", many=False)


def refuse_input_overlap(out: str | None, data: str | None, option: str = "--out", file: bool = False,
                         what: str = "the dataset") -> None:
    """A command's output must not be, hold or lie inside the dataset it reads (`core.files.refuse_overlap`)."""

    if out is not None and data is not None:
        refuse_overlap(out, [(what, p) for p in read_paths(data)], option, file=file)


def add_data_root(p: argparse.ArgumentParser) -> None:
    """--data-root: the directory searched for datasets first."""
    p.add_argument("--data-root", default=None, type=out_dir,
                   help="directory holding datasets (searched before $UNLEARNABLE_DATA and system locations)")


def add_compute_args(p: argparse.ArgumentParser, default_device: str = "auto") -> None:
    """--device, --no-progress and --data-root: where a command computes and reads."""
    p.add_argument("--device", default=default_device, type=device,
                   help=f"auto, cpu, cuda, cuda:1, mps (default {default_device})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_root(p)


def add_train_args(p: argparse.ArgumentParser, arch: str = "convnet", recipe: str = "paper") -> None:
    """--arch, --epochs, --seed, --recipe, --batch-size, --lr, --device, --data-root, --no-progress."""
    p.add_argument("--arch", default=arch, type=arch_name, help=f"model architecture (default {arch})")
    p.add_argument("--recipe", default=recipe, choices=list(RECIPES),
                   help=f"recipe preset: {', '.join(RECIPES)} (default {recipe})")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the recipe's number of epochs")
    p.add_argument("--batch-size", type=positive_int, default=None, help="override the recipe's batch size")
    p.add_argument("--lr", type=positive_float, default=None, help="override the recipe's learning rate")
    p.add_argument("--seed", type=seed_int, default=0, help="seed for initialization, order and augmentation")
    add_compute_args(p)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The `--recipe` preset with `--epochs/--batch-size/--lr`, through the ladder's one function."""
    return recipe_for(preset=args.recipe, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)


def progress_from_args(args: argparse.Namespace) -> bool | None:
    """The `progress` argument of library calls: False with --no-progress, else None (bars when
    stderr is a terminal)."""
    return False if getattr(args, "no_progress", False) else None


def parse_params(items: list[str] | None) -> dict[str, str]:
    """`--param k=v` pairs as a dict of strings (each method converts to its typed parameters)."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise UnlearnableError(f"--param expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def add_level(p: argparse.ArgumentParser, default: str = "quick") -> None:
    """--level (alias --budget): the compute ladder's rung."""
    p.add_argument("--level", "--budget", dest="level", default=default, choices=LEVELS,
                   help="compute: tiny (seconds), quick (CPU minutes), paper (the paper's protocol); "
                        f"default {default}")


def add_cache(p: argparse.ArgumentParser) -> None:
    """--cache: the shared job cache for results that do not depend on the audited data."""
    p.add_argument("--cache", default=None, type=out_dir,
                   help="shared job cache for results that do not depend on the audited data (the clean "
                        "reference, the random network's DFR); default $UNLEARNABLE_CACHE or ~/.cache/unlearnable")

