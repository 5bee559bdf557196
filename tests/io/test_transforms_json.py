from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.geometry.rotations import axis_angle_to_matrix
from mapforge.geometry.transforms import Rigid3
from mapforge.io.images import write_image
from mapforge.io.transforms_json import (
    cam_from_world_from_opengl,
    opengl_from_cam_from_world,
    read_transforms,
    write_transforms,
)
from mapforge.scene import Camera
from tests.conftest import shared_dataset

NERFSTUDIO_FIELDS = {"camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2"}


def _poses(rng, count: int) -> list[Rigid3]:
    return [Rigid3(axis_angle_to_matrix(rng.normal(size=3)), rng.normal(size=3) * 3) for _ in range(count)]


def _images(folder, count: int, width: int = 8, height: int = 6) -> list:
    (folder / "images").mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / "images" / f"frame_{i:03d}.png"
        write_image(path, np.full((height, width, 3), i / max(count, 1), np.float32))
        paths.append(path)
    return paths


def _assert_same(data, paths, cameras, poses):
    assert data.image_paths == [p.resolve() for p in paths]
    for got, want in zip(data.cameras, cameras):
        assert (got.model, got.width, got.height) == (want.model, want.width, want.height)
        np.testing.assert_allclose(got.params, want.params, rtol=1e-12, atol=1e-12)
    for got, want in zip(data.cam_from_world, poses):
        np.testing.assert_allclose(got.matrix(), want.matrix(), atol=1e-9)


def test_axis_change_is_opengl_to_opencv():
    # In OpenGL axes the identity camera-to-world looks down -z with +y up. From (0, 0, 5) it sees the origin
    # straight ahead, and a point above the origin (+y) lands above the image centre (smaller pixel y).
    world_from_gl = np.eye(4)
    world_from_gl[:3, 3] = [0, 0, 5]
    cam_from_world = cam_from_world_from_opengl(world_from_gl)
    np.testing.assert_allclose(cam_from_world.apply(np.zeros(3)), [0, 0, 5])
    above = cam_from_world.apply(np.array([0.0, 1.0, 0.0]))
    right = cam_from_world.apply(np.array([1.0, 0.0, 0.0]))
    assert above[1] < 0 and right[0] > 0
    np.testing.assert_allclose(opengl_from_cam_from_world(cam_from_world), world_from_gl, atol=1e-12)


def test_nerfstudio_round_trip_shared_camera(tmp_path, rng):
    paths = _images(tmp_path, 4)
    camera = Camera("OPENCV", 8, 6, [7.5, 7.0, 4.1, 2.9, 0.01, -0.002, 0.0003, -0.0004])
    poses = _poses(rng, 4)
    out = write_transforms(tmp_path / "transforms.json", paths, [camera] * 4, poses)
    meta = json.loads(out.read_text())
    assert NERFSTUDIO_FIELDS <= set(meta) and meta["camera_model"] == "OPENCV"
    assert (meta["w"], meta["h"], meta["fl_x"], meta["cx"]) == (8, 6, 7.5, 4.1)
    assert meta["frames"][0]["file_path"] == "images/frame_000.png"
    assert np.asarray(meta["frames"][0]["transform_matrix"]).shape == (4, 4)
    data = read_transforms(out)
    assert data.flavour == "nerfstudio"
    _assert_same(data, paths, [camera] * 4, poses)
    assert len({id(c) for c in data.cameras}) == 1


def test_nerfstudio_round_trip_per_frame_cameras_and_models(tmp_path, rng):
    paths = _images(tmp_path, 3)
    cameras = [
        Camera("PINHOLE", 8, 6, [7.0, 7.2, 4.0, 3.0]),
        Camera("FULL_OPENCV", 8, 6, [7.0, 7.2, 4.0, 3.0, 0.1, 0.01, 0.001, 0.002, 0.003, 0, 0, 0]),
        Camera("OPENCV", 8, 6, [6.0, 6.2, 4.0, 3.0, 0.1, 0.01, 0.001, 0.002]),
    ]
    poses = _poses(rng, 3)
    out = write_transforms(tmp_path / "transforms.json", paths, cameras, poses, extra={"train_filenames": ["images/frame_000.png"]})
    meta = json.loads(out.read_text())
    # Shared fields go to the top (nerfstudio reads camera_model only there), differing ones per frame, and the
    # distortion coefficients together (nerfstudio takes all from the top once one is there).
    assert (meta["camera_model"], meta["w"], meta["h"], meta["cx"]) == ("OPENCV", 8, 6, 4.0)
    assert "fl_x" not in meta and all("fl_x" in frame and "k1" in frame and "k3" in frame for frame in meta["frames"])
    assert "p1" not in meta and "w" not in meta["frames"][0]
    data = read_transforms(out)
    _assert_same(data, paths, cameras, poses)
    assert data.metadata["train_filenames"] == ["images/frame_000.png"]


def test_fisheye_and_simple_models_map_to_opencv_family(tmp_path, rng):
    paths = _images(tmp_path, 2)
    fisheye = Camera("OPENCV_FISHEYE", 8, 6, [5.0, 5.0, 4.0, 3.0, 0.1, -0.01, 0.001, -0.0001])
    poses = _poses(rng, 2)
    data = read_transforms(write_transforms(tmp_path / "fish.json", paths, [fisheye] * 2, poses))
    _assert_same(data, paths, [fisheye] * 2, poses)
    pinhole = Camera("PINHOLE", 8, 6, [5.0, 5.0, 4.0, 3.0])
    with pytest.raises(ValueError, match="one camera_model"):
        write_transforms(tmp_path / "mixed.json", paths, [fisheye, pinhole], poses)
    radial = Camera("SIMPLE_RADIAL", 8, 6, [5.0, 4.0, 3.0, 0.05])
    data = read_transforms(write_transforms(tmp_path / "radial.json", paths, [radial] * 2, poses))
    assert data.cameras[0].model == "OPENCV"
    np.testing.assert_allclose(data.cameras[0].params, [5, 5, 4, 3, 0.05, 0, 0, 0])


