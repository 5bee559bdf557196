from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plyfile
import pytest

from mapforge.cli import main
from mapforge.errors import InputError
from mapforge.export import VideoConfig, camera_path, export, export_video
from mapforge.geometry.rotations import rotation_angle_deg
from mapforge.io.colmap import read_model
from mapforge.io.gaussians import read_gaussian_ply, read_splat
from mapforge.io.ply import read_mesh, read_point_cloud, write_mesh
from mapforge.io.transforms_json import read_transforms
from tests.report.run_fixture import DENSE_COLOR, add_dense_workspace, make_run_folder

# The fields nerfstudio's data parser reads from a transforms.json (its documented custom-data format).
NERFSTUDIO_INTRINSICS = ("camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "p1", "p2")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("run"))


def test_colmap_export_loads_in_pycolmap(run: Path, tmp_path: Path) -> None:
    pycolmap = pytest.importorskip("pycolmap")
    original = read_model(run / "sfm" / "sparse" / "0")
    for text in (False, True):
        dest = tmp_path / ("text" if text else "bin")
        export(run, "colmap", dest, text=text)
        assert (dest / ("cameras.txt" if text else "cameras.bin")).is_file()
        loaded = pycolmap.Reconstruction(str(dest))
        assert loaded.num_reg_images() == len(original.images)
        assert loaded.num_points3D() == len(original.points3D)
        image = loaded.image(1)
        np.testing.assert_allclose(image.cam_from_world().matrix(), original.images[1].cam_from_world.matrix(), atol=1e-9)


def test_nerfstudio_export(run: Path, tmp_path: Path) -> None:
    dest = tmp_path / "ns"
    export(run, "nerfstudio", dest)
    meta = json.loads((dest / "transforms.json").read_text())
    for key in NERFSTUDIO_INTRINSICS:
        assert key in meta
    assert meta["camera_model"] == "OPENCV"
    assert meta["ply_file_path"] == "sparse_pc.ply"
    for frame in meta["frames"]:
        assert not Path(frame["file_path"]).is_absolute() and frame["file_path"].startswith("images/")
        assert (dest / frame["file_path"]).is_file()
        assert np.asarray(frame["transform_matrix"]).shape == (4, 4)
    points = plyfile.PlyData.read(str(dest / "sparse_pc.ply"))["vertex"]
    assert {"x", "y", "z", "red", "green", "blue"} <= set(points.data.dtype.names)

    data = read_transforms(dest / "transforms.json")
    original = read_model(run / "sfm" / "sparse" / "0")
    assert data.flavour == "nerfstudio"
    for path, camera, pose in zip(data.image_paths, data.cameras, data.cam_from_world):
        _, image = original.image_by_name(path.name)
        np.testing.assert_allclose(pose.matrix(), image.cam_from_world.matrix(), atol=1e-9)
        np.testing.assert_allclose(camera.K, original.cameras[image.camera_id].K)


def test_ply_export_prefers_gaussians_then_dense_then_sparse(run: Path, tmp_path: Path) -> None:
    path, what = export(run, "ply", tmp_path / "splats.ply")
    assert "Gaussians" in what
    names = plyfile.PlyData.read(str(path))["vertex"].data.dtype.names
    assert names[:9] == ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
    np.testing.assert_array_equal(read_gaussian_ply(path).means, read_gaussian_ply(run / "splat" / "point_cloud.ply").means)

    sfm_only = make_run_folder(tmp_path / "sfm_only", parts="sfm")
    path, what = export(sfm_only, "ply", tmp_path / "sparse.ply")
    vertex = plyfile.PlyData.read(str(path))["vertex"].data
    assert "sparse" in what and len(vertex) == len(read_model(sfm_only / "sfm" / "sparse" / "0").points3D)
    assert {"red", "green", "blue"} <= set(vertex.dtype.names)


def test_splat_and_mesh_exports(run: Path, tmp_path: Path) -> None:
    path, _ = export(run, "splat", tmp_path / "scene.splat")
    assert path.stat().st_size == 32 * 400
    assert len(read_splat(path)) == 400

    with pytest.raises(InputError, match="no mesh"):
        export(run, "mesh", tmp_path / "mesh.ply")
    other = make_run_folder(tmp_path / "with_mesh", parts="sfm")
    (other / "nerf").mkdir()
    write_mesh(other / "nerf" / "mesh.ply", np.eye(3), np.array([[0, 1, 2]]), np.full((3, 3), 100, np.uint8))
    path, what = export(other, "mesh", tmp_path / "mesh.ply")
    ply = plyfile.PlyData.read(str(path))
    assert len(ply["vertex"].data) == 3 and len(ply["face"].data) == 1


def test_exports_of_a_dense_run(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path / "dense_run")
    add_dense_workspace(out)
    path, what = export(out, "mesh", tmp_path / "mesh.ply")
    assert what == "mesh with 6 vertices and 8 triangles"
    vertices, faces, colors = read_mesh(path)
    np.testing.assert_array_equal(faces, read_mesh(out / "dense" / "meshed-poisson.ply")[1])
    assert (colors == DENSE_COLOR).all()
    # the fused cloud comes before the Gaussians, with its normals and colours
    path, what = export(out, "ply", tmp_path / "fused.ply")
    assert what == "1500 fused MVS points"
    xyz, rgb, normals = read_point_cloud(path, normals=True)
    np.testing.assert_allclose(xyz, read_point_cloud(out / "dense" / "fused.ply")[0])
    assert (rgb == DENSE_COLOR).all() and np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)


