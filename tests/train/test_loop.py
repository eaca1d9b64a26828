import json

import pytest
import torch

import numpy as np

from unlearnable import RECIPES, ImageSet, build_model, fit
from unlearnable.cli import main
from unlearnable.data import DATASETS, save_dataset
from unlearnable.train import batch_crop, batch_flip_lr, checkpoint_paths, load_weights
from unlearnable.train.loop import crop_padding_for
from unlearnable.train.run import RunSpec, spec_for, train_data, train_on


def _xy(ds):
    return ds.uint8_tensor(), torch.from_numpy(ds.labels)


def test_convnet_learns_digits_above_90_percent(digits_train, digits_test, quick_recipe):
    torch.manual_seed(0)
    model = build_model("convnet", 10, 1, 8)
    res = fit(model, _xy(digits_train), _xy(digits_test), quick_recipe, seed=0, progress=False)
    assert res.test_accuracy > 0.90
    assert res.epochs == quick_recipe.epochs and len(res.history) == quick_recipe.epochs


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, digits_train, digits_test, quick_recipe):
    recipe = quick_recipe.replace(epochs=4)
    spec = RunSpec("convnet", 10, 1, (8, 8), recipe, seed=5, data="digits")
    full, _ = train_on(digits_train, digits_test, spec, tmp_path / "full", progress=False)
    # A crash after epoch 2 (the run stops as Ctrl-C would after a finished epoch) ...
    train_on(digits_train, digits_test, spec, tmp_path / "cut", progress=False, stop_after_epoch=2)
    assert not (tmp_path / "cut" / "result.json").exists()
    # ... and the same command again finishes it.
    resumed, res = train_on(digits_train, digits_test, spec, tmp_path / "cut", progress=False)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3, 4]
    assert [e for e, _ in checkpoint_paths(tmp_path / "cut")] == [1, 2, 3, 4]
    result = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert 0 <= result["test_accuracy"] <= 1 and result["epochs"] == 4
    # Every checkpoint loads back into a fresh model (weights_only).
    m = load_weights(spec.build(), checkpoint_paths(tmp_path / "cut")[-1][1])
    assert torch.equal(m.head.weight, resumed.head.weight)


def test_run_dir_with_other_settings_is_refused(tmp_path, digits_train, quick_recipe):
    spec = RunSpec("convnet", 10, 1, (8, 8), quick_recipe.replace(epochs=1), 0)
    train_on(digits_train, None, spec, tmp_path / "r", progress=False)
    other = RunSpec("convnet", 10, 1, (8, 8), quick_recipe.replace(epochs=2), 0)
    with pytest.raises(Exception, match="different settings"):
        train_on(digits_train, None, other, tmp_path / "r", progress=False)


def test_run_of_another_definition_of_the_same_arch_is_refused(tmp_path, digits_train, quick_recipe,
                                                               monkeypatch):
    """A run cached under the name "convnet" by a different ConvNet is not resumed or reused."""
    from unlearnable import UnlearnableError
    from unlearnable.models import MODELS, model_signature
    from unlearnable.models.convnet import ConvNet

    spec = RunSpec("convnet", 10, 1, (8, 8), quick_recipe.replace(epochs=1), 0)
    train_on(digits_train, None, spec, tmp_path / "r", progress=False)
    saved = json.loads((tmp_path / "r" / "run.json").read_text())["model_signature"]
    assert saved == model_signature(spec.build())
    monkeypatch.setitem(MODELS, "convnet", lambda **kw: ConvNet(width=8, **kw))  # "a new version"
    assert model_signature(spec.build()) != saved
    with pytest.raises(UnlearnableError, match="another definition of 'convnet'"):
        train_on(digits_train, None, spec, tmp_path / "r", progress=False)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["model_signature"] == saved  # untouched


