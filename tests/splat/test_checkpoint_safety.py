"""A planted `checkpoint.pt` or LPIPS weights file (code-running pickle, random bytes, empty file) is refused with
one line and exit status 2, and runs no code, wherever the splatting stage reads one."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge import cli
from mapforge.io.ply import write_point_cloud
from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene
from tests.conftest import HOSTILE_KINDS, plant_hostile_file


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(make_scene(SyntheticConfig(width=48, height=36, num_views=8, supersample=1)),
                       tmp_path_factory.mktemp("data") / "scene", num_points=300)


def refused(capsys, code: int, marker) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not marker.exists(), "the planted pickle ran code"
    return err


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_resume_refuses_a_planted_checkpoint(kind, scene, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    marker = plant_hostile_file(out / "checkpoint.pt", kind)
    code = cli.main(["splat", "train", str(scene), "-o", str(out), "--resume", "--iterations", "2"])
    assert "checkpoint.pt" in refused(capsys, code, marker)
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]  # refused before anything was written


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_render_refuses_planted_lpips_weights(kind, scene, tmp_path, capsys):
    weights = tmp_path / "alex.pth"
    marker = plant_hostile_file(weights, kind)
    rng = np.random.default_rng(0)
    write_point_cloud(tmp_path / "points.ply", rng.uniform(-1, 1, (50, 3)), rng.integers(0, 256, (50, 3), np.uint8))
    code = cli.main(["splat", "render", str(tmp_path / "points.ply"), "--data", str(scene), "-o", str(tmp_path / "r"),
                     "--lpips-weights", str(weights)])
    assert "LPIPS" in refused(capsys, code, marker)
