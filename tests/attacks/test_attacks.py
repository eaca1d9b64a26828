"""Attacks beyond orthogonal projection: PGD, adversarial training, squeezing, augmentation.

Parametrized over the registries, so a newly registered attack or augmentation is tested at once.
"""

import json

import numpy as np
import pytest
import torch

from unlearnable import build_model, load_dataset_dir
from unlearnable.attacks import ATTACKS, AttackContext, squeeze
from unlearnable.attacks.squeeze import bit_depth_reduce, grayscale, jpeg_compress
from unlearnable.core.errors import UnlearnableError
from unlearnable.kinds import run_attack
from unlearnable.poisons import poison_dataset
from unlearnable.train.pgd import fgsm_rs, pgd, project_delta

from helpers import check_docstring_template


def _trained_convnet(ds, recipe):
    from unlearnable import fit

    torch.manual_seed(0)
    m = build_model("convnet", 10, 1, 8)
    fit(m, (ds.uint8_tensor(), torch.from_numpy(ds.labels)), None, recipe.replace(epochs=3), 0, progress=False)
    return m.eval()


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_stays_in_budget_and_raises_the_loss(digits_train, quick_recipe, norm, eps):
    model = _trained_convnet(digits_train, quick_recipe)
    x, y = digits_train.to_tensor()
    x, y = x[:200], y[:200]
    x_adv = pgd(model, x, y, eps=eps, steps=10, norm=norm, gen=torch.Generator().manual_seed(0))
    d = (x_adv - x).flatten(1)
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-6
    else:
        assert d.norm(dim=1).max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(x_adv), y) > ce(model(x), y) + 0.1
    # Minimizing goes the other way.
    x_min = pgd(model, x, y, eps=eps, steps=10, norm=norm, minimize=True, random_start=False)
    with torch.no_grad():
        assert ce(model(x_min), y) < ce(model(x), y)


def test_fgsm_rs_is_one_step_from_a_random_start_inside_the_ball(digits_train, quick_recipe):
    model = _trained_convnet(digits_train, quick_recipe)
    x, y = digits_train.to_tensor()
    x, y = x[:200], y[:200]
    eps = 8 / 255
    x_adv = fgsm_rs(model, x, y, eps=eps, gen=torch.Generator().manual_seed(1))
    d = x_adv - x
    assert d.abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    # Wong et al.'s step is 10/255 at 8/255 (larger than the ball's radius): where the image range
    # does not clip it, most pixels end on the ball's faces.
    inside = (x > eps) & (x < 1 - eps)
    assert (d[inside].abs() > eps - 1e-6).float().mean() > 0.5
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(x_adv), y) > ce(model(x), y) + 0.1
    # The same draw and the same step as one PGD step of 1.25 eps.
    again = pgd(model, x, y, eps, 1.25 * eps, 1, gen=torch.Generator().manual_seed(1))
    assert torch.equal(again, x_adv)


def test_adv_train_at_quick_is_free_at_the_cost_of_standard_training_and_paper_keeps_pgd():
    info = ATTACKS["adv-train"]
    quick, paper = info.params(info.preset("quick")), info.params(info.preset("paper"))
    assert (quick.adversary, quick.steps, quick.replays, quick.step_size()) == ("free", 1, 3, 8 / 255)
    assert (paper.adversary, paper.steps) == ("pgd", 3)
    fgsm = info.params({"adversary": "fgsm-rs", "steps": "1"})
    assert fgsm.step_size() == 1.25 * 8 / 255
    assert info.cost_of(quick) == 1 and info.cost_of(fgsm) == 2 and info.cost_of(paper) == 4
    from unlearnable import UnlearnableError

    for bad, match in (({"adversary": "fgsm-rs"}, "fgsm-rs takes one step"),
                       ({"adversary": "free"}, "free takes one step"),
                       ({"adversary": "free", "steps": "1", "replays": "0"}, "replays must be an integer >= 1"),
                       ({"replays": "2"}, "replays is Free adversarial training's"),
                       ({"adversary": "trades"}, "adversary must be")):
        with pytest.raises(UnlearnableError, match=match):
            info.params(bad)


