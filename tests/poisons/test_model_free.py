"""Poisons without a model: l_p bounds, determinism, class-wise structure, fraction, registry
facts, manifests, CLI, show.

Every registered poison is tested the moment it is registered (parametrized over POISONS), at
the ladder's tiny level (its registry preset or level table, as any user gets it), on three
shapes: 1x8x8 digits (real), 1x28x28 and 3x32x32 synthetic mid-grey images (no clipping, so
bounds can be checked exactly up to quantization).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from unlearnable import ImageSet, load_base, load_dataset_dir
from unlearnable.core.errors import UnlearnableError
from unlearnable.cli import main
from unlearnable.data.store import manifest_bound, manifest_level
from unlearnable.ladder import LEVELS
from unlearnable.poisons import (
    POISONS, PoisonContext, make_poison, poison_dataset, poisoned_mask, stored_poisoned_mask,
)
from unlearnable.poisons.ar import ar_run, matching_filter, response, start_values
from unlearnable.poisons.lsp import lsp_grid
from unlearnable.poisons.ops import corner_colours, ops_scores
from unlearnable.viz.grid import default_scale, grid_size

from helpers import delta_of

METHODS = sorted(POISONS)
# Every poison at its default parameters, plus the parameters that change a poison's kind.
VARIANTS = [(m, {}) for m in METHODS] + [("em", {"mode": "class"}), ("ops-em", {"mode": "sample"})]


def variants(kind: str) -> list:
    return [pytest.param(m, p, id="-".join([m, *p.values()])) for m, p in VARIANTS
            if POISONS[m].kind_of(p) == kind]


def tiny(method: str, base: ImageSet, seed: int = 0, fraction: float = 1.0, **params: str) -> ImageSet:
    """`method` at the ladder's tiny level: AR searches fewer filters (its preset), model-based
    poisons take a few steps (their level tables; their own tests live in test_model_based.py)."""
    return make_poison(method, base, params, seed=seed, fraction=fraction,
                       ctx=PoisonContext(seed=seed, level="tiny", progress=False))


def grey_set(n: int, c: int, h: int, w: int, k: int, seed: int = 0) -> ImageSet:
    """Images in [96, 160]: no perturbation used here reaches 0 or 255, so nothing clips."""
    rng = np.random.default_rng(seed)
    images = rng.integers(96, 161, size=(n, h, w, c), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % k
    return ImageSet(images, labels, [f"c{i}" for i in range(k)], f"grey-{c}x{h}x{w}")


@pytest.fixture(scope="module")
def grey28() -> ImageSet:
    return grey_set(60, 1, 28, 28, 10)


@pytest.fixture(scope="module")
def grey32() -> ImageSet:
    return grey_set(40, 3, 32, 32, 4, seed=1)


def check_bound(method: str, p: ImageSet, base: ImageSet, clipped: bool) -> None:
    info = p.meta["poison"]["info"]
    d = delta_of(p, base).reshape(len(base), -1)
    if info["norm"] == "linf":
        bound = info.get("eps", info.get("linf"))
        assert np.abs(d).max() <= math.floor(255 * bound + 1e-6)
    elif info["norm"] == "l2":
        l2 = np.sqrt((d.astype(np.float64) ** 2).sum(1)) / 255
        slack = 0.5 / 255 * math.sqrt(d.shape[1])  # rounding each value moves it <= half a level
        assert (l2 <= info["l2"] + slack).all()
        if not clipped:
            assert (l2 >= info["l2"] - slack).all()
    elif info["norm"] == "linf+l0":  # ops-em: within eps except one pixel per image
        dd = np.abs(delta_of(p, base)).max(axis=3).reshape(len(base), -1)
        assert (np.sort(dd, axis=1)[:, :-1] <= math.floor(255 * info["eps"] + 1e-6)).all()
    elif info["norm"] == "l0":
        pixels = (delta_of(p, base) != 0).any(axis=3).reshape(len(base), -1).sum(1)
        assert pixels.max() <= 1
    elif info["norm"] == "none":  # a transform, not x + delta (cuda): bounded by nothing
        assert not POISONS[method].additive and info["additive"] is False
    else:
        pytest.fail(f"{method}: unknown norm {info['norm']}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", ["digits", "grey28", "grey32"])
def test_shapes_and_bound(method, shape, request, digits_train):
    base = digits_train if shape == "digits" else request.getfixturevalue(shape)
    p = tiny(method, base)
    assert p.images.shape == base.images.shape and p.images.dtype == np.uint8
    assert np.array_equal(p.labels, base.labels) and np.array_equal(p.indices, base.indices)
    assert (p.images != base.images).any(axis=(1, 2, 3)).mean() > 0.9  # (nearly) all changed
    check_bound(method, p, base, clipped=shape == "digits")
    assert p.meta["poison"]["level"] == "tiny" and p.meta["poison"]["kind"] == POISONS[method].kind
    json.dumps(p.meta["poison"])  # the manifest record is plain JSON


@pytest.mark.parametrize("method", METHODS)
def test_seeded(method, digits_train):
    base = digits_train.subset(np.arange(300))
    a = tiny(method, base, seed=3)
    b = tiny(method, base, seed=3)
    assert np.array_equal(a.images, b.images)
    c = tiny(method, base, seed=4)
    assert np.array_equal(a.images, c.images) != POISONS[method].uses_seed


@pytest.mark.parametrize("method, params", variants("class-wise"))
def test_class_wise_one_pattern_per_class(method, params, grey28):
    if not POISONS[method].additive:
        pytest.skip("one transform per class, not one delta: tests/poisons/test_cuda.py checks it")
    p = tiny(method, grey28, **params)
    assert p.meta["poison"]["kind"] == "class-wise"
    d = delta_of(p, grey28)
    if p.meta["poison"]["info"]["norm"] == "l0":
        # OPS replaces a pixel: its class-wise pattern is the pixel's new value, not a delta.
        d = np.where(d != 0, p.images.astype(np.int16) + 1, 0)
    elif p.meta["poison"]["info"]["norm"] == "linf+l0":  # ops-em: compare all but the pixel
        for k, q in enumerate(p.meta["poison"]["info"]["pixels"]):
            d[(grey28.labels == k), q["row"], q["col"], :] = 0
    patterns = []
    for k in range(grey28.num_classes):
        dk = d[grey28.labels == k]
        assert (dk == dk[0]).all(), f"class {k} has more than one perturbation"
        patterns.append(dk[0])
    assert len({x.tobytes() for x in patterns}) == grey28.num_classes  # distinct per class


@pytest.mark.parametrize("method, params", variants("sample-wise"))
def test_sample_wise_differs_within_class(method, params, grey28):
    p = tiny(method, grey28, **params)
    assert p.meta["poison"]["kind"] == "sample-wise"
    d = delta_of(p, grey28)
    if p.meta["poison"]["info"]["norm"] == "linf+l0":  # ops-em: the class's pixel is set, not added
        for k, q in enumerate(p.meta["poison"]["info"]["pixels"]):
            d[(grey28.labels == k), q["row"], q["col"], :] = 0
    d0 = d[grey28.labels == 0]
    assert len({x.tobytes() for x in d0}) == len(d0)


@pytest.mark.parametrize("method", METHODS)
def test_fraction_leaves_the_rest_byte_identical(method, digits_train):
    base = digits_train.subset(np.arange(200))
    full = tiny(method, base, seed=5)
    part = tiny(method, base, seed=5, fraction=0.3)
    mask = poisoned_mask(len(base), 0.3, 5)
    assert mask.sum() == 60 == part.meta["poison"]["num_poisoned"]
    assert np.array_equal(part.images[~mask], base.images[~mask])
    assert np.array_equal(part.images[mask], full.images[mask])


def test_fraction_bounds(digits_train):
    with pytest.raises(UnlearnableError, match="fraction"):
        make_poison("regions", digits_train, {}, seed=0, fraction=1.5)
    assert poisoned_mask(10, 0.0, 0).sum() == 0 and poisoned_mask(10, 1.0, 0).all()


def test_regions_grid_and_params(grey28):
    for p_, r in ((4, 2), (16, 4), (9, 3)):
        d = delta_of(make_poison("regions", grey28, {"p": str(p_)}, seed=0), grey28)[0, ..., 0]
        # Near-equal regions along each axis: 28 = 14+14, 7*4, 9+9+10.
        assert len(np.unique(d, axis=0)) <= r and len(np.unique(d, axis=1).T) <= r
        assert set(np.unique(d)) <= {-8, 8}
    for bad in ("5", "0", "-4"):
        with pytest.raises(UnlearnableError, match="perfect square"):
            make_poison("regions", grey28, {"p": bad}, seed=0)
    with pytest.raises(UnlearnableError, match="unknown parameter"):
        make_poison("regions", grey28, {"q": "4"}, seed=0)


def test_lsp_patches(grey28, grey32, digits_train):
    assert lsp_grid(32, 32) == 4 and lsp_grid(28, 28) == 4 and lsp_grid(8, 8) == 2
    d = delta_of(make_poison("lsp", grey32, {}, seed=0), grey32).astype(np.float64)
    # Each 8x8 patch of each channel is one value (up to rounding: at most 1 grey level apart).
    patches = d.reshape(len(d), 4, 8, 4, 8, 3)
    spread = patches.max(axis=(2, 4)) - patches.min(axis=(2, 4))
    assert spread.max() <= 1
    info = make_poison("lsp", digits_train.subset(np.arange(50)), {}, seed=0).meta["poison"]["info"]
    assert info["grid"] == [2, 2] and info["l2"] == pytest.approx(8 * 6 / 255)


def test_ops_exactly_one_pixel_and_unique(digits_train, grey32):
    p = make_poison("ops", grey32, {}, seed=0)
    changed = (delta_of(p, grey32) != 0).any(axis=3).reshape(len(grey32), -1).sum(1)
    assert (changed == 1).all()  # mid-grey images never already hold a corner colour
    p = make_poison("ops", digits_train, {}, seed=0)
    pixels = p.meta["poison"]["info"]["pixels"]
    assert len({(q["row"], q["col"], tuple(q["colour"])) for q in pixels}) == 10
    for k, q in enumerate(pixels):
        imgs = p.images[digits_train.labels == k]
        assert (imgs[:, q["row"], q["col"], :] == q["colour"]).all()
        changed = (imgs != digits_train.images[digits_train.labels == k]).any(axis=3)
        changed[:, q["row"], q["col"]] = False
        assert not changed.any()  # nothing else moved


def test_ops_scores_match_the_original_criterion():
    rng = np.random.default_rng(0)
    x = rng.random((30, 3, 4, 5)).astype(np.float32)
    x[:, :, 0, 0] = 0.25  # a constant pixel: std 0
    s = ops_scores(torch.from_numpy(x)).numpy()
    cols = corner_colours(3).numpy()
    for pos in (0, 7, 19):
        r, q = divmod(pos, 5)
        for ci, col in enumerate(cols):
            dist = np.abs(col[None, :] - x[:, :, r, q].astype(np.float64))  # (n, C) as the original
            want = dist.mean() / dist.std() if dist.std() > 0 else np.inf
            assert s[pos, ci] == pytest.approx(want, rel=1e-9)


def test_ar_100_classes_finite_and_filters_annihilate_their_process():
    base = grey_set(200, 3, 8, 8, 100, seed=2)
    p = make_poison("ar", base, {"max_tries": "50"}, seed=0)
    info = p.meta["poison"]["info"]
    coefs = torch.tensor(info["coefficients"])
    assert coefs.shape == (100, 3, 3, 3) and torch.isfinite(coefs).all()
    assert (coefs[..., 2, 2] == 0).all()
    assert torch.allclose(coefs.sum(dim=(2, 3)), torch.ones(100, 3), atol=1e-5)
    assert len(info["search"]["classes"]) == 100
    check_bound("ar", p, base, clipped=True)
    # The matching filter responds ~0 to its own process and clearly to another class's.
    g = torch.Generator().manual_seed(0)
    top, left = start_values(2, 3, 8, 8, g)
    pats = ar_run(coefs[:2], top, left, 8, 8)
    pats = pats / pats.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    r = response(matching_filter(coefs[:2]), pats)
    assert r[0, 0] < 1e-3 and r[1, 1] < 1e-3
    assert r[0, 1] > 100 * r[0, 0]


def test_ar_linf_variant(grey28):
    p = tiny("ar", grey28, norm="linf")
    d = np.abs(delta_of(p, grey28)).reshape(len(grey28), -1).max(1)
    assert d.max() <= 8 and d.min() >= 7  # scaled to 8/255, then rounded and clamped


def test_context_checks():
    assert PoisonContext().level == "paper"  # the original's cost unless asked otherwise
    for bad in ("bogus", "huge", ""):
        with pytest.raises(UnlearnableError, match="level must be one of tiny, quick, paper") as e:
            PoisonContext(level=bad)
        assert len(str(e.value).splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# What the registry says about each poison


def test_registry_facts():
    model_based = {"em", "ops-em", "tap", "rem", "ntga"}
    model_free = {"random-noise", "regions", "lsp", "ops", "ar"}
    assert model_based | model_free <= set(POISONS)
    assert all(POISONS[m].model_based for m in model_based)
    assert not any(POISONS[m].model_based for m in model_free)
    for info in POISONS.values():
        assert set(info.presets) <= set(LEVELS)
        for lv in LEVELS:
            info.params(None, lv)  # every preset is valid parameters
    assert POISONS["ar"].preset("tiny") == {"max_tries": "100"}
    assert POISONS["ar"].params(None, "tiny").max_tries == 100
    assert POISONS["ar"].params(None, "paper").max_tries == 2000  # the paper's, untouched
    assert POISONS["ar"].params({"max_tries": "7"}, "tiny").max_tries == 7  # given wins
    with pytest.raises(UnlearnableError, match="level must be one of"):
        POISONS["ar"].preset("bogus")


def test_kind_of_follows_the_parameters():
    em = POISONS["em"]
    assert em.kind == "sample-wise" and em.kind_of() == "sample-wise"
    assert em.kind_of({"mode": "class"}) == "class-wise"
    assert em.kind_of(em.params({"mode": "class"})) == "class-wise"
    assert POISONS["ops-em"].kind == "class-wise"
    assert POISONS["ops-em"].kind_of({"mode": "sample"}) == "sample-wise"
    assert POISONS["regions"].kind_of({"p": "16"}) == "class-wise"
    assert POISONS["lsp"].kind == "sample-wise"


def _rewrite_manifest(d, fn) -> None:
    f = d / "manifest.json"
    man = json.loads(f.read_text())
    f.write_text(json.dumps(fn(man)))


def test_manifest_bound_and_level_new_and_old_keys(tmp_path):
    out = tmp_path / "regions"
    poison_dataset("regions", "digits", out, seed=0, subset=100, ctx=PoisonContext(level="tiny"))
    man = load_dataset_dir(out).meta["manifest"]
    assert man["bound"] == {"norm": "linf", "eps": 8 / 255} and man["level"] == "tiny"
    assert "budget" not in man and "compute_budget" not in man
    assert man["kind"] == "class-wise"
    assert manifest_bound(man) == man["bound"] and manifest_level(man) == "tiny"
    assert not (tmp_path / "regions.work").exists()  # model-free: no work directory
    # A manifest written before the rename ("budget" = the bound, "compute_budget" = the level)
    # still loads (the arrays' checksums do not cover the manifest) and reports both.
    _rewrite_manifest(out, lambda m: {**{k: v for k, v in m.items() if k not in ("bound", "level")},
                                      "budget": m["bound"], "compute_budget": "quick"})
    old = load_dataset_dir(out)
    assert manifest_bound(old.meta["manifest"]) == {"norm": "linf", "eps": 8 / 255}
    assert manifest_level(old.meta["manifest"]) == "quick"
    assert stored_poisoned_mask(old).all()
    assert main(["show", str(out), "--out", str(tmp_path / "g.png")]) == 0
    # Older model-based manifests kept the level only inside "info".
    assert manifest_level({"info": {"compute_budget": "paper"}}) == "paper"
    assert manifest_bound({}) is None and manifest_level({}) is None


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_poison_writes_a_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "regions"
    rc = main(["poison", "regions", "--dataset", "digits", "--out", str(out), "--seed", "2",
               "--param", "p=16", "--subset", "300", "--fraction", "0.5", "--no-progress"])
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("regions: 300 images (150 poisoned)") and str(out) in line
    ds = load_dataset_dir(out)
    man = ds.meta["manifest"]
    assert man["method"] == "regions" and man["params"] == {"p": 16, "eps": 8 / 255}
    assert man["seed"] == 2 and man["base"]["num_samples"] == 1437 and man["base"]["split"] == "train"
    assert man["subset"]["n"] == 300 and len(ds) == 300 and len(set(ds.indices)) == 300
    assert man["perturbation_measured"]["images_changed"] == 150
    mask = stored_poisoned_mask(ds)
    clean = load_base(ds)
    assert np.array_equal(ds.images[~mask], clean.images[~mask])
    assert not (ds.images[mask] == clean.images[mask]).all(axis=(1, 2, 3)).any()


def test_subset_is_drawn_with_its_own_seed_not_the_poisons(tmp_path):
    """--seed 0 and --seed 1 protect the same images (identical indices.npy), with different
    noise; --subset-seed moves the subset and is recorded in the manifest."""
    def made(name, *extra):
        out = tmp_path / name
        assert main(["poison", "random-noise", "--dataset", "digits", "--out", str(out), "--subset", "200",
                     "--no-progress", *extra]) == 0
        return out, load_dataset_dir(out)

    a_dir, a = made("s0", "--seed", "0")
    b_dir, b = made("s1", "--seed", "1")
    c_dir, c = made("sub7", "--seed", "0", "--subset-seed", "7")
    assert (a_dir / "indices.npy").read_bytes() == (b_dir / "indices.npy").read_bytes()
    assert not np.array_equal(a.images, b.images)  # the poison's own draws do follow --seed
    assert not np.array_equal(np.load(c_dir / "indices.npy"), np.load(a_dir / "indices.npy"))
    assert a.meta["manifest"]["subset"]["seed"] == b.meta["manifest"]["subset"]["seed"] == 0
    assert c.meta["manifest"]["subset"]["seed"] == 7 and c.meta["manifest"]["seed"] == 0


def test_cli_level_picks_the_preset(tmp_path):
    for flag in ("--level", "--budget"):  # --budget: the old spelling, still accepted
        out = tmp_path / flag.strip("-")
        assert main(["poison", "ar", "--dataset", "digits", "--out", str(out), "--subset", "100",
                     flag, "tiny", "--no-progress"]) == 0
        man = load_dataset_dir(out).meta["manifest"]
        assert man["level"] == "tiny" and man["params"]["max_tries"] == 100
        assert manifest_bound(man) == {"norm": "l2", "l2": 1.0}


def test_cli_class_wise_manifest(tmp_path):
    out = tmp_path / "rn"
    assert main(["poison", "random-noise", "--dataset", "digits", "--out", str(out), "--subset", "200"]) == 0
    assert load_dataset_dir(out).meta["manifest"]["perturbation_measured"]["class_wise"] is True


@pytest.mark.parametrize("argv, msg", [
    (["poison", "regions", "--dataset", "digits", "--param", "p=5"], "perfect square"),
    (["poison", "regions", "--dataset", "digits", "--param", "eps=abc"], "expected a number"),
    (["poison", "regions", "--dataset", "digits", "--param", "q=1"], "unknown parameter"),
    (["poison", "nope", "--dataset", "digits"], "unknown poison"),
    (["poison", "lsp", "--dataset", "digits", "--fraction", "2"], "fraction"),
    (["poison", "lsp", "--dataset", "digits", "--subset", "99999"], "asked for 99999"),
    (["poison", "lsp", "--dataset", "no-such-set"], "unknown dataset"),
])
def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys, argv, msg):
    out = tmp_path / "x"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and err.startswith("unlearnable: error:")
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written


def test_cli_refuses_existing_out_and_protected_base(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["poison", "ops", "--dataset", "digits", "--out", str(out)]) == 0
    assert main(["poison", "ops", "--dataset", "digits", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["poison", "ops", "--dataset", str(out), "--out", str(tmp_path / "b")]) == 2
    assert "already a protected dataset" in capsys.readouterr().err


def test_cli_list(capsys):
    assert main(["poison", "--list"]) == 0
    text = capsys.readouterr().out
    for name in POISONS:
        assert name in text
    assert "p=4" in text and "eps=8/255" in text


def test_show_writes_png_of_the_right_size(tmp_path, capsys):
    data = tmp_path / "lsp"
    assert main(["poison", "lsp", "--dataset", "digits", "--out", str(data), "--subset", "200"]) == 0
    png = tmp_path / "grid.png"
    assert main(["show", str(data), "--out", str(png), "--per-class", "2"]) == 0
    img = Image.open(png)
    assert img.size == grid_size(10, 2, (8, 8), default_scale((8, 8)))
    arr = np.asarray(img)
    assert arr.std() > 10  # not blank
    assert main(["show", str(data), "--out", str(png), "--classes", "0,3"]) == 0
    assert Image.open(png).size == grid_size(2, 1, (8, 8), default_scale((8, 8)))
    assert main(["show", str(data), "--out", str(png), "--classes", "0,30"]) == 2
    assert "out of range" in capsys.readouterr().err
