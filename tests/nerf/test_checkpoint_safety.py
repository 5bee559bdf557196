"""A planted `checkpoint.pt` (code-running pickle, random bytes, empty file) is refused with one line and exit
status 2, and runs no code, wherever the NeRF stage reads a checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mapforge import cli
from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene
from tests.conftest import HOSTILE_KINDS, plant_hostile_file


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(make_scene(SyntheticConfig(width=48, height=36, num_views=6, supersample=1)),
                       tmp_path_factory.mktemp("data") / "scene", num_points=100)


def refused(capsys, code: int, marker) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not marker.exists(), "the planted pickle ran code"
    return err


def test_the_planted_pickle_runs_code_when_unpickled_blindly(tmp_path):
    marker = plant_hostile_file(tmp_path / "checkpoint.pt", "pickle")
    torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_render_and_export_refuse_a_planted_checkpoint(kind, scene, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    marker = plant_hostile_file(run / "checkpoint.pt", kind)
    (run / "config.json").write_text(json.dumps({"data": str(scene), "downscale": 1}))
    err = refused(capsys, cli.main(["nerf", "render", str(run), "-o", str(tmp_path / "renders")]), marker)
    assert "checkpoint.pt" in err
    refused(capsys, cli.main(["nerf", "render", str(run), "--path", str(tmp_path / "path.gif")]), marker)
    refused(capsys, cli.main(["nerf", "export", str(run), "-o", str(tmp_path / "mesh.ply")]), marker)
    assert not (tmp_path / "renders").exists() and not (tmp_path / "mesh.ply").exists()


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_resume_refuses_a_planted_checkpoint(kind, scene, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    marker = plant_hostile_file(out / "checkpoint.pt", kind)
    refused(capsys, cli.main(["nerf", "train", str(scene), "-o", str(out), "--resume", "--iterations", "2"]), marker)
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]  # refused before anything was written


def test_run_method_nerf_refuses_a_planted_checkpoint(scene, tmp_path, capsys):
    # The SfM stage counts as complete (its model is the ground truth), so the run goes straight to the NeRF.
    out = tmp_path / "out"
    shutil.copytree(scene / "sparse_gt", out / "sfm" / "sparse" / "0")
    (out / "sfm" / "report.json").write_text("{}")
    (out / "nerf").mkdir()
    marker = plant_hostile_file(out / "nerf" / "checkpoint.pt", "pickle")
    code = cli.main(["run", str(scene / "images"), "-o", str(out), "--method", "nerf", "--minutes", "0",
                     "--iterations", "2"])
    assert "refused" in refused(capsys, code, marker)
