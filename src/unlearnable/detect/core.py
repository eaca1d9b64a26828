"""`detect(ds)`: is this dataset protected? A score in [0, 1] and a decision, without the clean data.

The measurements (`features.py`) are held-out errors of closed-form linear classifiers on views of
the set, cross-fitted between two halves drawn by content hash (so the answer does not depend on
the order of the samples). Four log-ratios compare the set with itself, never with an absolute
accuracy, so a set is not flagged for being easy (digits) nor cleared for being hard:

    quant   log((err on 2-bit images + c) / (err on raw + c))   a small shortcut does not survive
            the coarser grey levels; natural class structure does
    blur    the same with a [1, 2, 1] blur (high-frequency shortcuts)
    proj    the same after the classifier's own top directions are projected out and it is refit
            (the paper's Algorithm 1): a shortcut lives in a few directions, natural classes in many
    ncm     log((nearest-class-mean err on raw + c) / (the same on the high-pass residual + c)):
            a class-wise pattern *is* its class's mean residual

A logistic combination of the four (weights and the decision threshold at a stated false-positive
rate fitted by `benchmarks/detect_calibration.py`, shipped in `calibration.json`) gives the score.
Where the data cannot support a decision (too few samples per class for a held-out fit, or raw
pixels that predict the labels no better than chance: `cannot_judge`), the answer is "cannot
judge" with the reason; the score is still reported as evidence, but not weighed.
UDP (Zhu et al., "Detection and Defense of Unlearnable Examples", AAAI 2024, hala64/udp) measures
how fast a simple network fits the set on an 80/20 split; a ridge fit is the closed-form limit of
that fit, and the views replace UDP's absolute accuracy threshold, which depends on the dataset.

Per-sample scores (which samples carry the shortcut, for partially protected sets): the cross-fitted
margin of the raw classifier minus that of the 2-bit classifier, each in units of its own spread.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch

from ..core.errors import UnlearnableError
from ..core.registry import lookup
from ..data.imageset import ImageSet
from ..ladder import PerLevel
from .features import Moments, Ridge, blur_rows, content_order, margins, ncm_margins, projection_rows, views

log = logging.getLogger(__name__)

FEATURES = ("quant", "blur", "proj", "ncm")
# Added to every error before a ratio: below 0.5 % two errors are both "none" and compare equal.
SMOOTH = 0.005
PAPERS = ("Zhu et al., Detection and Defense of Unlearnable Examples, AAAI 2024 (UDP), "
          "https://arxiv.org/abs/2312.08898; Sandoval-Segura et al., NeurIPS 2023, §4.3-4.4, Table 6, Alg. 1")


@dataclass(frozen=True)
class DetectParams:
    """n: samples measured (a content-hashed subset; None: all). alpha: ridge strength as a share
    of the mean eigenvalue. bits: grey-level bits of the reference view."""

    n: int | None = 20000
    alpha: float = 1e-2
    bits: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 20:
            raise UnlearnableError(f"detect: n must be at least 20 samples, got {self.n}")
        if not 0 < self.alpha < 1e3:
            raise UnlearnableError(f"detect: alpha must be in (0, 1000), got {self.alpha}")
        if not 1 <= self.bits <= 7:
            raise UnlearnableError(f"detect: bits must be in [1, 7], got {self.bits}")


# The detector's row of the ladder's table: how many samples are measured at each rung.
# Everything else is the same at every level.
BUDGETS: PerLevel[DetectParams] = PerLevel({
    "tiny": DetectParams(n=2000),
    "quick": DetectParams(n=20000),
    "paper": DetectParams(n=None),
})


def params_for(level: str, seed: int = 0) -> DetectParams:
    """The detector's parameters at ladder `level`, drawing with `seed`."""
    p = lookup(BUDGETS, level, "level")
    return DetectParams(p.n, p.alpha, p.bits, seed)