def test_free_loss_moves_its_perturbation_by_the_training_steps_gradient(digits_train):
    """One training step of Free adversarial training: the loss is the model's on x + delta, and
    its backward pass alone moves delta by alpha * sign(grad) inside the ball (Shafahi et al.)."""
    from unlearnable.train.pgd import FreeLoss

    torch.manual_seed(0)
    model = build_model("convnet", 10, 1, 8)
    x = digits_train.uint8_tensor()[:32].float() / 255
    y = torch.from_numpy(digits_train.labels[:32])
    eps = 8 / 255
    free = FreeLoss(eps, eps, replays=2)
    loss, logits = free(model, x, y, torch.Generator())
    assert torch.count_nonzero(free.delta) == 0  # the first minibatch meets a zero perturbation
    loss.backward()
    d = free.delta
    assert d.shape == x.shape and torch.all(d.abs() <= eps + 1e-7)
    assert (d.abs() > eps - 1e-6).float().mean() > 0.9  # one step of eps from zero: on the faces
    probe = x.clone().requires_grad_(True)  # the same gradient, taken directly
    torch.nn.functional.cross_entropy(model(probe), y).backward()
    moved = d != 0
    assert torch.equal(d[moved].sign(), probe.grad[moved].sign())
    assert all(p.grad is not None for p in model.parameters())  # the same pass trains the weights
    # A smaller minibatch uses the buffer's first rows; the rest carries over.
    free(model, x[:8], y[:8], torch.Generator())[0].backward()
    assert torch.equal(free.delta[8:], d[8:])


@pytest.mark.parametrize("shape", [(30, 28, 28), (30, 13, 21), (9, 8, 8), (5, 7, 9)])
@pytest.mark.parametrize("quality", [10, 75])
def test_jpeg_of_grey_images_is_what_coding_each_alone_gives(monkeypatch, shape, quality):
    """Grey images are coded side by side in mosaics; every pixel must be what one JPEG per image
    gives (random pixels: the hardest case for blocks that leak into each other)."""
    from PIL import Image
    import io

    monkeypatch.setattr(squeeze, "MOSAIC_IMAGES", 7)  # several mosaics, the last one partly empty
    img = np.random.default_rng(0).integers(0, 256, size=(*shape, 1), dtype=np.uint8)
    alone = []
    for im in img[..., 0]:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=quality)
        alone.append(np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    got = jpeg_compress(img, quality)
    assert got.shape == img.shape and np.array_equal(got[..., 0], np.stack(alone))


def test_project_delta_l2_only_shrinks():
    d = torch.randn(4, 3, 5, 5)
    p = project_delta(d, 1.0, "l2")
    assert torch.allclose(p.flatten(1).norm(dim=1), torch.ones(4), atol=1e-5)
    small = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * 0.5
    assert torch.allclose(project_delta(small, 1.0, "l2"), small)


@pytest.mark.parametrize("channels", [1, 3])
def test_squeezes_keep_shape_range_and_change_images(channels):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(16, 32, 32, channels), dtype=np.uint8)
    for out in (jpeg_compress(img, 10), bit_depth_reduce(img, 2), grayscale(img)):
        assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(jpeg_compress(img, 10), img)
    assert set(np.unique(bit_depth_reduce(img, 2))) <= {0, 85, 170, 255}
    g = grayscale(img)
    if channels == 1:
        assert np.array_equal(g, img)  # a no-op on grey data
    else:
        assert (g == g[..., :1]).all()  # every channel the same


