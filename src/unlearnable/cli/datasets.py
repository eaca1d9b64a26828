"""`unlearnable datasets [--download NAME]`: which datasets are available, where, and how to get the rest.

    unlearnable datasets                                     # found where, or how to get each one
    unlearnable datasets --data-root /data                   # search /data first
    unlearnable datasets --download cifar10                  # into the first $UNLEARNABLE_DATA entry
    unlearnable datasets --download mnist --data-root /data  # into /data

`--download NAME` fetches a dataset from its official source and verifies its SHA-256 checksums.
"""

from __future__ import annotations

import argparse

from ..data.fetch import default_download_root, download
from ..data.resolve import data_roots, survey, user_cache_root
from .common import add_data_root


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable datasets` sub-command to the parser."""
    p = sub.add_parser("datasets", help="list datasets: found where, or how to get them")
    add_data_root(p)
    p.add_argument("--download", metavar="NAME", default=None,
                   help="download NAME from its official source, SHA-256 verified, into --data-root "
                        "(default: the first $UNLEARNABLE_DATA entry, else ~/.cache/unlearnable/data)")
    p.add_argument("--no-progress", action="store_true", help="no download progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable datasets` with the parsed arguments; the exit code."""
    if args.download:
        root = args.data_root or default_download_root()
        dest = download(args.download, root, progress=False if args.no_progress else None)
        print(f"downloaded {args.download} into {dest} (checksums verified)")
        return 0
    rows = survey(args.data_root)
    width = max(len(r.name) for r in rows)
    missing = 0
    for r in rows:
        if r.path is not None:
            where = "embedded (scikit-learn)" if r.embedded else r.path
            print(f"  {r.name:<{width}}  found     {where}")
        else:
            missing += 1
            print(f"  {r.name:<{width}}  missing   {r.how_to_get}")
    roots = [str(r) for r in data_roots(args.data_root)]
    print(f"searched: {', '.join(roots + ['system locations', str(user_cache_root())])}")
    if missing:
        print(f"{missing} missing; put datasets under --data-root DIR or $UNLEARNABLE_DATA")
    return 0
