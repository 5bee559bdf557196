"""`splat train --resume` and `nerf train --resume` refuse a planted `checkpoint.pt` (code-running pickle, random
bytes, empty file) with one line and exit status 2, before writing anything, and run no code."""

from __future__ import annotations

import pytest

from mapforge import cli
from tests.conftest import HOSTILE_KINDS, assert_refused, plant_hostile_file, small_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return small_scene(tmp_path_factory.mktemp("data") / "scene", views=6, points=100)


@pytest.mark.parametrize("command", ["splat", "nerf"])
@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_resume_refuses_a_planted_checkpoint(command, kind, scene, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    marker = plant_hostile_file(out / "checkpoint.pt", kind)
    code = cli.main([command, "train", str(scene), "-o", str(out), "--resume", "--iterations", "2"])
    assert "checkpoint.pt" in assert_refused(capsys, code, marker)
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]  # refused before anything was written
