"""engine.allocator: freed buffers are reused between batches instead of being faulted in again."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.allocator import CONFIGURED_BY
from tests.conftest import ROOT

# One "forward pass": activations of several sizes alive at once, then freed; 64 MiB = 16384 pages in all.
PASSES = """
import platform, resource, sys, torch
from engine.allocator import retain_freed_memory
print(retain_freed_memory(), retain_freed_memory())  # idempotent
def forward():
    a = torch.ones(6 << 20); b = torch.ones(2 << 20) + 1; c = torch.ones(4 << 20); d = torch.ones(1 << 20)
    del a; e = torch.ones(3 << 20); del b, c, d, e
forward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    forward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_PASS = 16384


def _passes(**env_extra: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED_BY}  # e.g. left by a Dask nanny
    proc = subprocess.run([sys.executable, "-c", PASSES], env={**env, **env_extra}, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    applied, faults = proc.stdout.split("\n")[:2]
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_buffers_are_not_faulted_in_again_on_every_pass():
    applied, faults = _passes()
    assert applied == "True True"
    assert faults < 2 * PAGES_PER_PASS, f"{faults} page faults over 10 passes: freed buffers were not reused"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_an_allocator_configured_in_the_environment_is_left_alone():
    applied, faults = _passes(MALLOC_TRIM_THRESHOLD_="65536")
    assert applied == "False False"
    assert faults > 5 * PAGES_PER_PASS  # what the engine avoids: every pass maps its buffers afresh
