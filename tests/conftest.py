"""Shared fixtures: small planted stores, sampled once per session."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Small planted models keep the suite fast; the planted structure does not depend on the size.
PLANTED_SMALL = "planted:z_dim=128,w_dim=128"
ROOT = Path(__file__).resolve().parents[1]


def wait_for_commits(path, proc: subprocess.Popen, at_least: int, timeout: float = 120) -> int:
    """Poll a store's ``progress`` until ``at_least`` chunks are committed, ``proc`` ends or time runs out."""
    import zarr

    deadline = time.time() + timeout
    done = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            done = int(zarr.open_group(str(path), mode="r")["progress"][:].sum())
        except Exception:  # noqa: BLE001 - the store may not exist yet
            done = 0
        if done >= at_least:
            break
        time.sleep(0.05)
    return done


def run_cli(*args: str, check: bool = False, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m engine ARGS`` in a subprocess, as a user would, and capture its output."""
    proc = subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"latent-engine {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def planted_store(tmp_path_factory: pytest.TempPathFactory):
    """A complete planted store: 40K rows, z and w, planted + imagestats scores."""
    import engine

    path = tmp_path_factory.mktemp("stores") / "planted.zarr"
    return engine.sample(str(path), PLANTED_SMALL, ["planted", "imagestats"], n=40_000, seed=7, chunk=4096,
                         batch=1024, progress=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny networks: on busy cores OpenMP's per-op synchronisation, not the
    arithmetic, would dominate (two threads were up to 8x slower under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
