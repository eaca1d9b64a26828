"""`unlearnable import FORMAT PATH --base DATA --out DIR`: a released poison into the project format.

    unlearnable import png-folder release/ --base cifar10 --out runs/ar
    unlearnable import ue-pt perturbation.pt --base cifar10 --out runs/ue --param noise_range=nonnegative
    unlearnable import rem-pkl rem-noise.pkl --base cifar10 --out runs/rem
    unlearnable import npz poison.npz --base cifar10 --out runs/mine --layout NCHW --scale 255
    unlearnable import auto runs/lsp-png --base cifar10 --out runs/lsp-again --param subset=true

FORMAT is a key of `IMPORTERS` or auto (detected from PATH's contents); every import is checked
against the clean base set before anything is written (docs/import.md).
"""

from __future__ import annotations

import argparse

from ..data.store import load_dataset_dir
from ..imports import IMPORTERS, import_dataset
from .common import add_data_root, out_dir, parse_params, writing


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `unlearnable import` sub-command to the parser."""
    formats = ", ".join(IMPORTERS)
    p = sub.add_parser(
        "import", help="import a released protected dataset (checked against its clean base set)",
        description=f"Formats: auto (detect from PATH), {formats}. See docs/import.md.")
    p.add_argument("format", metavar="FORMAT", choices=["auto", *IMPORTERS],
                   help=f"auto, {formats}")
    p.add_argument("path", metavar="PATH", help="the released file or directory")
    p.add_argument("--base", required=True, metavar="DATA",
                   help="clean training set the poison was made from (dataset name or directory)")
    p.add_argument("--out", required=True, metavar="DIR", type=out_dir, help="dataset directory to write")
    p.add_argument("--trust-labels", action="store_true",
                   help="keep labels the files carry even where they disagree with the base set")
    p.add_argument("--layout", choices=["NHWC", "NCHW"], default=None, help="npz: axis order of images")
    p.add_argument("--scale", choices=["1", "255"], default=None, help="npz: pixel range [0, 1] or [0, 255]")
    p.add_argument("--param", action="append", metavar="K=V", help="format option (see docs/import.md)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_root(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `unlearnable import` with the parsed arguments; the exit code."""
    params = parse_params(args.param)
    for key in ("layout", "scale"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    with writing(args.out):
        out = import_dataset(args.format, args.path, args.base, args.out, params=params,
                             data_root=args.data_root, trust_labels=args.trust_labels,
                             overwrite=args.overwrite, progress=False if args.no_progress else None)
    man = load_dataset_dir(out).meta["manifest"]
    v = man["verification"]
    pert = v["perturbation"]
    print(f"{man['method']}: {v['num_samples']} images ({'whole' if v['full_base'] else 'part of'} "
          f"{v['base']}), {v['images_changed']} changed, l_inf max {255 * pert['linf_max']:.1f}/255, "
          f"l2 mean {pert['l2_mean']:.3f}, {'class-wise' if v['class_wise'] else 'sample-wise'}, "
          f"labels from {v['labels']['from']} -> {out}")
    return 0
