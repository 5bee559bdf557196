from __future__ import annotations

import numpy as np
import pytest

from mapforge.datasets import load_dataset
from mapforge.datasets.strecha import load_strecha, read_camera_file
from mapforge.errors import InputError
from tests.conftest import shared_dataset


def _closest_point_to_axes(data) -> np.ndarray:
    lhs, rhs = np.zeros((3, 3)), np.zeros(3)
    for pose in data.cam_from_world:
        centre, axis = -pose.rotation.T @ pose.translation, pose.rotation[2]
        projector = np.eye(3) - np.outer(axis, axis)
        lhs += projector
        rhs += projector @ centre
    return np.linalg.solve(lhs, rhs)


def test_fountain_counts_and_cameras():
    root = shared_dataset("strecha_fountain-P11")
    data = load_dataset(root)
    assert data.metadata["layout"] == "strecha" and len(data) == 11
    camera = data.cameras[0]
    assert (camera.width, camera.height) == (3072, 2048)
    np.testing.assert_allclose(camera.K, [[2759.48, 0, 1520.69], [0, 2764.16, 1006.81], [0, 0, 1]])
    # The file gives the centre C and the camera-to-world R: cam_from_world = (R^T, -R^T C).
    _, pose = read_camera_file(root / "gt_dense_cameras" / "0000.jpg.camera")
    np.testing.assert_allclose(-pose.rotation.T @ pose.translation, [-7.28137, -7.57667, 0.204446], atol=1e-9)
    np.testing.assert_allclose(pose.rotation.T[:, 0], [0.450927, -0.892535, 0.00679989], atol=1e-5)


def test_fountain_cameras_look_at_a_common_point():
    data = load_dataset(shared_dataset("strecha_fountain-P11"))
    target = _closest_point_to_axes(data)
    for pose, camera in zip(data.cam_from_world, data.cameras):
        in_camera = pose.apply(target[None])
        assert 5 < in_camera[0, 2] < 15
        u, v = camera.project(in_camera)[0]
        assert 0.3 * 3072 < u < 0.7 * 3072 and 0.3 * 2048 < v < 0.7 * 2048


def test_fountain_downscaled_loading_without_full_decode():
    data = load_strecha(shared_dataset("strecha_fountain-P11"), downscale=8)
    assert (data.cameras[0].width, data.cameras[0].height) == (384, 256)
    np.testing.assert_allclose(data.cameras[0].params, [2759.48 / 8, 2764.16 / 8, 1520.69 / 8, 1006.81 / 8])
    assert data.load_image(0).shape == (256, 384, 3)


def test_malformed_camera_file(tmp_path):
    (tmp_path / "gt_dense_cameras").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"")
    (tmp_path / "gt_dense_cameras" / "a.jpg.camera").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(InputError, match="a.jpg.camera"):
        load_dataset(tmp_path)
