"""Shared fixtures: the read-only evaluation data beside the repository (skipped with a reason when absent),
hostile files for the tests that every file mapforge unpickles is read safely, and the torch devices.

A test that takes a `device` argument runs once per torch device: "cpu", and "cuda" (skipped with a reason when
CUDA is not available). `pytest --device cuda` keeps only the cuda runs of such tests (`--device cpu` only the
cpu ones); `pytest --device cuda -k cuda tests/splat tests/nerf` runs just the GPU checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MAPFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_flush_denormal(True)


HOSTILE_KINDS = ("pickle", "random", "empty")
DEVICES = ("cpu", "cuda")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", choices=("all", *DEVICES), default="all",
                     help="torch device(s) for the tests that take a `device` (default all: cpu, and cuda if present)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("--device")
    no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
    params = [pytest.param(name, marks=[no_cuda] if name == "cuda" else [], id=name)
              for name in DEVICES if chosen in ("all", name)]
    metafunc.parametrize("device", params)


class _RunsCode:
    """Unpickling this runs `exec(code)`, as a checkpoint crafted by an attacker would."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def plant_hostile_file(path: Path, kind: str) -> Path:
    """Write a file at `path` that no loader may accept; returns the marker file that exists only if code ran.

    kind "pickle": a torch checkpoint whose unpickling writes the marker; "random": random bytes; "empty": 0 bytes.
    """
    marker = path.with_name(path.name + ".code_ran")
    if kind == "pickle":
        torch.save({"version": 2, "model": _RunsCode(f"open({str(marker)!r}, 'w').close()")}, path)
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        path.write_bytes(b"")
    return marker


def assert_refused(capsys: pytest.CaptureFixture, code: int, marker: Path) -> str:
    """The command refused the planted file: exit status 2, one line on stderr, and the planted code never ran."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not marker.exists(), "the planted pickle ran code"
    return err


def small_scene(folder: Path, views: int = 8, points: int = 300) -> Path:
    """The built-in scene at 48x36 with `views` views, written to `folder` as a data set (see `write_scene`)."""
    from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene

    return write_scene(make_scene(SyntheticConfig(width=48, height=36, num_views=views, supersample=1)), folder,
                       num_points=points)


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
