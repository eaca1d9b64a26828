"""Batch augmentations (train.augment): every registered one keeps shape and range and follows its
generator; the label-mixing ones keep soft labels summing to one; cutout and affine do what they say."""

import pytest
import torch

from unlearnable.train.augment import AUGMENTATIONS, LABEL_AUGMENTATIONS, batch_affine, batch_cutout


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentations_keep_shape_range_and_are_seeded(name):
    x = torch.rand(6, 3, 16, 16)
    a = AUGMENTATIONS[name](x, torch.Generator().manual_seed(1))
    b = AUGMENTATIONS[name](x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    grey = AUGMENTATIONS[name](x[:, :1], torch.Generator().manual_seed(1))
    assert grey.shape == (6, 1, 16, 16)


@pytest.mark.parametrize("name", sorted(LABEL_AUGMENTATIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_label_augmentations_mix_labels_consistently(name, channels):
    x = torch.rand(8, channels, 10, 10)
    y = torch.nn.functional.one_hot(torch.arange(8) % 4, 4).float()
    for s in range(6):  # some batches mix (p 0.5), some do not
        xm, ym = LABEL_AUGMENTATIONS[name](x, y, torch.Generator().manual_seed(s))
        assert xm.shape == x.shape and ym.shape == y.shape
        assert torch.allclose(ym.sum(1), torch.ones(8)) and (ym >= 0).all()


def test_cutout_zeroes_a_square():
    x = torch.ones(4, 1, 16, 16)
    out = batch_cutout(x, torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 9 * 9).all()


def test_affine_without_rotation_or_shear_is_a_zoom_about_the_centre():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    same = batch_affine(x, torch.Generator().manual_seed(0), 0.0, 0.0, (1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-6)
    zoom = batch_affine(x, torch.Generator().manual_seed(0), 0.0, 0.0, (3.0, 3.0))
    assert zoom[0, 0, 4, 4] == 1.0 and zoom[0, 0].sum() > 3  # the dot grows, centred
