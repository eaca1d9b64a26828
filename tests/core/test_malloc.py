"""The command's allocator settings (`unlearnable.core.malloc`): set once, refused by
UNLEARNABLE_MALLOC=system, and what they are for: a training step stops faulting its buffers in."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

STEPS = """
import resource, sys
from unlearnable.core.malloc import tune_malloc
tuned = tune_malloc()
import torch
from unlearnable.models import build_model
torch.manual_seed(0); torch.set_num_threads(2)
m = build_model("convnet", 10, 1, 28)
opt = torch.optim.SGD(m.parameters(), lr=0.01)
x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
def step():
    torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step(); opt.zero_grad()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="the thresholds are glibc's")


def _run(mode: str) -> tuple[str, int]:
    env = {**os.environ, "UNLEARNABLE_MALLOC": mode}
    out = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@glibc
def test_fixed_thresholds_stop_a_training_step_from_faulting_its_buffers_in():
    system, tuned = _run("system"), _run("tuned")
    assert system[0] == "False" and tuned[0] == "True"
    # Measured: 134,000-228,000 page faults in 20 ConvNet steps with glibc's defaults, 3,000-5,500 fixed.
    assert tuned[1] * 5 < system[1], (system, tuned)


@glibc
def test_tune_malloc_applies_once_and_a_bad_setting_keeps_the_defaults_with_a_warning():
    code = ("import logging; logging.basicConfig(); from unlearnable.core.malloc import tune_malloc; "
            "print(tune_malloc(), tune_malloc())")
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                        env={**os.environ, "UNLEARNABLE_MALLOC": ""})
    assert ok.stdout.split() == ["True", "True"]
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "UNLEARNABLE_MALLOC": "jemalloc"})
    assert bad.stdout.split() == ["False", "False"]
    assert "UNLEARNABLE_MALLOC=jemalloc" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