def load_calibration() -> dict[str, Any]:
    """The shipped weights, bias and threshold (`benchmarks/detect_calibration.py --write`)."""
    text = resources.files(__package__).joinpath("calibration.json").read_text()
    return json.loads(text)


def measure(ds: ImageSet, p: DetectParams) -> dict[str, Any]:
    """The four features, the errors behind them, per-class errors, per-sample scores, and the
    support of the held-out fits (`support`: classes present, and a class's samples in the
    smaller of its two halves, on average over those classes)."""
    if len(ds) < 20:
        raise UnlearnableError(f"{ds.name or 'dataset'}: {len(ds)} samples; detect needs at least 20")
    k = ds.num_classes
    counts = np.bincount(ds.labels, minlength=k)
    if (counts > 0).sum() < 2:
        raise UnlearnableError(f"{ds.name or 'dataset'}: a single class; detect compares classes")
    order = content_order(ds, p.seed)
    take = order if p.n is None or p.n >= len(ds) else order[:p.n]
    # Halves alternate along the hashed order, and each stays in that order: a random split that
    # no sample order can change, down to the order of floating-point sums.
    halves = (take[0::2], take[1::2])
    sel = np.concatenate(halves)
    in_half = [np.bincount(ds.labels[h], minlength=k) for h in halves]
    x, y = ds.subset(sel).to_tensor()
    na = len(halves[0])
    a, b = torch.arange(na), torch.arange(na, len(sel))
    v = views(x, p.bits)
    del x

    # Each half's moments of the raw and the 2-bit pixels are the only passes over the data: the
    # blurred and projected classifiers are fitted to linear views of the raw moments and scored
    # as (x - mu) @ (the view's map applied to their weights) where the map is symmetric.
    raw = [Moments.of(v["raw"][tr], y[tr], k) for tr in (a, b)]
    quant = [Moments.of(v["quant"][tr], y[tr], k) for tr in (a, b)]
    blur = blur_rows(ds.chw)
    m = {name: torch.empty(len(sel), dtype=torch.float64) for name in ("raw", "quant", "blur", "proj")}
    for h, te in enumerate((b, a)):  # fitted on half h, scored on the other
        xc = v["raw"][te].double() - raw[h].mu
        fit = Ridge.from_moments(raw[h], p.alpha)
        m["raw"][te] = margins(xc @ fit.w, y[te])
        proj = projection_rows(fit.w)
        w_proj = proj(Ridge.from_moments(raw[h].mapped(proj), p.alpha).w.T).T  # P w, P = P'
        m["proj"][te] = margins(xc @ w_proj, y[te])
        w_blur = Ridge.from_moments(raw[h].mapped(blur), p.alpha).w
        m["blur"][te] = margins(blur(xc) @ w_blur, y[te])  # (x - mu) A = x A - mu A
        del xc
        m["quant"][te] = margins(Ridge.from_moments(quant[h], p.alpha).scores(v["quant"][te]), y[te])

    def ncm(xs, tr, te):
        return ncm_margins(xs[tr], y[tr], xs[te], y[te], k)

    for name, feat in (("ncm_raw", "raw"), ("ncm_highpass", "highpass")):
        m[name] = torch.empty(len(sel), dtype=torch.float64)
        for tr, te in ((a, b), (b, a)):
            m[name][te] = ncm(v[feat], tr, te)
    err = {name: float((mm <= 0).double().mean()) for name, mm in m.items()}

    def ratio(num: float, den: float) -> float:
        return float(np.log((num + SMOOTH) / (den + SMOOTH)))

    feats = {"quant": ratio(err["quant"], err["raw"]), "blur": ratio(err["blur"], err["raw"]),
             "proj": ratio(err["proj"], err["raw"]), "ncm": ratio(err["ncm_raw"], err["ncm_highpass"])}
    yy = y.numpy()
    per_class = []
    for c in range(k):
        on = yy == c
        if on.any():
            per_class.append({"class": c, "name": ds.classes[c], "n": int(on.sum()),
                              **{f"error_{name}": float((m[name][on] <= 0).double().mean()) for name in ("raw", "quant", "proj")}})
    per_sample = _sample_scores(m)
    present = (in_half[0] + in_half[1]) > 0
    support = {"classes_present": int(present.sum()),
               "per_class_half": float(np.minimum(*in_half)[present].mean())}
    return {"margins": m, "features": feats, "errors": err, "per_class": per_class, "n_measured": len(sel),
            "support": support,
            "sample_index": sel, "sample_score": per_sample,
            "directions": Ridge.from_moments(raw[0].pooled(raw[1]), p.alpha).w.T.float().reshape(k, *ds.chw).numpy()}


