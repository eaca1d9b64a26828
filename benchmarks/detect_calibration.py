"""Calibrate and measure `unlearnable detect`: ROC AUC and TPR at 5 % FPR, overall and
leave-one-poison-out, and per-sample precision/recall on partially protected sets.

Positives: every registered poison (model-based ones at their `tiny` level, on the smallest
subsets), several seeds, fractions 1.0 and 0.5, Fashion-MNIST and digits, several subset sizes.
Negatives: the same clean subsets, and after benign processing: JPEG (quality 75), resizing
(down to 3/4 and back), 5 % label noise, augmentation (random crop with padding, plus a mirror
where the dataset allows it), and Gaussian sensor noise (sigma 2/255).

    PYTHONPATH=src .venv/bin/python benchmarks/detect_calibration.py --out runs/detect-cal --write

writes OUT/rows.json (every set's features), OUT/summary.json, OUT/roc.png, prints the tables,
and with --write replaces src/unlearnable/detect/calibration.json (the shipped weights, bias and
threshold). The detector runs at its `tiny` settings (every sample of a subset up to 2,000).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unlearnable.data.sources import facts_for
from unlearnable.data.imageset import ImageSet, to_uint8
from unlearnable.data.resolve import load_data
from unlearnable.data.subsets import random_subset
from unlearnable.detect.core import FEATURES, measure, params_for
from unlearnable.poisons import POISONS, PoisonContext, make_poison, poisoned_mask

SIZES = {"fashion-mnist": (500, 1000, 2000), "digits": (600, 1200, 1437)}  # 1437: all of digits' train split
SEEDS = (0, 1, 2)
FPR = 0.05


def jpeg(ds: ImageSet, quality: int = 75) -> ImageSet:
    out = np.empty_like(ds.images)
    for i, im in enumerate(ds.images):
        buf = io.BytesIO()
        Image.fromarray(im[..., 0] if ds.channels == 1 else im).save(buf, format="JPEG", quality=quality)
        a = np.asarray(Image.open(buf))
        out[i] = a[..., None] if a.ndim == 2 else a
    return ds.replace(out)


def resize(ds: ImageSet, factor: float = 0.75) -> ImageSet:
    x = ds.to_tensor()[0]
    h, w = ds.image_size
    small = torch.nn.functional.interpolate(x, size=(max(1, round(h * factor)), max(1, round(w * factor))),
                                            mode="bilinear", antialias=True, align_corners=False)
    return ds.replace(to_uint8(torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear",
                                                               align_corners=False)))


def label_noise(ds: ImageSet, seed: int, rate: float = 0.05) -> ImageSet:
    rng = np.random.default_rng([seed, 7])
    y = ds.labels.copy()
    flip = rng.random(len(y)) < rate
    y[flip] = (y[flip] + rng.integers(1, ds.num_classes, flip.sum())) % ds.num_classes
    return ImageSet(ds.images, y, ds.classes, ds.name, ds.indices)


def augment(ds: ImageSet, seed: int) -> ImageSet:
    from unlearnable.train.augment import batch_crop, batch_flip_lr

    g = torch.Generator().manual_seed(seed)
    x = ds.to_tensor()[0]
    f = facts_for(ds)
    x = batch_crop(x, g, padding=max(1, min(4, ds.image_size[0] // 8)))
    if f.hflip:
        x = batch_flip_lr(x, g)
    return ds.replace(to_uint8(x))


def sensor_noise(ds: ImageSet, seed: int, sigma: float = 2 / 255) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    x = ds.to_tensor()[0]
    return ds.replace(to_uint8(x + sigma * torch.randn(x.shape, generator=g)))


NEGATIVES = {"clean": lambda ds, s: ds, "jpeg": lambda ds, s: jpeg(ds), "resize": lambda ds, s: resize(ds),
             "label-noise": label_noise, "augment": augment, "sensor-noise": sensor_noise}


def features_of(ds: ImageSet) -> tuple[dict[str, float], dict[str, float], np.ndarray, np.ndarray]:
    r = measure(ds, params_for("tiny"))
    return r["features"], r["errors"], r["sample_index"], r["sample_score"]


def build(args: argparse.Namespace) -> list[dict]:
    rows = []
    log = logging.getLogger("detect-cal")
    for dname, sizes in SIZES.items():
        full = load_data(dname, "train")
        for size in sizes:
            if args.only and f"{dname}:{size}" not in args.only.split(","):
                continue
            for seed in SEEDS[:args.seeds]:
                base = full.subset(random_subset(full, min(size, len(full)), seed))
                for neg, fn in NEGATIVES.items():
                    f, e, _, _ = features_of(fn(base, seed))
                    rows.append({"label": 0, "kind": neg, "dataset": dname, "size": len(base), "seed": seed,
                                 "fraction": 0.0, "features": f, "errors": e})
                for method, info in POISONS.items():
                    # Model-based crafting at its tiny level on the smallest subsets, one seed.
                    if info.model_based and (size != sizes[0] or seed >= args.model_seeds):
                        continue
                    made = crafted(method, base, seed, Path(args.out) / "sets" / f"{dname}-{size}-{seed}-{method}.npy")
                    for frac in (1.0, 0.5):
                        mask = poisoned_mask(len(base), frac, seed)
                        ds = base.replace(np.where(mask[:, None, None, None], made.images, base.images))
                        f, e, idx, s = features_of(ds)
                        row = {"label": 1, "kind": method, "dataset": dname, "size": len(base), "seed": seed,
                               "fraction": frac, "features": f, "errors": e}
                        if frac < 1:
                            row["samples"] = sample_quality(mask[idx], s)
                        rows.append(row)
                log.info("%s n=%d seed %d: %d rows so far", dname, size, seed, len(rows))
    return rows


def crafted(method: str, base: ImageSet, seed: int, keep: Path) -> ImageSet:
    """The poison of `base` at its tiny level, kept on disk so a rerun does not craft it again."""
    if keep.is_file():
        return base.replace(np.load(keep, allow_pickle=False))
    t = time.perf_counter()
    made = make_poison(method, base, None, seed, 1.0, PoisonContext(seed=seed, level="tiny"))
    logging.getLogger("detect-cal").info("%s n=%d seed %d: made in %.1fs", method, len(base), seed,
                                         time.perf_counter() - t)
    keep.parent.mkdir(parents=True, exist_ok=True)
    np.save(keep, made.images, allow_pickle=False)
    return made


def sample_quality(mask: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    pred = score >= 0.5
    tp = float((pred & mask).sum())
    return {"precision": tp / max(pred.sum(), 1), "recall": tp / max(mask.sum(), 1),
            "auc": float(roc_auc_score(mask, score))}


def fit(rows: list[dict]) -> dict:
    """Logistic weights on the features, and the threshold with at most FPR false positives."""
    from sklearn.linear_model import LogisticRegression

    x = np.array([[r["features"][f] for f in FEATURES] for r in rows])
    y = np.array([r["label"] for r in rows])
    # Balanced classes: dozens of poisons against six negative kinds.
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(x, y)
    cal = {"weights": dict(zip(FEATURES, map(float, lr.coef_[0]))), "bias": float(lr.intercept_[0]),
           "fpr_target": FPR}
    cal["threshold"] = threshold_at(scores(rows, cal)[y == 0], FPR)
    return cal


def scores(rows: list[dict], cal: dict) -> np.ndarray:
    t = np.array([cal["bias"] + sum(cal["weights"][f] * r["features"][f] for f in FEATURES) for r in rows])
    return 1 / (1 + np.exp(-t))


def threshold_at(neg: np.ndarray, fpr: float) -> float:
    """A threshold that flags at most `fpr` of `neg` (score >= threshold flags): halfway between
    the highest negative it must clear and the next one up, so that a negative is not decided by
    the last bit of a float sum (every threshold in that gap has the same measured FPR)."""
    s = np.sort(neg)[::-1]
    allowed = int(np.floor(fpr * len(s)))
    if allowed >= len(s):
        return 0.0
    upper = s[allowed - 1] if allowed > 0 else 1.0
    return float((s[allowed] + upper) / 2)


def evaluate(rows: list[dict], cal: dict) -> dict:
    from sklearn.metrics import roc_auc_score

    y = np.array([r["label"] for r in rows])
    s = scores(rows, cal)
    flag = s >= cal["threshold"]
    return {"auc": float(roc_auc_score(y, s)), "tpr": float(flag[y == 1].mean()), "fpr": float(flag[y == 0].mean())}


def unique(rows: list[dict]) -> list[dict]:
    """Each set once: a subset as large as its dataset is the same set under every seed, and a
    deterministic processing of it too (the detector measures it with its own fixed seed)."""
    seen, out = set(), []
    for r in rows:
        key = (r["kind"], r["dataset"], r["size"], r["fraction"], json.dumps(r["features"], sort_keys=True))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def summarize(rows: list[dict]) -> dict:
    from sklearn.metrics import roc_auc_score

    rows = unique(rows)

    cal = fit(rows)
    overall = evaluate(rows, cal)
    neg = [r for r in rows if r["label"] == 0]
    per, lopo_s, lopo_y = {}, [], []
    for method in POISONS:
        pos = [r for r in rows if r["kind"] == method]
        if not pos:
            continue
        train = [r for r in rows if r["kind"] != method]
        c = fit(train)  # thresholds fitted without this poison
        sp, sn = scores(pos, c), scores(neg, c)
        lopo_s += list(sp)
        lopo_y += [1] * len(sp)
        shipped = scores(pos, cal)
        per[method] = {
            "n": len(pos), "auc": float(roc_auc_score([1] * len(sp) + [0] * len(sn), list(scores(pos, cal)) + list(scores(neg, cal)))),
            "tpr": float((shipped >= cal["threshold"]).mean()),
            "lopo_auc": float(roc_auc_score([1] * len(sp) + [0] * len(sn), list(sp) + list(sn))),
            "lopo_tpr": float((sp >= c["threshold"]).mean()),
            "tpr_fraction_1": float((shipped[[r["fraction"] == 1 for r in pos]] >= cal["threshold"]).mean()),
            "tpr_fraction_0.5": float((shipped[[r["fraction"] == 0.5 for r in pos]] >= cal["threshold"]).mean()),
        }
    # Pooled leave-one-poison-out: each positive scored by the fit that never saw its poison,
    # negatives by the fit on everything (they are in every fit).
    sn = scores(neg, cal)
    lopo = {"auc": float(roc_auc_score(lopo_y + [0] * len(sn), lopo_s + list(sn))),
            "tpr": float(np.mean([per[m]["lopo_tpr"] * per[m]["n"] for m in per]) * len(per) / max(sum(per[m]["n"] for m in per), 1))}
    neg_kinds = {k: float((scores([r for r in neg if r["kind"] == k], cal) >= cal["threshold"]).mean())
                 for k in NEGATIVES}
    samples = {}
    for method in POISONS:
        q = [r["samples"] for r in rows if r["kind"] == method and "samples" in r]
        if q:
            samples[method] = {k: float(np.mean([v[k] for v in q])) for k in ("precision", "recall", "auc")}
    return {"calibration": cal, "overall": overall, "leave_one_poison_out": lopo, "per_poison": per,
            "negatives_flagged": neg_kinds, "per_sample": samples, "n_positive": int(sum(r["label"] for r in rows)),
            "n_negative": len(neg), "lopo_scores": {"pos": lopo_s, "neg": list(map(float, sn))}}


def plot(rows: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y = [r["label"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    fp, tp, _ = roc_curve(y, scores(rows, summary["calibration"]))
    ax.plot(fp, tp, label=f"fitted on all (AUC {summary['overall']['auc']:.3f})")
    ls = summary["lopo_scores"]
    fp, tp, _ = roc_curve([1] * len(ls["pos"]) + [0] * len(ls["neg"]), ls["pos"] + ls["neg"])
    ax.plot(fp, tp, ls="--", label=f"leave-one-poison-out (AUC {summary['leave_one_poison_out']['auc']:.3f})")
    ax.axvline(FPR, c="grey", lw=0.8, ls=":")
    ax.set_xlabel("false-positive rate (clean and benignly processed sets)")
    ax.set_ylabel("true-positive rate (protected sets)")
    ax.set_title("unlearnable detect: Fashion-MNIST and digits subsets")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(s: dict) -> str:
    lines = [f"positives {s['n_positive']}, negatives {s['n_negative']}",
             (f"overall: AUC {s['overall']['auc']:.3f}, TPR at the shipped threshold {100 * s['overall']['tpr']:.1f}% "
              f"(FPR {100 * s['overall']['fpr']:.1f}%)"),
             f"leave-one-poison-out: AUC {s['leave_one_poison_out']['auc']:.3f}, TPR {100 * s['leave_one_poison_out']['tpr']:.1f}%",
             "", "| poison | sets | AUC | TPR @5% FPR | fraction 1.0 | fraction 0.5 | LOPO AUC | LOPO TPR |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, v in s["per_poison"].items():
        lines.append(f"| {m} | {v['n']} | {v['auc']:.3f} | {100 * v['tpr']:.0f}% | {100 * v['tpr_fraction_1']:.0f}% | "
                     f"{100 * v['tpr_fraction_0.5']:.0f}% | {v['lopo_auc']:.3f} | {100 * v['lopo_tpr']:.0f}% |")
    lines += ["", "| negative | flagged |", "|---|---:|"]
    lines += [f"| {k} | {100 * v:.0f}% |" for k, v in s["negatives_flagged"].items()]
    lines += ["", "| poison (fraction 0.5) | sample precision | sample recall | sample AUC |", "|---|---:|---:|---:|"]
    lines += [f"| {m} | {100 * v['precision']:.0f}% | {100 * v['recall']:.0f}% | {v['auc']:.3f} |"
              for m, v in s["per_sample"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/detect-calibration")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds per subset (default 3)")
    ap.add_argument("--model-seeds", type=int, default=1, help="seeds for model-based poisons (default 1)")
    ap.add_argument("--rows", default=None, help="reuse the rows.json of an earlier run (refit only)")
    ap.add_argument("--only", default=None, help="build only these DATASET:SIZE entries (with --merge: add rows)")
    ap.add_argument("--merge", default=None, help="rows.json of an earlier run to add the new rows to")
    ap.add_argument("--write", action="store_true", help="write the package's calibration.json")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("unlearnable").setLevel(logging.WARNING)
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = json.loads(Path(a.rows).read_text()) if a.rows else build(a)
    if a.merge:
        rows = json.loads(Path(a.merge).read_text()) + rows
    (out / "rows.json").write_text(json.dumps(rows))
    s = summarize(rows)
    s["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps({k: v for k, v in s.items() if k != "lopo_scores"}, indent=1))
    plot(unique(rows), s, out / "roc.png")
    print(markdown(s))
    if a.write:
        cal = dict(s["calibration"])
        cal["command"] = ("PYTHONPATH=src .venv/bin/python benchmarks/detect_calibration.py "
                          f"--seeds {a.seeds} --model-seeds {a.model_seeds} --write")
        cal["measured"] = {"auc": s["overall"]["auc"], "tpr": s["overall"]["tpr"],
                           "lopo_auc": s["leave_one_poison_out"]["auc"], "lopo_tpr": s["leave_one_poison_out"]["tpr"],
                           "positives": s["n_positive"], "negatives": s["n_negative"]}
        dest = Path(__file__).resolve().parents[1] / "src" / "unlearnable" / "detect" / "calibration.json"
        dest.write_text(json.dumps(cal, indent=1) + "\n")
        print(f"-> {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