def test_grayscale_attack_on_one_channel_data_says_it_is_a_no_op(tmp_path, digits_train, digits_test, quick_recipe):
    from unlearnable import UnlearnableError

    assert "no-op" in ATTACKS["grayscale"].applies_to(digits_train)
    assert ATTACKS["grayscale"].applies_to(_rgb(digits_train)) is None
    ctx = AttackContext(digits_train, digits_test, "convnet", quick_recipe.replace(epochs=1), 0,
                        tmp_path / "g", progress=False)
    with pytest.raises(UnlearnableError, match="no-op") as e:
        run_attack("grayscale", ctx)
    assert "\n" not in str(e.value) and not (tmp_path / "g").exists()


def _rgb(ds):
    """The same images on three channels (for attacks that do nothing on grey data)."""
    return ds.replace(np.repeat(ds.images, 3, axis=3))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_runs_and_writes_its_result(tmp_path, name, digits_train, digits_test, quick_recipe):
    """Every registered attack, at its tiny preset, on data it applies to; a rerun reuses it."""
    info = ATTACKS[name]
    small, test = digits_train.subset(np.arange(400)), digits_test
    if info.applies_to(small):
        small, test = _rgb(small), _rgb(test)
    if info.applies_to(small):  # applies to no data here: an optional extra is not installed
        pytest.skip(info.applies_to(small))
    ctx = AttackContext(small, test, "convnet", quick_recipe.replace(epochs=1), 0, tmp_path,
                        progress=False, clean=small, data_name="digits")
    r = run_attack(name, ctx, info.preset("tiny"))
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["attack"] == name and 0 <= saved["test_accuracy"] <= 1
    assert saved["test_accuracy_best"] >= saved["test_accuracy"]
    assert r["seconds_total"] > 0
    assert info.cost_of(info.preset("tiny")) >= 1.0 and isinstance(info.order, int)
    if not info.transforms_test:  # only attacks that say so transform test inputs
        assert saved.get("test_accuracy_transformed_test") is None
    for rel in info.artifacts.values():
        assert (tmp_path / rel).is_file(), rel
    # Reused as it is: the same identity is not trained again.
    assert run_attack(name, ctx, info.preset("tiny"))["finished"] == saved["finished"]


def test_attack_all_on_other_data_into_the_same_dir_does_not_report_the_first(
        tmp_path, digits_train, digits_test, quick_recipe):
    """`attack all A --out X` then `attack all B --out X`: B is refused, never given A's numbers."""
    from unlearnable import UnlearnableError
    from unlearnable.kinds import run_all

    a = digits_train.subset(np.arange(300))
    b = a.replace(255 - a.images)
    r = quick_recipe.replace(epochs=1)
    first = run_all(AttackContext(a, digits_test, "convnet", r, 0, tmp_path, progress=False), ["mean-sub"])
    assert [row["attack"] for row in first["rows"]] == ["none", "mean-sub"]
    with pytest.raises(UnlearnableError, match="other data"):
        run_all(AttackContext(b, digits_test, "convnet", r, 0, tmp_path, progress=False), ["mean-sub"])
    # The same data again is reused, not retrained.
    again = run_all(AttackContext(a, digits_test, "convnet", r, 0, tmp_path, progress=False), ["mean-sub"])
    assert again["rows"] == first["rows"]


def test_unknown_attack_and_bad_params_are_clear_errors(tmp_path, digits_train, digits_test, quick_recipe):
    from unlearnable import UnlearnableError

    ctx = AttackContext(digits_train, digits_test, "convnet", quick_recipe, 0, tmp_path, progress=False)
    with pytest.raises(UnlearnableError, match="unknown attack"):
        run_attack("nope", ctx)
    with pytest.raises(UnlearnableError, match="unknown parameter 'quality'"):
        run_attack("adv-train", ctx, {"quality": "3"})
    with pytest.raises(UnlearnableError, match="norm must be"):
        run_attack("adv-train", ctx, {"norm": "l3"})


