from __future__ import annotations

import numpy as np
import pytest

from mapforge.datasets import detect_layout, load_dataset
from mapforge.errors import InputError
from mapforge.geometry.rotations import axis_angle_to_matrix
from mapforge.geometry.transforms import Rigid3
from mapforge.io.colmap import write_model
from mapforge.io.images import write_image
from mapforge.scene import Camera, Image, Point3D, Reconstruction


def _project(tmp_path, rng, image_scale: int = 1) -> Reconstruction:
    rec = Reconstruction()
    rec.cameras[1] = Camera("SIMPLE_RADIAL", 32, 24, [30.0, 16.0, 12.0, 0.01])
    rec.cameras[2] = Camera("PINHOLE", 40, 20, [35.0, 36.0, 20.0, 10.0])
    names = ["c.png", "a.png", "b.png"]
    for image_id, (name, camera_id) in enumerate(zip(names, [1, 2, 1]), start=1):
        pose = Rigid3(axis_angle_to_matrix(rng.normal(size=3) * 0.1), rng.normal(size=3))
        rec.images[image_id] = Image(name, camera_id, pose, np.zeros((1, 2)), np.array([1]))
    rec.points3D[1] = Point3D([0.1, 0.2, 5.0], [10, 20, 30], 0.5, [[1, 0], [2, 0], [3, 0]])
    write_model(rec, tmp_path / "sparse" / "0")
    (tmp_path / "images").mkdir()
    for image in rec.images.values():
        camera = rec.cameras[image.camera_id]
        write_image(tmp_path / "images" / image.name, np.zeros((camera.height // image_scale, camera.width // image_scale, 3)))
    return rec


def test_colmap_project_loads_in_name_order_with_model(tmp_path, rng):
    rec = _project(tmp_path, rng)
    assert detect_layout(tmp_path) == "colmap"
    data = load_dataset(tmp_path)
    assert data.image_names == ["a.png", "b.png", "c.png"]
    assert data.metadata["image_ids"] == [2, 3, 1]
    for index, image_id in enumerate(data.metadata["image_ids"]):
        image = rec.images[image_id]
        np.testing.assert_allclose(data.cam_from_world[index].matrix(), image.cam_from_world.matrix(), atol=1e-12)
        np.testing.assert_allclose(data.cameras[index].params, rec.cameras[image.camera_id].params)
    assert data.cameras[1] is data.cameras[2]
    np.testing.assert_allclose(data.points.points_xyz(), [[0.1, 0.2, 5.0]])
    assert data.load_image(0).shape == (20, 40, 3)
    # A model folder given directly finds the images beside sparse/.
    assert load_dataset(tmp_path / "sparse" / "0").image_names == data.image_names


def test_colmap_images_smaller_than_the_model_and_downscale(tmp_path, rng):
    _project(tmp_path, rng, image_scale=2)
    data = load_dataset(tmp_path)
    np.testing.assert_allclose(data.cameras[0].params, [17.5, 18.0, 10.0, 5.0])
    small = load_dataset(tmp_path, downscale=2)
    assert (small.cameras[0].width, small.cameras[0].height) == (10, 5)
    assert small.load_image(0).shape == (5, 10, 3)


def test_colmap_missing_image_or_wrong_aspect(tmp_path, rng):
    _project(tmp_path, rng)
    write_image(tmp_path / "images" / "a.png", np.zeros((20, 20, 3)))
    with pytest.raises(InputError, match="aspect"):
        load_dataset(tmp_path)
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(InputError, match="a.png not found"):
        load_dataset(tmp_path)
