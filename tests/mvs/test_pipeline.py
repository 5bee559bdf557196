"""`run_mvs` and `mapforge mvs` end to end on a small synthetic scene: outputs, resume and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mapforge.cli import main
from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene
from mapforge.io.colmap import read_model, write_model
from mapforge.io.colmap_dense import read_array
from mapforge.io.ply import read_point_cloud
from mapforge.metrics.geometry import nearest_distances
from mapforge.mvs.patchmatch.api import PatchMatchConfig
from mapforge.mvs.pipeline import MVSConfig, run_mvs
from mapforge.run import mvs_inputs

QUICK = PatchMatchConfig(num_levels=1, iterations=(3,), geom_iterations=1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mvs") / "scene"
    write_scene(make_scene(SyntheticConfig(width=128, height=96, num_views=12)), folder, num_points=3000)
    return folder


def _config(**changes) -> MVSConfig:
    return MVSConfig(**{"num_sources": 4, "mesh": "none", "patch_match": QUICK, **changes})


def test_run_mvs_writes_colmaps_dense_workspace_and_resumes(scene: Path, tmp_path: Path) -> None:
    model = read_model(scene / "sparse_gt")
    result = run_mvs(model, scene / "images", tmp_path / "dense", _config())
    ws = result.workspace
    depth = read_array(ws.depth_map("000.png", "geometric"))
    normal = read_array(ws.normal_map("000.png", "photometric"))
    assert depth.shape == (96, 128) and normal.shape == (96, 128, 3)
    assert 0.2 < (depth > 0).mean() < 1.0
    xyz, rgb, normals = read_point_cloud(ws.fused, normals=True)
    assert len(xyz) == result.report["fused_points"] > 100 and rgb is not None and normals is not None
    surface = make_scene(SyntheticConfig(width=8, height=8, num_views=2)).metadata["scene"].sample_surface_points(300000)
    distances = nearest_distances(xyz.astype(np.float64), surface)
    assert np.median(distances) < 0.03 and np.mean(distances < 0.1) > 0.9  # metres, in an 8 x 8 x 3 m room
    report = json.loads(ws.report.read_text())
    assert report["num_images"] == 12 and {"photometric", "geometric", "fusion"} <= set(report["seconds"])
    assert (ws.stereo / "patch-match.cfg").read_text().splitlines()[0] == "000.png"
    stamp = ws.depth_map("000.png", "geometric").stat().st_mtime_ns
    again = run_mvs(model, scene / "images", tmp_path / "dense", _config())
    assert ws.depth_map("000.png", "geometric").stat().st_mtime_ns == stamp
    assert again.report["fused_points"] == result.report["fused_points"]
    assert again.report["images"] == result.report["images"]  # the maps' records survive the re-run
    other = run_mvs(model, scene / "images", tmp_path / "dense", _config(max_image_size=64))  # other options
    assert read_array(ws.depth_map("000.png", "geometric")).shape == (48, 64) and other.report["image_size"] == 64


def test_without_the_geometric_pass_photometric_maps_are_filtered_and_fused(scene: Path, tmp_path: Path) -> None:
    model = read_model(scene / "sparse_gt")
    result = run_mvs(model, scene / "images", tmp_path / "dense", _config(geom_consistency=False))
    assert not result.workspace.depth_map("000.png", "geometric").exists()
    depth = read_array(result.workspace.depth_map("000.png", "photometric"))
    assert 0.0 < (depth > 0).mean() < 1.0 and result.report["fused_points"] > 0


def test_a_model_without_points_uses_the_viewing_geometry(scene: Path, tmp_path: Path) -> None:
    model = read_model(scene / "sparse_gt")
    model.points3D = {}
    for image in model.images.values():
        image.keypoints, image.point3D_ids = np.zeros((0, 2)), np.zeros(0, np.int64)
    result = run_mvs(model, scene / "images", tmp_path / "dense", _config())
    assert result.report["images_with_sources"] == 12 and result.report["fused_points"] > 0


def test_inputs_from_a_project_a_run_and_an_sfm_folder(scene: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_model(read_model(scene / "sparse_gt"), project / "sparse" / "0")
    (project / "images").symlink_to(scene / "images")
    model, images = mvs_inputs(project)
    assert len(model.images) == 12 and images == project / "images"
    run = tmp_path / "run"
    write_model(read_model(scene / "sparse_gt"), run / "sfm" / "sparse" / "0")
    (run / "run.toml").write_text(f'images = "{scene / "images"}"\noutput = "{run}"\n')
    model, images = mvs_inputs(run)
    assert len(model.images) == 12 and images == scene / "images"
    sfm = tmp_path / "sfm"
    write_model(read_model(scene / "sparse_gt"), sfm / "sparse" / "0")
    (sfm / "report.json").write_text(json.dumps({"image_dir": str(scene / "images")}))
    model, images = mvs_inputs(sfm)
    assert len(model.images) == 12 and images == scene / "images"


def _error(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert main(["mvs", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_bad_input_is_one_line(scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model"
    write_model(read_model(scene / "sparse_gt"), model)
    assert "give the photos with --images" in _error(capsys, str(model), "-o", str(tmp_path / "a"))
    assert "depth range" in _error(capsys, str(model), "--images", str(scene / "images"), "--depth-range", "5", "1", "-o", str(tmp_path / "b"))
    small = tmp_path / "small"
    small.mkdir()
    for path in (scene / "images").iterdir():
        from mapforge.io.images import read_image, write_image

        write_image(small / path.name, read_image(path)[::2, ::2])
    assert "but its camera in the model is" in _error(capsys, str(model), "--images", str(small), "-o", str(tmp_path / "c"))
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    (empty_run / "run.toml").write_text(f'images = "{scene / "images"}"\noutput = "{empty_run}"\n')
    assert "no posed model" in _error(capsys, str(empty_run), "-o", str(tmp_path / "d"))


def test_colmaps_own_fusion_reads_the_workspace(scene: Path, tmp_path: Path) -> None:
    """The maps, model and config files are COLMAP's: its StereoFusion fuses them into about as many points."""
    pycolmap = pytest.importorskip("pycolmap")
    result = run_mvs(read_model(scene / "sparse_gt"), scene / "images", tmp_path / "dense", _config())
    pycolmap.stereo_fusion(str(tmp_path / "colmap.ply"), str(tmp_path / "dense"), input_type="geometric", output_type="ply")
    colmap = read_point_cloud(tmp_path / "colmap.ply")[0]
    assert abs(len(colmap) - result.report["fused_points"]) < 0.1 * result.report["fused_points"]