def test_adversarial_training_beats_standard_training_on_class_wise_noise(tmp_path, digits_test):
    """Regions-4 at 32/255 on digits: the shortcut is inside the adversary's ball, so adversarial
    training at the same radius learns the digits where standard training takes the shortcut."""
    from unlearnable import RECIPES, load_dataset_dir, poison_dataset

    prot = load_dataset_dir(poison_dataset("regions", "digits", tmp_path / "p", seed=0,
                                           params={"eps": "32/255"}))
    recipe = RECIPES["tiny"].replace(epochs=10, flip=False)
    acc = {}
    adv = {"eps": "32/255", "eval_samples": "100"}
    for name, attack, params in (("none", "none", {}), ("pgd", "adv-train", adv),
                                 ("fgsm-rs", "adv-train", {**adv, "adversary": "fgsm-rs", "steps": "1"}),
                                 ("free", "adv-train", {**adv, "adversary": "free", "steps": "1", "replays": "3"})):
        ctx = AttackContext(prot, digits_test, "convnet", recipe, 0, tmp_path / name, progress=False)
        acc[name] = run_attack(attack, ctx, params)
    for name in ("pgd", "fgsm-rs", "free"):  # the single-step adversaries erase the shortcut too
        assert acc[name]["test_accuracy"] > acc["none"]["test_accuracy"] + 0.02, (name, acc)
        assert 0 <= acc[name]["test_pgd_accuracy"] <= 1


def test_attack_all_compares_attacks_and_reports_cost(tmp_path, capsys, digits_train):
    from unlearnable import save_dataset
    from unlearnable.cli import main

    data = save_dataset(tmp_path / "d", digits_train.subset(np.arange(300)), {"method": "none",
                                                                              "base": {"name": "digits"}})
    rc = main(["attack", "all", str(data), "--attacks", "jpeg,bit-depth", "--recipe", "tiny", "--epochs", "1",
               "--out", str(tmp_path / "all"), "--no-progress"])
    assert rc == 0
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert [r["attack"] for r in summary["rows"]] == ["none", "jpeg", "bit-depth"]
    assert summary["rows"][0]["cost_vs_standard_training"] == 1.0
    assert "| jpeg |" in capsys.readouterr().out
    # A second call reuses every finished result.
    before = (tmp_path / "all" / "jpeg" / "result.json").stat().st_mtime_ns
    assert main(["attack", "all", str(data), "--attacks", "jpeg,bit-depth", "--recipe", "tiny", "--epochs", "1",
                 "--out", str(tmp_path / "all"), "--no-progress"]) == 0
    assert (tmp_path / "all" / "jpeg" / "result.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_has_the_one_docstring_template(name):
    """torchattacks' convention: paper and link, threat model, arguments with their defaults,
    shapes, an example, in that order, on every registered attack."""
    check_docstring_template(ATTACKS[name].fn, f"unlearnable attack {name}", ATTACKS[name].params_cls)


def test_run_attack_without_clean_images_gives_the_attack_none(tmp_path, digits_test, quick_recipe):
    """A caller that holds no clean images gets none: the job does not go looking for the base
    on its own (where it found one, early stopping would validate on images nobody named)."""
    protected = load_dataset_dir(poison_dataset("regions", "digits", tmp_path / "r", seed=0, subset=200))
    ctx = AttackContext(protected, digits_test, "convnet", quick_recipe.replace(epochs=1), 0, tmp_path / "out",
                        progress=False)
    with pytest.raises(UnlearnableError, match="early-stop needs the clean base images"):
        run_attack("early-stop", ctx)


def test_a_directory_of_an_earlier_layout_holding_another_attack_is_refused(tmp_path, digits_train, digits_test,
                                                                              quick_recipe):
    """Before attack directories kept a store, result.json alone said whose they were."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"attack": "none", "test_accuracy": 0.5}))
    ctx = AttackContext(digits_train.subset(np.arange(100)), digits_test, "convnet", quick_recipe.replace(epochs=1),
                        0, out, progress=False)
    with pytest.raises(UnlearnableError, match="holds a run of attack 'none'"):
        run_attack("jpeg", ctx)
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]  # nothing made