def test_instant_ngp_round_trip(tmp_path, rng):
    paths = _images(tmp_path, 3)
    camera = Camera("OPENCV", 8, 6, [7.0, 7.0, 4.0, 3.0, 0.02, 0.0, 0.0, 0.0])
    poses = _poses(rng, 3)
    out = write_transforms(tmp_path / "transforms.json", paths, [camera] * 3, poses, flavour="instant-ngp")
    meta = json.loads(out.read_text())
    assert meta["aabb_scale"] == 16
    assert meta["camera_angle_x"] == pytest.approx(2 * math.atan(4 / 7))
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "p1", "p2"} <= set(meta)
    data = read_transforms(out)
    assert data.flavour == "instant-ngp" and data.metadata["aabb_scale"] == 16
    _assert_same(data, paths, [camera] * 3, poses)


def test_blender_round_trip_paths_without_extension(tmp_path, rng):
    paths = _images(tmp_path, 3, width=10, height=10)
    camera = Camera("PINHOLE", 10, 10, [12.0, 12.0, 5.0, 5.0])
    poses = _poses(rng, 3)
    out = write_transforms(tmp_path / "transforms_train.json", paths, [camera] * 3, poses, flavour="blender")
    meta = json.loads(out.read_text())
    assert set(meta) == {"camera_angle_x", "frames"}
    assert meta["frames"][1]["file_path"] == "./images/frame_001"
    data = read_transforms(out)
    assert data.flavour == "blender"
    _assert_same(data, paths, [camera] * 3, poses)
    with pytest.raises(ValueError, match="principal point"):
        write_transforms(tmp_path / "x.json", paths, [Camera("PINHOLE", 10, 10, [12, 12, 5.5, 5])] * 3, poses, flavour="blender")


def test_reads_nerf_synthetic_lego():
    root = shared_dataset("blender_lego_400")
    data = read_transforms(root / "transforms_train.json")
    assert data.flavour == "blender" and len(data.image_paths) == 100
    assert data.image_paths[0] == (root / "train" / "r_0.png").resolve()
    camera = data.cameras[0]
    angle = json.loads((root / "transforms_train.json").read_text())["camera_angle_x"]
    assert (camera.model, camera.width, camera.height) == ("PINHOLE", 400, 400)
    np.testing.assert_allclose(camera.params, [200 / math.tan(angle / 2)] * 2 + [200, 200])
    # Every camera looks at the object at the origin: it projects to the image centre.
    for pose in data.cam_from_world[::10]:
        origin = pose.apply(np.zeros(3))
        assert origin[2] > 0
        np.testing.assert_allclose(camera.project(origin[None])[0], [200, 200], atol=1.0)


def _write(tmp_path, content) -> object:
    path = tmp_path / "transforms.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _frame(**overrides) -> dict:
    frame = {"file_path": "images/frame_000.png", "transform_matrix": np.eye(4).tolist()}
    frame.update(overrides)
    return frame


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "JSON object"),
        ({"fl_x": 5, "w": 8, "h": 6}, "'frames'"),
        ({"fl_x": 5, "w": 8, "h": 6, "frames": [{"transform_matrix": np.eye(4).tolist()}]}, "'file_path'"),
        ({"fl_x": 5, "w": 8, "h": 6, "frames": [{"file_path": "images/frame_000.png"}]}, "'transform_matrix'"),
        ({"fl_x": 5, "w": 8, "h": 6, "frames": [_frame(transform_matrix=[[1, 2], [3, 4]])]}, "'transform_matrix'"),
        ({"fl_x": 5, "w": 8, "h": 6, "frames": [_frame(transform_matrix=(2 * np.eye(4)).tolist())]}, "not a rigid"),
        ({"fl_x": "five", "w": 8, "h": 6, "frames": [_frame()]}, "'fl_x'"),
        ({"w": 8, "h": 6, "cx": 4, "frames": [_frame(fl_y=3)]}, "'fl_x' or 'camera_angle_x'"),
        ({"fl_x": 5, "w": 8, "h": 6, "camera_model": "EQUIRECTANGULAR", "frames": [_frame()]}, "EQUIRECTANGULAR"),
        ({"fl_x": 5, "w": 8, "h": 6, "k4": 0.1, "frames": [_frame()]}, "k4"),
        ({"camera_angle_x": 0.7, "frames": [_frame(file_path="./images/missing")]}, "not found"),
        ({"fl_x": 5, "w": 8, "h": 6, "frames": [_frame(), _frame(transform_matrix=np.full((4, 4), np.nan).tolist())]},
         r"NaN in the transform_matrix of frame 1$"),
        ({"fl_x": -5, "w": 8, "h": 6, "frames": [_frame()]}, "the camera of frame 0 has focal length -5"),
        ({"fl_x": 5, "w": 8, "h": 6, "cx": float("nan"), "frames": [_frame()]}, "'cx' .* must be a finite number"),
    ],
)
def test_malformed_files_raise_input_error_naming_file_and_field(tmp_path, content, message):
    _images(tmp_path, 1)
    path = _write(tmp_path, content)
    with pytest.raises(InputError, match=message) as info:
        read_transforms(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_transforms(tmp_path / "transforms.json")