def _sample_scores(m: dict[str, torch.Tensor]) -> np.ndarray:
    """How much more surely the raw classifier gets a sample right than the classifiers that
    cannot see a shortcut (2-bit, top directions removed), in units of each one's spread; in [0, 1].
    (Of the margin differences tried on half-protected digits and Fashion-MNIST, this ranked
    protected samples highest on average; docs/detect.md has the measured precision and recall.)"""
    def z(t: torch.Tensor) -> torch.Tensor:
        return (t - t.mean()) / t.std().clamp_min(1e-12)

    return torch.sigmoid(2 * (z(m["raw"]) - (z(m["quant"]) + z(m["proj"])) / 2)).numpy()


def score_of(features: dict[str, float], cal: dict[str, Any]) -> float:
    """The calibrated logistic combination of the features, in [0, 1]."""
    t = cal["bias"] + sum(cal["weights"][f] * features[f] for f in FEATURES)
    return float(1 / (1 + np.exp(-t)))


# When the held-out fits have nothing to learn from, every error is near chance and every ratio
# of two errors compares noise: the score still comes out, but it is no evidence either way.
# Measured (tiny level, errors raw ridge / raw class means, samples per class per half):
#   digits, 1,437 images, 10 classes        6.0 % /  9.3 %, 68.3   judged
#   digits subsets of 300 (4 draws)        11-18 % / 10-15 %, 12.0-13.2   judged
#   Fashion-MNIST subsets of 500 and 1,500  35 % / 29 %, 22.8; 28 % / 31 %, 70.3   judged
#   digits relabelled to 1,000 classes     100 % / 100 %, 0.41 (chance 99.9 %)   cannot judge
#   digits with shuffled labels             88.8 % / 89.8 %, 67.4 (chance 90 %)   cannot judge
# A class needs a few samples on each side of the cross-fit to have a mean and a direction that
# the other half can test; 5 on average is under half of the smallest set judged above.
MIN_PER_CLASS_HALF = 5.0
# "Better than chance" (1 - 1/K for the K classes present) means by at least this much, and by
# CHANCE_SE standard errors of a guess's error rate at the measured count, whichever is more.
CHANCE_MARGIN = 0.05
CHANCE_SE = 3.0


def cannot_judge(r: dict[str, Any]) -> str | None:
    """Why `measure`'s result `r` supports no decision (one sentence), or None when it does.

    Two cases, either of which leaves the features comparing noise: too few samples per class in
    each half for a held-out fit (below MIN_PER_CLASS_HALF on average over the classes present),
    or raw pixels that predict the labels no better than chance in both raw views (the ridge
    classifier and the nearest class mean), so that there is no learnable signal whose
    robustness the other views could test. Neither case happens on a protected set: a shortcut
    makes the raw view's error low by construction.
    """
    s, e, n = r["support"], r["errors"], r["n_measured"]
    k = s["classes_present"]
    if s["per_class_half"] < MIN_PER_CLASS_HALF:
        return (f"{s['per_class_half']:.1f} samples of a class in each half on average ({k} classes among "
                f"{n} measured samples), fewer than the {MIN_PER_CLASS_HALF:g} a held-out fit needs")
    chance = 1 - 1 / k
    margin = max(CHANCE_MARGIN, CHANCE_SE * float(np.sqrt(chance * (1 - chance) / n)))
    if e["raw"] >= chance - margin and e["ncm_raw"] >= chance - margin:
        return (f"the raw pixels predict the labels no better than chance (held-out error {100 * e['raw']:.1f}% "
                f"ridge, {100 * e['ncm_raw']:.1f}% class means; chance {100 * chance:.1f}% for {k} classes)")
    return None


