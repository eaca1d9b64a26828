"""Shared fixtures: small real data (scikit-learn's digits) and a quick recipe."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from unlearnable import RECIPES, ImageSet, load_data
from unlearnable.core.malloc import tune_malloc

tune_malloc()  # the allocator settings every `unlearnable` command runs with

# 2 threads on an idle 2-core machine; UNLEARNABLE_TEST_THREADS=1 when the machine is shared
# (two spinning threads on a loaded machine make the suite several times slower).
torch.set_num_threads(int(os.environ.get("UNLEARNABLE_TEST_THREADS", "2")))


# The session's own shared-job cache: tests never read or write ~/.cache/unlearnable. Within the
# session, jobs of the same content are shared between tests, as they are between audits.
os.environ["UNLEARNABLE_CACHE"] = tempfile.mkdtemp(prefix="unlearnable-cache-")


@pytest.fixture(scope="session")
def digits_train() -> ImageSet:
    return load_data("digits", "train")


@pytest.fixture(scope="session")
def digits_test() -> ImageSet:
    return load_data("digits", "test")


@pytest.fixture(scope="session")
def quick_recipe():
    """Trains the ConvNet on digits to ~98 % in a few seconds on 2 CPU cores."""
    return RECIPES["fast"].replace(epochs=10, batch_size=64, lr=0.05, flip=False)


@pytest.fixture
def tiny_rgb() -> ImageSet:
    """40 random 3x32x32 images over 4 classes (CIFAR-shaped)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(40, dtype=np.int64) % 4
    return ImageSet(images, labels, ["a", "b", "c", "d"], "tiny-rgb")


@pytest.fixture
def one_thread():
    """One torch thread for tests of thousands of tiny ops (OpenMP sync costs more than it gives,
    much more on a busy machine); the previous setting is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
