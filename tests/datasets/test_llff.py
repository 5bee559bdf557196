from __future__ import annotations

import numpy as np
import pytest

from mapforge.datasets import load_dataset
from mapforge.datasets.llff import load_llff
from mapforge.errors import InputError
from tests.conftest import shared_dataset


def test_fern_counts_intrinsics_bounds_split():
    root = shared_dataset("llff_fern")
    data = load_dataset(root)
    assert data.metadata["layout"] == "llff" and len(data) == 20
    hwf = np.load(root / "poses_bounds.npy")[:, :15].reshape(-1, 3, 5)[:, :, 4]
    assert tuple(hwf[0, :2]) == (3024, 4032)
    focal = hwf[0, 2] * 504 / 4032
    for camera in data.cameras:
        assert (camera.model, camera.width, camera.height) == ("PINHOLE", 504, 378)
        np.testing.assert_allclose(camera.params, [focal, focal, 252, 189])
    assert data.near_far.shape == (20, 2) and (data.near_far[:, 0] < data.near_far[:, 1]).all()
    assert data.split["test"] == [0, 8, 16] and len(data.split["train"]) == 17
    assert data.image_dir.name == "images_8"
    assert data.load_image(3).shape == (378, 504, 3)


def test_fern_colmap_points_project_into_every_image_within_the_bounds():
    # poses_bounds.npy is written from the COLMAP model in the same (unscaled) frame, so the sparse points must
    # land inside the images, in front of the cameras, between each image's near and far bounds.
    data = load_llff(shared_dataset("llff_fern"))
    points = data.points.points_xyz()
    assert len(points) == 10091 and not data.points.images
    # The COLMAP camera (full resolution, SIMPLE_RADIAL) has the focal length that poses_bounds records.
    colmap_camera = next(iter(data.points.cameras.values()))
    assert colmap_camera.params[0] == pytest.approx(data.metadata["full_resolution_hwf"][0, 2])
    for pose, camera, (near, far) in zip(data.cam_from_world, data.cameras, data.near_far):
        in_camera = pose.apply(points)
        depth = in_camera[:, 2]
        assert (depth > 0).mean() > 0.999
        pixels = camera.project(in_camera[depth > 0])
        inside = (pixels[:, 0] >= 0) & (pixels[:, 0] <= 504) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= 378)
        assert inside.mean() > 0.95
        low, high = np.percentile(depth, [1, 99])
        assert 0.9 * near < low and high < 1.1 * far


def test_fern_downscale_and_missing_factor():
    root = shared_dataset("llff_fern")
    data = load_llff(root, downscale=2)
    assert (data.cameras[0].width, data.cameras[0].height) == (252, 189)
    assert data.load_image(0).shape == (189, 252, 3)
    with pytest.raises(InputError, match="images_4"):
        load_llff(root, factor=4)


def test_llff_nan_pose_and_negative_focal_are_named(tmp_path):
    from mapforge.datasets.llff import read_poses_bounds
    from mapforge.io.images import write_image

    table = np.zeros((2, 17))
    table[:, :15] = np.hstack([np.eye(3), np.zeros((3, 1)), [[6], [8], [10]]]).reshape(15)
    table[:, 15:] = [1, 10]
    table[1, 3] = np.nan
    np.save(tmp_path / "poses_bounds.npy", table)
    with pytest.raises(InputError, match=r"poses_bounds.npy: NaN in the pose of row 1 \(image 1 in name order\)"):
        read_poses_bounds(tmp_path / "poses_bounds.npy")
    table[1, 3] = 0.0
    table[:, 14] = -10.0
    np.save(tmp_path / "poses_bounds.npy", table)
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "images" / name, np.zeros((6, 8, 3)))
    with pytest.raises(InputError, match="the camera of a.png has focal length -10"):
        load_llff(tmp_path)


def test_llff_image_count_mismatch(tmp_path):
    table = np.zeros((2, 17))
    table[:, :15] = np.hstack([np.eye(3), np.zeros((3, 1)), [[6], [8], [10]]]).reshape(15)
    table[:, 15:] = [1, 10]
    np.save(tmp_path / "poses_bounds.npy", table)
    (tmp_path / "images").mkdir()
    from mapforge.io.images import write_image

    write_image(tmp_path / "images" / "a.png", np.zeros((6, 8, 3)))
    with pytest.raises(InputError, match="2 poses but 1 images"):
        load_llff(tmp_path)
