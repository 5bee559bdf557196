from __future__ import annotations

import numpy as np

from mapforge.datasets import detect_layout, load_dataset
from mapforge.geometry.transforms import Rigid3
from mapforge.io.images import write_image
from mapforge.io.transforms_json import write_transforms
from mapforge.scene import Camera


def test_transforms_json_capture_with_split_and_alpha(tmp_path, rng):
    (tmp_path / "images").mkdir()
    paths = []
    for i in range(4):
        rgba = np.zeros((6, 8, 4), np.float32)
        rgba[..., 0] = 1.0
        rgba[:, :4, 3] = 1.0
        paths.append(write_image(tmp_path / "images" / f"{i}.png", rgba))
    camera = Camera("PINHOLE", 8, 6, [7.0, 7.0, 4.0, 3.0])
    poses = [Rigid3(translation=rng.normal(size=3)) for _ in range(4)]
    split = {"train_filenames": ["images/0.png", "images/1.png", "images/3.png"], "test_filenames": ["images/2.png"]}
    write_transforms(tmp_path / "transforms.json", paths, [camera] * 4, poses, extra=split)
    assert detect_layout(tmp_path) == "nerfstudio"
    data = load_dataset(tmp_path, downscale=2)
    assert data.split == {"train": [0, 1, 3], "test": [2]}
    assert data.image_names[2] == "images/2.png"
    np.testing.assert_array_equal(data.background, [1, 1, 1])
    image = data.load_image(0)
    assert image.shape == (3, 4, 3)
    np.testing.assert_allclose(image[:, :2], np.broadcast_to([1, 0, 0], (3, 2, 3)))
    np.testing.assert_allclose(image[:, 2:], 1.0)
    np.testing.assert_allclose(data.cam_from_world[1].translation, poses[1].translation, atol=1e-12)


def test_intrinsics_for_larger_images_are_rescaled_and_default_split(tmp_path):
    paths = [write_image(tmp_path / f"{i}.jpg", np.zeros((6, 8, 3))) for i in range(9)]
    camera = Camera("OPENCV", 16, 12, [14.0, 14.0, 8.0, 6.0, 0.1, 0.0, 0.0, 0.0])
    write_transforms(tmp_path / "transforms.json", paths, [camera] * 9, [Rigid3()] * 9)
    data = load_dataset(tmp_path / "transforms.json")
    assert data.background is None and data.split["test"] == [0, 8]
    assert (data.cameras[0].width, data.cameras[0].height) == (8, 6)
    np.testing.assert_allclose(data.cameras[0].params, [7.0, 7.0, 4.0, 3.0, 0.1, 0.0, 0.0, 0.0])
    assert all(c is data.cameras[0] for c in data.cameras)
