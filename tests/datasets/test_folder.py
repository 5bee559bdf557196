from __future__ import annotations

import numpy as np
import pytest

from mapforge.datasets import load_dataset
from mapforge.datasets.folder import load_folder
from mapforge.errors import InputError
from mapforge.io.colmap import write_cameras_text
from mapforge.io.images import image_size, write_image
from mapforge.scene import Camera
from tests.conftest import shared_dataset


def test_sceaux_castle_uses_k_txt():
    root = shared_dataset("sceaux_castle")
    data = load_dataset(root)
    assert data.metadata["layout"] == "folder" and len(data) == 11
    assert data.cam_from_world is None and data.image_dir == root / "images"
    assert data.metadata["intrinsics_file"] == root / "images" / "K.txt"
    assert data.metadata["focal_source"] == ["file"] * 11
    camera = data.cameras[0]
    assert (camera.width, camera.height) == (2832, 2128)
    np.testing.assert_allclose(camera.K, [[2905.88, 0, 1416], [0, 2905.88, 1064], [0, 0, 1]])
    assert data.split["test"] == [0, 8]


def test_sceaux_castle_downscaled_image_matches_its_camera():
    data = load_folder(shared_dataset("sceaux_castle"), downscale=8)
    camera = data.cameras[4]
    assert (camera.width, camera.height) == (354, 266)
    np.testing.assert_allclose(camera.params, [2905.88 / 8, 2905.88 / 8, 177, 133])
    assert data.load_image(4).shape == (266, 354, 3)


def test_nle_tower_guesses_intrinsics_per_image_size():
    root = shared_dataset("nle_tower")
    data = load_dataset(root)
    assert len(data) == 7 and data.cam_from_world is None and data.metadata["intrinsics_file"] is None
    assert data.metadata["focal_source"] == ["default"] * 7  # the phone photos carry no EXIF focal length
    for name, camera in zip(data.image_names, data.cameras):
        assert image_size(root / name) == (camera.width, camera.height)
        assert camera.model == "SIMPLE_PINHOLE"
        np.testing.assert_allclose(camera.params, [1.2 * 1334, camera.width / 2, camera.height / 2])
    landscape = next(i for i, c in enumerate(data.cameras) if c.width > c.height)
    assert data.load_image(landscape).shape == (1000, 1334, 3)


def _folder(tmp_path, sizes):
    for i, (width, height) in enumerate(sizes):
        write_image(tmp_path / f"img{i}.png", np.zeros((height, width, 3)))
    return tmp_path


def test_colmap_cameras_file_is_fitted_to_smaller_images(tmp_path):
    _folder(tmp_path, [(20, 10), (20, 10)])
    write_cameras_text({1: Camera("SIMPLE_RADIAL", 40, 20, [30.0, 20.0, 10.0, 0.1])}, tmp_path / "cameras.txt")
    data = load_dataset(tmp_path)
    assert data.metadata["focal_source"] == ["file", "file"]
    np.testing.assert_allclose(data.cameras[1].params, [15.0, 10.0, 5.0, 0.1])
    assert data.load_image(1).shape == (10, 20, 3)


def test_intrinsics_that_cannot_fit_are_refused(tmp_path):
    _folder(tmp_path, [(20, 10), (10, 20)])
    (tmp_path / "K.txt").write_text("30 0 10\n0 30 5\n0 0 1\n")
    with pytest.raises(InputError, match="different sizes"):
        load_dataset(tmp_path)
    (tmp_path / "K.txt").write_text("30 0 10\n0 30 5\n")
    with pytest.raises(InputError, match="9 numbers"):
        load_dataset(tmp_path)


def test_corrupt_image_in_folder_names_the_file(tmp_path):
    _folder(tmp_path, [(8, 6)])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        load_dataset(tmp_path)
