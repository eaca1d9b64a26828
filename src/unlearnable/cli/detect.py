"""`unlearnable detect DATA [--out DIR]`: is DATA protected? A calibrated score from the data alone.

    unlearnable detect ./received-data                       # the decision and its evidence, one line
    unlearnable detect runs/lsp --level paper --out runs/lsp-detect      # every sample; files under DIR
    unlearnable detect imagefolder:photos/train --level tiny --seed 1

DATA is anything the toolkit reads (a protected-format directory, an image folder, a dataset
name); only its training split is read and no clean copy is needed. Prints the decision in one
line; with --out, writes detect.json, detect.html, directions.png and per_sample.npy (all or
nothing).

Exit codes: 0 when it decides ("protected" or "not detected as protected": both are answers,
and the line or detect.json's `protected` says which); 3 when it cannot judge (too few samples
per class, or labels the raw pixels predict no better than chance): the line says why and the
files are still written as evidence, but a script that goes on with exit 0 must not be able to
mistake "no evidence" for "not protected"; 2 for an error the user can fix, as everywhere.
"""

from __future__ import annotations

import argparse
import logging

from ..data.resolve import load_data
from ..detect import detect, explain
from ..detect.report import write
from .common import add_data_root, add_level, refuse_input_overlap, run_dir, seed_int, writing

log = logging.getLogger(__name__)

# The exit code of a run that measured the set but could not judge it (see the module docstring).
CANNOT_JUDGE = 3


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable detect` sub-command to the parser."""
    p = sub.add_parser("detect", help="is DATA protected? a calibrated score from the data alone (no clean copy)",
                       description="Score in [0, 1] and a decision at the shipped threshold (5%% false "
                                   "positives on clean and benignly processed sets), with the evidence.")
    p.add_argument("data", help="dataset directory, imagefolder:PATH, or a dataset name")
    p.add_argument("--out", type=run_dir, default=None,
                   help="directory for detect.json, detect.html, directions.png and per_sample.npy")
    add_level(p, default="quick")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the measured subset and its halves (default 0)")
    add_data_root(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable detect` with the parsed arguments; the exit code."""
    refuse_input_overlap(args.out, args.data)
    with writing(args.out):  # from the start: a second writer is refused before it measures
        ds = load_data(args.data, "train", args.data_root)
        res = detect(ds, args.level, args.seed)
        print(f"{args.data}: {explain(res)}")
        if args.out:
            out = write(args.out, res, ds, args.data, args.seed)
            print(f"-> {out}/detect.json, {out}/detect.html")
    return CANNOT_JUDGE if res["protected"] is None else 0