def test_batch_augmentations_are_exact_and_seeded():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    flipped = batch_flip_lr(x, torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    a = batch_crop(x, torch.Generator().manual_seed(1), padding=2)
    b = batch_crop(x, torch.Generator().manual_seed(1), padding=2)
    assert torch.equal(a, b) and a.shape == x.shape
    # Exactly torchvision's RandomCrop(padding=2) per sample, with the same offsets.
    g = torch.Generator().manual_seed(1)
    dy, dx = torch.randint(0, 5, (2,), generator=g), torch.randint(0, 5, (2,), generator=g)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    ref = torch.stack([xp[i, :, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6] for i in range(2)])
    assert torch.equal(a, ref)


def test_cli_train_writes_result(tmp_path, capsys):
    rc = main(["train", "digits", "--recipe", "fast", "--epochs", "2", "--out", str(tmp_path / "r"),
               "--no-progress"])
    assert rc == 0
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert 0 < result["test_accuracy"] <= 1 and result["epochs"] == 2
    assert "clean test accuracy" in capsys.readouterr().out
    # What was trained is recorded: the fast recipe without the flip and crop digits do not allow.
    want = RECIPES["fast"].replace(epochs=2, flip=False, crop_padding=0).to_dict()
    assert json.loads((tmp_path / "r" / "run.json").read_text())["spec"]["recipe"] == want
    assert result["recipe"] == want


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "no-such-set", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown dataset" in err[0]
    assert main(["train", "digits", "--arch", "nope", "--out", str(tmp_path / "r2")]) == 2
    assert "unknown architecture" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Recipes consult the data's facts

def _like(name: str) -> ImageSet:
    """Four blank images shaped like dataset `name`'s, as its loader names them."""
    c, h, w = DATASETS[name].shape_chw
    return ImageSet(np.zeros((4, h, w, c), np.uint8), np.arange(4) % 2, ["a", "b"], name,
                    meta={"source": {"dataset": name}})


@pytest.mark.parametrize("name,flip,padding", [
    ("digits", False, 0), ("mnist", False, 4), ("svhn", False, 4),
    ("fashion-mnist", True, 4), ("cifar10", True, 4), ("cifar100", True, 4)])
def test_the_recipe_trained_is_adapted_to_the_data(name, flip, padding):
    for preset in ("paper", "fast", "released"):
        r = spec_for(_like(name), "convnet", RECIPES[preset], 0).recipe
        assert (r.flip, r.crop_padding) == (flip, padding)
        assert r.replace(flip=True, crop_padding=4) == RECIPES[preset]  # nothing else changes
    if flip:  # the demo's Fashion-MNIST and the paper's CIFAR runs train and record as before
        assert spec_for(_like(name), "convnet", RECIPES["paper"], 0).recipe is RECIPES["paper"]


def test_adapting_keeps_a_recipes_own_choices_and_is_idempotent():
    r = RECIPES["paper"].replace(flip=False, crop_padding=2)
    assert r.for_data(True, 4) is r and r.for_data(False, 1) == r.replace(crop_padding=1)
    a = RECIPES["paper"].for_data(False, 0)
    assert a.for_data(False, 0) is a
    # The engine's cap leaves an adapted padding as recorded, and is today's 4 px of 32 scaled.
    assert [crop_padding_for(4, s) for s in (32, 28, 16, 8)] == [4, 4, 2, 1]
    assert [crop_padding_for(p, s) for p, s in ((2, 16), (1, 8), (0, 32))] == [2, 1, 0]


def test_a_protected_set_trains_with_its_base_datasets_recipe(tmp_path, digits_train):
    protected = save_dataset(tmp_path / "p", digits_train.replace(digits_train.images, name="p", meta={}),
                             {"base": {"name": "digits"}})
    from unlearnable import load_data

    r = spec_for(load_data(str(protected)), "convnet", RECIPES["paper"], 0).recipe
    assert (r.flip, r.crop_padding) == (False, 0)


def test_run_json_records_the_adapted_recipe_whoever_built_the_spec(tmp_path, digits_train, quick_recipe):
    # A spec built by hand with a flip (as an attack that extends its context's recipe does).
    spec = RunSpec("convnet", 10, 1, (8, 8), quick_recipe.replace(epochs=1, flip=True), 0, "digits")
    train_on(digits_train, None, spec, tmp_path / "r", progress=False)
    recorded = json.loads((tmp_path / "r" / "run.json").read_text())["spec"]["recipe"]
    assert recorded == quick_recipe.replace(epochs=1, flip=False, crop_padding=0).to_dict()
    train_on(digits_train, None, spec, tmp_path / "r", progress=False)  # the same run: resumed, not refused


def test_digits_with_the_paper_recipe_learn_in_3_epochs():
    """`unlearnable train digits --epochs 3`: 62.5 % when 8x8 digits were mirrored and shifted."""
    _, res = train_data("digits", "convnet", RECIPES["paper"].with_epochs(3), seed=0, progress=False)
    assert res.test_accuracy >= 0.85


# ---------------------------------------------------------------------------------------------
# The optimizer is part of the recipe (issue 14: the released ViT trains with Adam)

def test_vit_released_recipe_is_the_released_adam_warmup_cosine():
    from unlearnable import UnlearnableError
    from unlearnable.train.recipe import RELEASED_AUGMENT, Recipe

    r = RECIPES["vit-released"]
    assert (r.optimizer, r.lr, r.weight_decay, r.warmup_epochs, r.epochs, r.batch_size, r.schedule) == \
        ("adam", 1e-3, 5e-5, 5.0, 50, 128, "cosine")
    assert r.augment == RELEASED_AUGMENT == RECIPES["released"].augment
    assert r.lr_at(0) == 0 and r.lr_at(2.5) == pytest.approx(5e-4)  # linear warm-up over 5 epochs
    assert r.lr_at(50) == pytest.approx(0, abs=1e-12) and r.lr_at(25) == pytest.approx(5e-4)
    # Recorded with the run; dicts written before the field existed load as SGD.
    assert r.to_dict()["optimizer"] == "adam" and Recipe.from_dict(r.to_dict()) == r
    old = RECIPES["paper"].to_dict()
    assert "optimizer" not in old  # the default is left out: keys recorded before it stay valid
    assert Recipe.from_dict(old) == RECIPES["paper"] and RECIPES["paper"].optimizer == "sgd"
    with pytest.raises(UnlearnableError, match="recipe: optimizer must be one of sgd, adam, got 'adamw'"):
        RECIPES["paper"].replace(optimizer="adamw")


def test_adam_recipe_trains_with_adam_and_resumes_exactly(tmp_path, digits_train):
    x, y = _xy(digits_train)
    x, y = x[:128], y[:128]
    recipe = RECIPES["tiny"].replace(optimizer="adam", lr=1e-3, weight_decay=5e-5, epochs=2, flip=False)

    def run(out, stop=None):
        torch.manual_seed(0)
        model = build_model("convnet", 10, 1, 8)
        fit(model, (x, y), None, recipe, seed=0, out_dir=out, progress=False, stop_after_epoch=stop)
        return model

    full = run(tmp_path / "full")
    state = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["optimizer"]
    assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(state["state"].values())))  # Adam's moments
    assert state["param_groups"][0]["betas"] == (0.9, 0.999)
    assert [g["weight_decay"] for g in state["param_groups"]] == [5e-5, 0.0]
    run(tmp_path / "cut", stop=1)
    resumed = run(tmp_path / "cut")
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_evaluating_after_the_last_epoch_only_trains_the_same_model(tmp_path, digits_train, digits_test,
                                                                      quick_recipe):
    """`evaluate="last"` skips the test passes of earlier epochs and changes nothing else: the same
    weights and the same final figure, recorded in run.json and result.json."""
    from unlearnable import UnlearnableError
    from unlearnable.train import Recipe

    every = quick_recipe.replace(epochs=3)
    last = every.replace(evaluate="last")
    runs = {}
    for name, recipe in (("every", every), ("last", last)):
        spec = RunSpec("convnet", 10, 1, (8, 8), recipe, seed=3, data="digits")
        runs[name] = train_on(digits_train, digits_test, spec, tmp_path / name, progress=False)
    for (k, a), b in zip(runs["every"][0].state_dict().items(), runs["last"][0].state_dict().values()):
        assert torch.equal(a, b), k
    assert runs["last"][1].test_accuracy == runs["every"][1].test_accuracy > 0.5
    lines = [json.loads(s) for s in (tmp_path / "last" / "metrics.jsonl").read_text().splitlines()]
    assert ["test_accuracy" in r for r in lines] == [False, False, True]
    assert json.loads((tmp_path / "last" / "result.json").read_text())["recipe"]["evaluate"] == "last"
    # The default is not written, so what was recorded before the option keeps its identity.
    assert "evaluate" not in every.to_dict() and Recipe.from_dict(last.to_dict()) == last
    with pytest.raises(UnlearnableError, match="evaluate must be"):
        every.replace(evaluate="sometimes")


