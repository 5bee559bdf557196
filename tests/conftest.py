"""Shared fixtures: the read-only evaluation data beside the repository, skipped with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MAPFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_flush_denormal(True)


def shared_dataset(name: str) -> Path:
    """The folder of one shared data set, or skip the test saying what is missing."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data set {name!r} not found at {path} (set MAPFORGE_SHARED_DATA to its parent folder)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run every test with one torch thread (restored afterwards).

    Tests work on tiny tensors, where a second OpenMP thread costs more in hand-offs than it saves; on a busy
    machine two threads spin-waiting for each other made some tests 5-20 times slower. The trainers make the
    same choice for CPU training around the numba kernels.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
