"""Orthogonal Projection cost: our chunked projection vs the released code's way, and the
linear model's seconds against one epoch of final training.

    .venv/bin/python benchmarks/projection.py                 # 60,000 x 784 and 50,000 x 3,072
    .venv/bin/python benchmarks/projection.py --quick         # 10x smaller shapes
    .venv/bin/python benchmarks/projection.py --epoch         # + linear model vs a ConvNet epoch on Fashion-MNIST

The released way (utils_projection.project_data): a float64 copy of the data, then for each
direction q a full-size temporary, X = X - (X @ q)[:, None] * q[None, :]. Ours: X - (X Q) Q^T in
chunks into one float32 output. Peak memory is the growth of the process's max RSS over the
method (a fresh subprocess per method, after imports and after the uint8 data exist). Random
data: the cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def released_way(x_u8: np.ndarray, w: np.ndarray) -> np.ndarray:
    # float64 copy of the data (the released code converts to float64 before projecting)
    data = x_u8.reshape(len(x_u8), -1).astype(np.float64) / 255
    v = w / np.linalg.norm(w, axis=1, keepdims=True)
    q, _ = np.linalg.qr(v.T)
    for col in q.T:
        data -= (data @ col).reshape(-1, 1) * col.reshape(1, -1)
    return data


def ours(x_u8: np.ndarray, w: np.ndarray):
    import torch

    from unlearnable.attacks.ortho_proj import project, projection_basis

    q, _ = projection_basis(torch.from_numpy(w))
    return project(torch.from_numpy(x_u8), q)


def one(kind: str, n: int, d: int, k: int) -> dict:
    """Run one method on fresh random data in this process; report seconds and peak memory."""
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, d), dtype=np.uint8)
    w = rng.standard_normal((k, d))
    data_mb = x.nbytes / 2**20
    import scipy.linalg  # noqa: F401  (imports are not the method's time or memory)

    import unlearnable.attacks.ortho_proj  # noqa: F401

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    (released_way if kind == "released" else ours)(x, w)
    sec = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    return {"method": kind, "n": n, "d": d, "k": k, "seconds": sec, "peak_extra_mib": peak,
            "uint8_data_mib": data_mb}


def linear_vs_epoch() -> dict:
    """Seconds of the linear model (20 epochs, batch 1024) vs one ConvNet epoch (paper recipe)."""
    import torch

    from unlearnable import load_data
    from unlearnable.attacks.ortho_proj import LinearParams, fit_linear
    from unlearnable.train.recipe import get_recipe
    from unlearnable.train.run import spec_for, train_on

    ds = load_data("fashion-mnist")
    x, y = ds.uint8_tensor(), torch.from_numpy(ds.labels)
    t = time.perf_counter()
    fit_linear(x.flatten(1), y, 10, LinearParams(), seed=0)
    lin = time.perf_counter() - t
    recipe = get_recipe("paper").replace(epochs=1)
    t = time.perf_counter()
    train_on(ds, None, spec_for(ds, "convnet", recipe, 0), None, "cpu", False)
    ep = time.perf_counter() - t
    return {"linear_seconds": lin, "convnet_epoch_seconds": ep, "ratio": lin / ep}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epoch", action="store_true", help="also time the linear model vs a ConvNet epoch")
    ap.add_argument("--one", nargs=4, metavar=("KIND", "N", "D", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        kind, n, d, k = args.one
        print(json.dumps(one(kind, int(n), int(d), int(k))))
        return
    shapes = [(60_000, 784, 10), (50_000, 3_072, 10)]
    if args.quick:
        shapes = [(n // 10, d, k) for n, d, k in shapes]
    import torch

    print(f"threads: {torch.get_num_threads()}")
    for n, d, k in shapes:
        res = {}
        for kind in ("released", "ours"):
            out = subprocess.run([sys.executable, __file__, "--one", kind, str(n), str(d), str(k)],
                                 check=True, capture_output=True, text=True).stdout
            res[kind] = json.loads(out.strip().splitlines()[-1])
        r, o = res["released"], res["ours"]
        print(f"{n} x {d}, K={k} (uint8 data {r['uint8_data_mib']:.0f} MiB): released {r['seconds']:.2f} s, "
              f"peak +{r['peak_extra_mib']:.0f} MiB | ours {o['seconds']:.2f} s, peak +{o['peak_extra_mib']:.0f} MiB "
              f"| time ratio {r['seconds'] / o['seconds']:.1f}x, memory ratio "
              f"{r['peak_extra_mib'] / max(o['peak_extra_mib'], 1e-9):.1f}x")
    if args.epoch:
        e = linear_vs_epoch()
        print(f"linear model (Fashion-MNIST, 20 epochs, batch 1024): {e['linear_seconds']:.1f} s; one ConvNet "
              f"epoch (paper recipe): {e['convnet_epoch_seconds']:.1f} s; ratio {e['ratio']:.2f}")


if __name__ == "__main__":
    main()