def test_evaluation_on_a_cpu_runs_in_cache_sized_batches_and_gives_the_same_figures(digits_test):
    """A CPU evaluation pass of batch 1000 is cut into forward batches of at most CPU_EVAL_BATCH
    (large batches fall out of the caches); loss and accuracy equal one pass over all images."""
    from unlearnable.poisons.crafting import loss_and_accuracy
    from unlearnable.train.loop import CPU_EVAL_BATCH, evaluate

    torch.manual_seed(0)
    model = build_model("convnet", num_classes=10, in_channels=1, image_size=8).eval()
    seen: list[int] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    x, y = digits_test.uint8_tensor(), torch.from_numpy(digits_test.labels)
    assert len(x) > CPU_EVAL_BATCH  # 360 images: two forward batches
    loss, acc = evaluate(model, x, y, batch_size=1000)
    assert seen and max(seen) == CPU_EVAL_BATCH and sum(seen) == len(x)
    with torch.no_grad():
        logits = model(x.float() / 255)
    assert acc == (logits.argmax(1) == y).sum().item() / len(y)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    seen.clear()
    assert loss_and_accuracy(model, x.float() / 255, y, batch_size=1000)[1] == acc
    assert max(seen) == CPU_EVAL_BATCH


def test_replayed_minibatches_train_in_a_row_and_a_resume_between_replays_is_exact(tmp_path, digits_train):
    """A batch loss with `replays` m trains each minibatch m steps in a row (Free adversarial
    training's order): the epochs keep their steps, the data is passed over epochs / m times, and
    a run cut at an epoch boundary that falls between two replays of one minibatch resumes to
    the uninterrupted run's weights and perturbation (the loss's state is saved with the run)."""
    from unlearnable.train.pgd import FreeLoss

    x, y = _xy(digits_train)
    x, y = x[:300], y[:300]
    recipe = RECIPES["tiny"].replace(epochs=3, batch_size=64, flip=False)  # 5 steps an epoch

    class Recording(FreeLoss):
        def __init__(self):
            super().__init__(eps=16 / 255, alpha=16 / 255, replays=3)
            self.seen = []

        def __call__(self, model, xb, yb, gen):
            self.seen.append((xb.clone(), yb.clone()))
            return super().__call__(model, xb, yb, gen)

    def run(out, stop=None, loss=None):
        torch.manual_seed(0)
        model = build_model("convnet", 10, 1, 8)
        loss = loss or Recording()
        fit(model, (x, y), None, recipe, seed=0, out_dir=out, progress=False, batch_loss=loss, stop_after_epoch=stop)
        return model, loss

    full, loss = run(tmp_path / "full")
    assert len(loss.seen) == 15  # the recipe's 3 epochs of 5 steps: what standard training costs
    groups = [loss.seen[i:i + 3] for i in range(0, 15, 3)]
    for g in groups:  # each minibatch, as drawn and augmented once, three steps in a row
        assert all(torch.equal(g[0][0], b[0]) and torch.equal(g[0][1], b[1]) for b in g)
    assert not torch.equal(groups[0][0][0], groups[1][0][0])
    # Five distinct minibatches: one pass over the 300 images (labels as a multiset).
    labels = torch.cat([g[0][1] for g in groups])
    assert torch.equal(labels.sort().values, y.sort().values)
    assert 0 < loss.delta.abs().max() <= 16 / 255 + 1e-6

    # Epoch 1 ends after the second of minibatch 1's three steps; resume from there.
    run(tmp_path / "cut", stop=1)
    assert set(torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["batch_loss"]) == {"delta"}
    resumed, rloss = run(tmp_path / "cut")
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(loss.delta, rloss.delta)

    # A last.pt without the loss's state is another run's: one line, nothing trained.
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    state.pop("batch_loss")
    state["epoch"] = 1
    torch.save(state, tmp_path / "cut" / "last.pt")
    with pytest.raises(Exception, match="last.pt.*no state of this run's batch loss"):
        run(tmp_path / "cut")
