"""A planted `checkpoint.pt` (code-running pickle, random bytes, empty file) is refused with one line and exit
status 2, and runs no code, wherever the NeRF stage reads a checkpoint (`--resume`:
tests/training/test_checkpoint_safety.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mapforge import cli
from mapforge.provenance import images_fingerprint, write_records
from mapforge.run import RunConfig, stage_inputs
from tests.conftest import HOSTILE_KINDS, assert_refused, plant_hostile_file, small_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return small_scene(tmp_path_factory.mktemp("data") / "scene", views=6, points=100)


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
    err = assert_refused(capsys, cli.main(["nerf", "render", str(run), "-o", str(tmp_path / "renders")]), marker)
    assert "checkpoint.pt" in err
    assert_refused(capsys, cli.main(["nerf", "render", str(run), "--path", str(tmp_path / "path.gif")]), marker)
    assert_refused(capsys, cli.main(["nerf", "export", str(run), "-o", str(tmp_path / "mesh.ply")]), marker)
    assert not (tmp_path / "renders").exists() and not (tmp_path / "mesh.ply").exists()


def test_run_method_nerf_refuses_a_planted_checkpoint(scene, tmp_path, capsys):
    # The SfM stage counts as complete (its model is the ground truth), so the run goes straight to the NeRF;
    # both folders are recorded as made from this run's inputs, so the run keeps them.
    out = tmp_path / "out"
    shutil.copytree(scene / "sparse_gt", out / "sfm" / "sparse" / "0")
    (out / "sfm" / "report.json").write_text("{}")
    (out / "nerf").mkdir()
    marker = plant_hostile_file(out / "nerf" / "checkpoint.pt", "pickle")
    config = RunConfig(images=str(scene / "images"), output=str(out), method="nerf", minutes=0, iterations=2)
    images = images_fingerprint(config.images)
    write_records(out, {stage: stage_inputs(config, stage, images) for stage in ("sfm", "nerf")})
    code = cli.main(["run", str(scene / "images"), "-o", str(out), "--method", "nerf", "--minutes", "0",
                     "--iterations", "2"])
    assert "refused" in assert_refused(capsys, code, marker)
