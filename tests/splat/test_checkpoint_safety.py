"""Planted LPIPS weights (code-running pickle, random bytes, empty file) are refused by `splat render` with one line
and exit status 2, and run no code (`--resume`: tests/training/test_checkpoint_safety.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge import cli
from mapforge.io.ply import write_point_cloud
from tests.conftest import HOSTILE_KINDS, assert_refused, plant_hostile_file, small_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return small_scene(tmp_path_factory.mktemp("data") / "scene")


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_render_refuses_planted_lpips_weights(kind, scene, tmp_path, capsys):
    weights = tmp_path / "alex.pth"
    marker = plant_hostile_file(weights, kind)
    rng = np.random.default_rng(0)
    write_point_cloud(tmp_path / "points.ply", rng.uniform(-1, 1, (50, 3)), rng.integers(0, 256, (50, 3), np.uint8))
    code = cli.main(["splat", "render", str(tmp_path / "points.ply"), "--data", str(scene), "-o", str(tmp_path / "r"),
                     "--lpips-weights", str(weights)])
    assert "LPIPS" in assert_refused(capsys, code, marker)
