"""The `unlearnable` command: a thin layer over the functions users can import.

Each sub-command lives in its own module exposing `register(subparsers)`; the module's parser
sets `func(args) -> int`. Errors the user can fix (`UnlearnableError`) print one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._io import UnlearnableError

# Modules that define sub-commands, in the order `--help` lists them.
COMMANDS = ["datasets", "train", "demo", "poison", "show", "attack", "audit", "import_", "export",
            "reproduce", "results"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UnlearnableError as e:
        print(f"unlearnable: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unlearnable: interrupted; finished work is saved, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
