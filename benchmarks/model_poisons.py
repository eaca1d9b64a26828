"""Model-based poisons on Fashion-MNIST: generation wall time and what a ConvNet learns from them.

For each method: `unlearnable poison METHOD --dataset fashion-mnist --subset N --level quick`
(ConvNet crafting model on CPU), then `unlearnable train DIR --recipe fast --epochs E`; the clean
reference trains on the same seeded subset left unprotected (`random-noise --fraction 0`).
Runs the CLI in subprocesses, so the figures are those of the documented commands. Protected sets
already in OUT are reused (their generation time then reads nan; the manifest keeps it).

    .venv/bin/python benchmarks/model_poisons.py --subset 3000 --epochs 10 --batch-size 128 --out runs/mp
`--level paper --methods em:mode=class` measures class-wise EM as the original runs it (its rounds
and the character of the noise: `delta` in each row). Prints a markdown table and writes
OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# A method may carry parameters: "em:mode=class" runs `poison em --param mode=class`.
METHODS = ["ntga", "tap", "em", "em:mode=class", "ops-em", "rem"]
CLI = [str(Path(sys.executable).with_name("unlearnable"))]


def sh(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(CLI + args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist", help="dataset name (default fashion-mnist)")
    ap.add_argument("--subset", type=int, default=1000)
    ap.add_argument("--out", default="/tmp/model-poisons-bench")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--level", default="quick", help="the poisons' compute level (default quick)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--arch", default=None, help="crafting and victim model (default: the CLI's, convnet on CPU)")
    ap.add_argument("--device", default=None, help="passed to poison and train (default: the CLI's)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for entry in ["clean", *a.methods.split(",")]:
        method, *params = entry.split(":")
        params = [kv for p in params for kv in p.split(";") if kv]
        m = "-".join([method] + [kv.split("=", 1)[1] for kv in params])  # em:mode=class -> em-class
        data = out / m
        if not data.exists():
            spec = (["random-noise", "--fraction", "0"] if m == "clean"
                    else [method, "--level", a.level, *[x for kv in params for x in ("--param", kv)],
                          *(["--param", f"arch={a.arch}"] if a.arch else [])])
            spec += ["--device", a.device] if a.device else []
            gen = sh(["poison", *spec, "--dataset", a.data, "--subset", str(a.subset),
                      "--out", str(data), "--no-progress"])
        else:
            gen = float("nan")
        man = json.loads((data / "manifest.json").read_text())
        run = out / f"run-{m}"
        sh(["train", str(data), "--recipe", "fast", "--epochs", str(a.epochs),
            *(["--batch-size", str(a.batch_size)] if a.batch_size else []),
            *(["--arch", a.arch] if a.arch else []), *(["--device", a.device] if a.device else []),
            "--out", str(run), "--no-progress"])
        res = json.loads((run / "result.json").read_text())
        info = man.get("info", {})
        rows.append({"method": m, "generate_seconds": round(gen, 1),
                     "generate_seconds_manifest": man["timing"]["generate_seconds"],
                     "test_accuracy": res["test_accuracy"], "train_accuracy": res["train_accuracy"],
                     "linf_max_255": round(man["perturbation_measured"]["linf_max"] * 255, 2),
                     "peak_memory": info.get("peak_memory"), "effective_params": info.get("effective_params"),
                     "rounds": info.get("rounds"), "delta": info.get("delta")})
        print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps({"subset": a.subset, "level": a.level, "cpu_count": os.cpu_count(),
                                                  "rows": rows}, indent=1))
    print("\n| method | generation (s) | ConvNet clean test acc. | train acc. | l_inf (x/255) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mem = (r["peak_memory"] or {}).get("process_max_rss_mib", "")
        print(f"| {r['method']} | {r['generate_seconds']} | {r['test_accuracy']:.4f} | "
              f"{r['train_accuracy']:.4f} | {r['linf_max_255']} | {mem} |")


if __name__ == "__main__":
    main()
