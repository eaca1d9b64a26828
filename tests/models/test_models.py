"""Every registered model keeps the Classifier contract; the named architectures are what they claim."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnable import MODELS, UnlearnableError, build_model

# (channels, height, width, classes): Fashion-MNIST-shaped, CIFAR-100-shaped, digits-shaped,
# and a non-square map to catch code that assumes H == W.
SHAPES = [(1, 28, 28, 10), (3, 32, 32, 100), (1, 8, 8, 10), (3, 12, 16, 4)]


def _model(name: str, c: int, h: int, w: int, k: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, k, c, (h, w))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_contract(name, shape):
    c, h, w, k = shape
    model = _model(name, c, h, w, k)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, c, h, w, generator=gen), torch.randint(0, k, (3,), generator=gen)

    logits = model(x)
    assert logits.shape == (3, k) and torch.isfinite(logits).all()
    F.cross_entropy(logits, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets a zero gradient"

    assert isinstance(model.head, nn.Linear)
    assert model.head.in_features == model.feature_dim and model.head.out_features == k
    model.eval()
    with torch.no_grad():
        feats = model.features(x)
        assert feats.shape == (3, model.feature_dim)
        torch.testing.assert_close(model(x), model.head(feats))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_normalization_is_inside_the_model(name):
    model = _model(name, 3, 16, 16, 5)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 16, 16, generator=gen) * 0.8
    # In train mode BatchNorm would absorb a constant shift, and with its initial running stats
    # (0, 1) a deep untrained net passes almost no signal in eval mode: give every BN the
    # statistics of one batch, then compare in eval mode.
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: after one batch, exactly its statistics
            m.reset_running_stats()
    with torch.no_grad():
        model(torch.rand(8, 3, 16, 16, generator=gen))
    model.eval()
    with torch.no_grad():
        before = model(x)
        model.mean += 0.1
        shifted_mean = model(x)
        # (x + 0.1 - (mean + 0.1)) / std is the same input to the network as before.
        same = model(x + 0.1)
    assert not torch.allclose(before, shifted_mean, atol=1e-4)
    torch.testing.assert_close(same, before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_same_weights(name):
    a, b = _model(name, 1, 8, 8, 3, seed=7), _model(name, 1, 8, 8, 3, seed=7)
    other = _model(name, 1, 8, 8, 3, seed=8)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), key
    assert not torch.equal(a.head.weight, other.head.weight)


def test_custom_mean_std_and_wrong_length():
    model = build_model("resnet18", 10, 1, 28, mean=[0.286], std=[0.353])
    assert model.mean.flatten().tolist() == pytest.approx([0.286]) and model.std.shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="mean/std need 3 values"):
        build_model("vgg16", 10, 3, 32, mean=[0.5], std=[0.25])


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(UnlearnableError, match="unknown architecture 'resnet19'.*resnet18"):
        build_model("resnet19", 10)


def test_resnet18_is_the_cifar_rn18():
    model = build_model("resnet18", 10, 3, 32)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert model.feature_dim == 512
    stem = model.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)  # no 7x7/2 stem, no max-pool
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert [len(s) for s in model.stages] == [2, 2, 2, 2]
    # 32 -> 32 -> 16 -> 8 -> 4 before the global pool, as on CIFAR.
    with torch.no_grad():
        assert model.stages(model.stem(torch.rand(1, 3, 32, 32))).shape == (1, 512, 4, 4)


def test_vgg16_has_sixteen_weight_layers_and_config_d():
    model = build_model("vgg16", 10, 3, 32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 13 and len(linears) == 3 and len(convs) + len(linears) == 16
    assert [m.out_channels for m in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert linears[-1] is model.head
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13


def test_googlenet_has_nine_inception_modules_and_1024_features():
    from unlearnable.models.googlenet import Inception

    model = build_model("googlenet", 10, 3, 32)
    blocks = [m for m in model.modules() if isinstance(m, Inception)]
    assert [b.out_channels for b in blocks] == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    assert model.feature_dim == 1024


def test_vit_patch_4_and_384_d_class_token():
    model = build_model("vit", 10, 3, 32)
    assert model.patch_size == 4 and model.feature_dim == 384
    assert model.pos_embed.shape == (1, 8 * 8 + 1, 384)  # learnable, one per patch + class token
    assert model.pos_embed.requires_grad and model.cls_token.requires_grad
    assert build_model("vit", 10, 1, 28).pos_embed.shape == (1, 7 * 7 + 1, 384)


def test_vit_rejects_sizes_it_cannot_patch():
    with pytest.raises(UnlearnableError, match="30x30 is not divisible by the patch size 4"):
        build_model("vit", 10, 3, 30)
    model = build_model("vit", 10, 3, 32)
    with pytest.raises(UnlearnableError, match="built for 32x32 images, got 28x28"):
        model(torch.rand(1, 3, 28, 28))


def test_densenet121_is_the_released_cifar_densenet():
    from unlearnable.models.densenet import Bottleneck

    model = build_model("densenet121", 10, 3, 32)
    assert sum(p.numel() for p in model.parameters()) == 6_956_298  # the released DenseNet121()
    assert model.feature_dim == 1024
    stem = model.body[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.out_channels == 64
    blocks = [m for m in model.body if isinstance(m, nn.Sequential) and isinstance(m[0], Bottleneck)]
    assert [len(b) for b in blocks] == [6, 12, 24, 16]
    assert all(b.body[-1].out_channels == 32 for blk in blocks for b in blk)  # growth rate 32
    # 32 -> 16 -> 8 -> 4 before the global pool, as released (avg_pool2d(..., 4) on a 4x4 map).
    with torch.no_grad():
        assert model.body[:-4](torch.rand(1, 3, 32, 32)).shape == (1, 1024, 4, 4)
    # A 4x4 input pools while it can (4-2-1) and keeps its 1x1 map.
    assert sum(isinstance(m, nn.AvgPool2d) for m in build_model("densenet121", 10, 1, 4).modules()) == 2


def test_vgg19_is_configuration_e_with_the_released_one_layer_classifier():
    model = build_model("vgg19", 10, 3, 32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_channels for m in convs] == [64, 64, 128, 128] + [256] * 4 + [512] * 8
    assert linears == [model.head] and model.feature_dim == 512 and model.head.in_features == 512
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 16
    # The released VGG('VGG19') has 20,040,522: the same layers plus a bias on each conv.
    assert sum(p.numel() for p in model.parameters()) == 20_040_522 - sum(m.out_channels for m in convs)
