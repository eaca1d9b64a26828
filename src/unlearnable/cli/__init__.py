"""`unlearnable [-q | -v] COMMAND ...`: the command-line tool, a thin layer over the functions users can import.

    unlearnable --help                                    # the sub-commands, one line each
    unlearnable train --help                              # one sub-command's options
    unlearnable --version
    unlearnable -q poison regions --dataset digits --out runs/digits-regions      # only warnings and errors
    unlearnable audit runs/digits-regions --level tiny --out runs/digits-audit -v   # debugging detail too

Each sub-command lives in its own module exposing `register(sub)`; the module's parser sets
`func(args) -> int`. Errors the user can fix (`UnlearnableError`) print one line, exit 2.

Library code reports through `logging.getLogger("unlearnable....")`; the command shows those
messages on stderr: progress at the default level, only warnings with `-q/--quiet`, debugging
detail with `-v/--verbose` (either may stand anywhere on the command line). Results go to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ..core.errors import UnlearnableError, one_line
from ..core.malloc import tune_malloc
from ..core.text import TerminalSafe, for_term
from ..core.version import __version__
from .common import Parser

# Modules that define sub-commands, in the order `--help` lists them.
COMMANDS = ["datasets", "train", "demo", "poison", "show", "attack", "audit", "detect", "import_", "export",
            "reproduce", "results"]


def build_parser() -> argparse.ArgumentParser:
    """The `unlearnable` parser, with every sub-command in `COMMANDS` that this build has."""
    p = Parser(
        prog="unlearnable",
        description="Does an unlearnable (protected) image dataset really protect? "
                    "Make, import, audit and attack protected datasets.",
    )
    p.add_argument("--version", action="version", version=f"unlearnable {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # that command is not part of this build
            raise
        mod.register(sub)
    return p


QUIET, VERBOSE = ("-q", "--quiet"), ("-v", "--verbose")


def configure_logging(level: int) -> None:
    """One stderr handler on the package's logger (replaced, not stacked, on every call)."""
    log = logging.getLogger("unlearnable")
    for h in [h for h in log.handlers if getattr(h, "_unlearnable_cli", False)]:
        log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(TerminalSafe())  # a message quoting a dataset's name cannot drive the terminal
    handler._unlearnable_cli = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run `unlearnable` on `argv` (default: sys.argv[1:]); the exit code: 0, 1 when a command
    reports failed work, 2 for an error the user can fix, 130 when interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    level = logging.INFO
    if any(a in QUIET for a in argv):
        level = logging.WARNING
    if any(a in VERBOSE for a in argv):
        level = logging.DEBUG
    argv = [a for a in argv if a not in QUIET + VERBOSE]
    configure_logging(level)
    tune_malloc()  # before torch allocates: 1.3-1.6x faster CPU training (see core/malloc.py)
    parser = build_parser()
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="debugging detail on stderr")
    stdout = sys.stdout
    sys.stdout = SafeStream(stdout)  # what a command prints may quote a dataset: shown, never obeyed
    try:
        # Usage errors too are UnlearnableError (`common.Parser`), reported like every other.
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except UnlearnableError as e:
        print(f"unlearnable: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `unlearnable datasets | head`: the reader left, nothing is wrong
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as e:
        # What the file system refuses (no permission, no space, a read-only mount) is the
        # user's to fix: one line naming the file, not a traceback.
        where = " ".join(f"{f}:" for f in (e.filename, e.filename2) if f is not None)
        print(f"unlearnable: error: {_one_line(f'{where} {e.strerror or e}'.strip())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unlearnable: interrupted; finished work is saved, rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        if isinstance(sys.stdout, SafeStream):
            sys.stdout = stdout


class SafeStream:
    """A text stream that writes through `for_term` (line breaks and tabs kept): whatever a
    command prints, a dataset's string in it cannot set the terminal's title or colours."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(for_term(text, keep_newlines=True))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _one_line(text: str) -> str:
    # The promise is one line: a message quoting a file's content or a path may hold newlines,
    # and escape sequences (shown, not obeyed).
    return for_term(one_line(text, limit=2000))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
