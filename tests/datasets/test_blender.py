from __future__ import annotations

import math

import numpy as np

from mapforge.datasets import load_dataset
from mapforge.datasets.blender import load_blender
from tests.conftest import shared_dataset


def test_lego_counts_cameras_and_split():
    root = shared_dataset("blender_lego_400")
    data = load_dataset(root)
    assert data.metadata["layout"] == "blender"
    assert len(data) == 300 and len(data.cameras) == 300 and len(data.cam_from_world) == 300
    assert data.split == {"train": list(range(100)), "test": list(range(100, 300))}  # the copy has no val split
    assert data.image_names[0] == "train/r_0.png" and data.image_names[100] == "test/r_0.png"
    camera = data.cameras[0]
    focal = 200 / math.tan(0.6911112070083618 / 2)
    assert (camera.model, camera.width, camera.height) == ("PINHOLE", 400, 400)
    np.testing.assert_allclose(camera.K, [[focal, 0, 200], [0, focal, 200], [0, 0, 1]], rtol=1e-7)
    assert all(c is camera for c in data.cameras)
    np.testing.assert_array_equal(data.background, [1, 1, 1])
    assert data.depth_loader is None  # the 8-bit depth PNGs have no documented encoding


def test_lego_cameras_on_a_sphere_looking_at_the_origin():
    data = load_blender(shared_dataset("blender_lego_400"))
    centres = np.array([-p.rotation.T @ p.translation for p in data.cam_from_world])
    radii = np.linalg.norm(centres, axis=1)
    np.testing.assert_allclose(radii, radii.mean(), rtol=1e-5)
    assert 4.0 < radii.mean() < 4.1
    # The optical axis (third row of R in OpenCV axes) points from the centre to the origin.
    axes = np.array([p.rotation[2] for p in data.cam_from_world])
    np.testing.assert_allclose(axes, -centres / radii[:, None], atol=1e-4)
    for pose, camera in zip(data.cam_from_world[::25], data.cameras[::25]):
        np.testing.assert_allclose(camera.project(pose.apply(np.zeros((1, 3))))[0], [200, 200], atol=0.05)


def test_lego_images_are_composited_and_downscale_matches_cameras():
    root = shared_dataset("blender_lego_400")
    image = load_blender(root).load_image(0)
    assert image.shape == (400, 400, 3) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0, 0], [1, 1, 1])  # transparent corner over the white background
    assert image[150:250, 150:250].mean() < 0.9  # the model itself
    black = load_blender(root, background=(0, 0, 0), downscale=4)
    small = black.load_image(0)
    assert small.shape == (100, 100, 3) and (black.cameras[0].width, black.cameras[0].height) == (100, 100)
    np.testing.assert_allclose(black.cameras[0].params, np.asarray(load_blender(root).cameras[0].params) / 4)
    np.testing.assert_array_equal(small[0, 0], [0, 0, 0])