def decision_of(protected: bool | None) -> str:
    """The decision in words: "protected", "not detected as protected" or "cannot judge"."""
    return {True: "protected", False: "not detected as protected"}.get(protected, "cannot judge")


def detect(ds: ImageSet, level: str = "quick", seed: int = 0, params: DetectParams | None = None,
           calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Is `ds` protected? The score, the decision at the shipped threshold and the evidence.

    Returns score (float in [0, 1]), protected (bool, or None where the data cannot support a
    decision: `cannot_judge`), decision ("protected", "not detected as protected" or "cannot
    judge"), cannot_judge (the reason in one sentence, else None), support, threshold,
    fpr_target, features, errors, per_class, the measured sample count and settings; the score
    and features are reported as evidence in every case. `per_sample` (index into `ds` -> score)
    and `directions` (the classifier's rows as (K, C, H, W) images) are numpy arrays the caller
    may write or drop.
    """
    t0 = time.perf_counter()
    p = params or params_for(level, seed)
    cal = calibration or load_calibration()
    log.info("detect: measuring %s samples of %s", p.n if p.n is not None and p.n < len(ds) else len(ds),
             ds.name or "the dataset")
    r = measure(ds, p)
    score = score_of(r["features"], cal)
    why = cannot_judge(r)
    protected = None if why else bool(score >= cal["threshold"])
    if why:
        log.info("detect: cannot judge %s: %s", ds.name or "the dataset", why)
    per_sample = np.full(len(ds), np.nan, dtype=np.float32)
    per_sample[r["sample_index"]] = r["sample_score"]
    out = {
        "score": score, "protected": protected, "decision": decision_of(protected), "cannot_judge": why,
        "support": r["support"], "threshold": float(cal["threshold"]),
        "fpr_target": float(cal["fpr_target"]), "features": r["features"], "errors": r["errors"],
        "per_class": r["per_class"], "n_samples": len(ds), "n_measured": r["n_measured"],
        "level": level, "settings": asdict(p), "calibration": {k: cal[k] for k in ("weights", "bias", "command", "measured")
                                                                if k in cal},
        "method": "ridge classifiers cross-fitted on two hashed halves: raw vs 2-bit, blurred and "
                  "projected views; nearest class mean on raw vs high-pass",
        "paper": PAPERS, "seconds": round(time.perf_counter() - t0, 3),
        "per_sample": per_sample, "directions": r["directions"],
    }
    return out


def explain(res: dict[str, Any]) -> str:
    """The decision in one line a person can check."""
    e = res["errors"]
    if res["protected"] is None:
        head = (f"cannot judge: {res.get('cannot_judge') or 'the data cannot support a decision'}; "
                f"score {res['score']:.2f} not weighed against the threshold {res['threshold']:.2f}")
    else:
        head = (f"{decision_of(res['protected'])}: score {res['score']:.2f} (threshold {res['threshold']:.2f} at "
                f"{100 * res['fpr_target']:.0f}% false positives)")
    return (f"{head}; held-out error raw {100 * e['raw']:.1f}% "
            f"vs 2-bit {100 * e['quant']:.1f}%, blurred {100 * e['blur']:.1f}%, top directions removed "
            f"{100 * e['proj']:.1f}%; class means on high-pass {100 * e['ncm_highpass']:.1f}% "
            f"vs raw {100 * e['ncm_raw']:.1f}% ({res['n_measured']} samples)")
