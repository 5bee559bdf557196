"""Undistortion into the dense workspace, as COLMAP's image_undistorter."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.io.colmap import read_model
from mapforge.io.images import image_size, write_image
from mapforge.mvs.undistort import undistort
from mapforge.mvs.workspace import Workspace
from mapforge.scene import Camera, Image, Point3D, Reconstruction

POINT = np.array([0.3, -0.2, 4.0])


def _project(tmp_path, size=(120, 90)) -> tuple[Reconstruction, object]:
    rng = np.random.default_rng(0)
    camera = Camera("OPENCV", *size, [100.0, 102.0, 61.0, 44.0, -0.15, 0.03, 0.001, -0.002])
    rec = Reconstruction(cameras={1: camera})
    images = tmp_path / "images"
    for k in (1, 2):
        pose = Rigid3(np.eye(3), np.array([0.2 * k, 0.0, 0.0]))
        keypoint = camera.project(pose.apply(POINT[None]))
        rec.images[k] = Image(f"view{k}.jpg", 1, pose, keypoint, [1])
        write_image(images / f"view{k}.jpg", rng.random((size[1], size[0], 3)))
    rec.points3D[1] = Point3D(POINT, track=[[1, 0], [2, 0]])
    return rec, images


def test_images_become_pinhole_and_keypoints_follow(tmp_path) -> None:
    rec, images = _project(tmp_path)
    workspace = Workspace(tmp_path / "dense")
    model = undistort(rec, images, workspace)
    written = read_model(workspace.sparse)
    for image in written.images.values():
        camera = written.cameras[image.camera_id]
        assert camera.model == "PINHOLE"
        assert image_size(workspace.images / image.name) == (camera.width, camera.height)
        np.testing.assert_allclose(image.keypoints[0], camera.project(image.cam_from_world.apply(POINT[None]))[0], atol=1e-6)
    assert written.points3D.keys() == rec.points3D.keys() and model.images.keys() == rec.images.keys()


def test_max_image_size_bounds_the_longer_side(tmp_path) -> None:
    rec, images = _project(tmp_path)
    model = undistort(rec, images, Workspace(tmp_path / "dense"), max_image_size=60)
    camera = model.cameras[1]
    assert max(camera.width, camera.height) == 60


def test_a_rerun_keeps_the_workspace(tmp_path) -> None:
    rec, images = _project(tmp_path)
    workspace = Workspace(tmp_path / "dense")
    undistort(rec, images, workspace)
    stamp = (workspace.images / "view1.jpg").stat().st_mtime_ns
    undistort(rec, images, workspace)
    assert (workspace.images / "view1.jpg").stat().st_mtime_ns == stamp
    undistort(rec, images, workspace, max_image_size=60)  # other settings: undistorted again
    assert max(image_size(workspace.images / "view1.jpg")) == 60


def test_missing_or_mismatched_images_are_input_errors(tmp_path) -> None:
    rec, images = _project(tmp_path)
    (images / "view2.jpg").unlink()
    with pytest.raises(InputError, match="view2.jpg of the model is not in"):
        undistort(rec, images, Workspace(tmp_path / "dense"))
    write_image(images / "view2.jpg", np.zeros((45, 60, 3)))
    with pytest.raises(InputError, match="is 60x45 but its camera"):
        undistort(rec, images, Workspace(tmp_path / "dense"))
    with pytest.raises(InputError, match="no registered images"):
        undistort(Reconstruction(), images, Workspace(tmp_path / "dense"))
