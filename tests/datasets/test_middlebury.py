from __future__ import annotations

import itertools

import numpy as np
import pytest

from mapforge.datasets import load_dataset
from mapforge.datasets.middlebury import read_par
from mapforge.errors import InputError
from tests.conftest import shared_dataset

# The tight bounding box of the temple, from the data set's README.txt.
BOX = np.array([[-0.073568, 0.021728, -0.012445], [0.028855, 0.181892, 0.062736]])


def test_temple_counts_and_intrinsics():
    data = load_dataset(shared_dataset("middlebury_templeSparseRing"))
    assert data.metadata["layout"] == "middlebury" and len(data) == 16
    assert data.image_names[0] == "templeSR0001.png"
    camera = data.cameras[0]
    assert (camera.width, camera.height) == (640, 480)
    np.testing.assert_allclose(camera.K, [[1520.4, 0, 302.32], [0, 1525.9, 246.87], [0, 0, 1]])
    assert data.split["test"] == [0, 8]
    assert data.load_image(5).shape == (480, 640, 3)


def test_temple_bounding_box_is_seen_by_every_camera():
    data = load_dataset(shared_dataset("middlebury_templeSparseRing"))
    corners = np.array(list(itertools.product(*BOX.T)))
    for pose, camera in zip(data.cam_from_world, data.cameras):
        in_camera = pose.apply(corners)
        assert (in_camera[:, 2] > 0).all()
        pixels = camera.project(in_camera)
        assert (pixels >= 0).all() and (pixels[:, 0] <= 640).all() and (pixels[:, 1] <= 480).all()
    # The projection is K [R | t] exactly as the README defines it.
    _, K, pose = read_par(data.image_dir / "templeSR_par.txt")[3]
    homogeneous = K @ pose.matrix() @ np.append(BOX.mean(axis=0), 1.0)
    np.testing.assert_allclose(data.cameras[3].project(pose.apply(BOX.mean(axis=0)[None]))[0], homogeneous[:2] / homogeneous[2])


def test_bad_par_file(tmp_path):
    (tmp_path / "x_par.txt").write_text("2\nimg.png 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(InputError, match="x_par.txt"):
        load_dataset(tmp_path)
