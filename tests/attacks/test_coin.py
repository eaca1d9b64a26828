"""COIN (Wang et al., AAAI 2025): the corruption against scipy's map_coordinates, which the
original calls, and the attack's registry facts and run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage as nd
import torch

from unlearnable.attacks import ATTACKS, AttackContext
from unlearnable.core.errors import UnlearnableError
from unlearnable.kinds import run_attack
from unlearnable.train.augment import AUGMENTATIONS, COIN_ALPHAS, batch_coin, coin_resample

from helpers import check_docstring_template


@pytest.mark.parametrize("h, w, alpha", [(7, 9, 3.2), (8, 8, 0.8), (1, 5, 2.0)])
def test_coin_resampling_is_scipys_linear_wrap_interpolation(h, w, alpha):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, h, w, dtype=torch.float64, generator=g)
    d = (torch.rand(2, 2, h, w, dtype=torch.float64, generator=g) * 2 - 1) * alpha
    d[0, :, 0, :] = 0.0  # no offset: the last row and column are their own, not the first's
    out = coin_resample(x, d[:, 0], d[:, 1]).numpy()
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    for i in range(2):
        for c in range(3):
            want = nd.map_coordinates(x[i, c].numpy(), [rows + d[i, 0].numpy(), cols + d[i, 1].numpy()],
                                      order=1, mode="wrap")
            assert np.abs(out[i, c] - want).max() < 1e-12


def test_coin_corruption_stays_on_grey_levels_moves_pixels_and_repeats_under_a_seed():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 1, 12, 12))).float() / 255
    a = batch_coin(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and a.dtype == x.dtype and 0 <= a.min() and a.max() <= 1
    levels = a * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # truncated to uint8 levels, as the original
    assert torch.equal(a, batch_coin(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, batch_coin(x, torch.Generator().manual_seed(4)))
    assert (a != x).float().mean() > 0.5
    # No offset, no change: every grey level survives the truncation.
    assert torch.equal(batch_coin(x, torch.Generator().manual_seed(3), alpha=0.0), x)
    # A larger alpha moves a smooth image further from itself.
    ramp = torch.linspace(0, 1, 12, dtype=torch.float32).view(1, 1, 1, 12).expand(4, 1, 12, 12).contiguous()
    small, large = (float((batch_coin(ramp, torch.Generator().manual_seed(0), al) - ramp).abs().mean())
                    for al in (0.8, 3.2))
    assert 0 < small < large
    assert [f"coin-s{s}" in AUGMENTATIONS for s in range(1, 8)] == [True] * 7 and COIN_ALPHAS[3] == 2.0


def test_the_coin_attack_trains_through_its_corruption(tmp_path, digits_train, digits_test, quick_recipe):
    info = ATTACKS["coin"]
    check_docstring_template(info.fn, "unlearnable attack coin", info.params_cls)
    assert info.params({}).alpha == 2.0 and info.params({"severity": "7"}).alpha == 3.2
    with pytest.raises(UnlearnableError, match="severity"):
        info.params({"severity": "8"})
    small = digits_train.subset(np.arange(200))
    ctx = AttackContext(small, digits_test, "convnet", quick_recipe.replace(epochs=1), 0, tmp_path,
                        progress=False, data_name="digits")
    r = run_attack("coin", ctx, {"severity": "2"})
    assert r["alpha"] == 1.2 and 0 <= r["test_accuracy"] <= 1
    assert json.loads((tmp_path / "result.json").read_text())["attack_params"] == {"severity": 2}
    assert "coin-s2" in json.loads((tmp_path / "train" / "run.json").read_text())["spec"]["recipe"]["augment"]