def test_missing_inputs_are_input_errors(tmp_path: Path) -> None:
    sfm_only = make_run_folder(tmp_path, parts="sfm")
    with pytest.raises(InputError, match="no trained Gaussians"):
        export(sfm_only, "splat", tmp_path / "x.splat")
    with pytest.raises(InputError, match="trained Gaussians"):
        export_video(sfm_only, tmp_path / "x.mp4")
    with pytest.raises(InputError, match="does not exist"):
        export(tmp_path / "absent", "colmap", tmp_path / "model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no sparse model"):
        export(empty, "nerfstudio", tmp_path / "ns")
    with pytest.raises(InputError, match=r"\.splat file"):
        export(sfm_only, "splat", tmp_path / "x.ply")


def test_camera_path_passes_through_the_cameras(run: Path) -> None:
    rec = read_model(run / "sfm" / "sparse" / "0")
    poses = [rec.images[i].cam_from_world for i in sorted(rec.images)]
    path = camera_path(poses, 3 * (len(poses) - 1) + 1)
    assert len(path) == 16
    for k, pose in enumerate(poses):
        np.testing.assert_allclose(path[3 * k].matrix(), pose.matrix(), atol=1e-9)
    # in between, rotations stay between their neighbours
    angle = rotation_angle_deg(path[1].rotation @ poses[0].rotation.T)
    assert 0 < angle < rotation_angle_deg(poses[1].rotation @ poses[0].rotation.T)
    with pytest.raises(InputError):
        camera_path(poses[:1], 10)


def test_video_export(run: Path, tmp_path: Path) -> None:
    import imageio_ffmpeg

    path, _ = export_video(run, tmp_path / "fly.mp4", VideoConfig(frames_per_camera=2, max_size=64, fps=10))
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(48, 64, 3) for f in reader]
    assert meta["size"] == (64, 48)
    assert len(frames) == 2 * 5 + 1
    # the red Gaussians are seen from every camera on the path: red dominates the frame centres
    centre = np.stack(frames)[:, 16:32, 24:40].reshape(-1, 3).astype(float)
    assert centre[:, 0].mean() > centre[:, 1].mean() + 40


def test_cli_export(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:

    assert main(["export", str(run), "--format", "splat", "-o", str(tmp_path / "a.splat")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "absent"), "--format", "ply", "-o", str(tmp_path / "a.ply")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mapforge export: error:")
    assert main(["export", str(run), "-o", str(tmp_path / "b")]) == 2
    assert "nothing to export" in capsys.readouterr().err
