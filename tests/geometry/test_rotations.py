from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mapforge.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quat,
    quat_to_matrix,
    rotation_angle_deg,
)


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    return Rotation.random(n, random_state=int(rng.integers(1 << 31))).as_matrix()


def test_quat_matches_scipy(rng):
    quats = rng.normal(size=(50, 4))
    quats /= np.linalg.norm(quats, axis=-1, keepdims=True)
    expected = Rotation.from_quat(quats[:, [1, 2, 3, 0]]).as_matrix()  # scipy is (x, y, z, w)
    np.testing.assert_allclose(quat_to_matrix(quats), expected, atol=1e-12)


def test_quat_roundtrip_and_sign(rng):
    mats = random_rotations(rng, 100)
    quats = matrix_to_quat(mats)
    assert np.all(quats[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(quats, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(quats), mats, atol=1e-12)


def test_quat_unnormalised_input(rng):
    q = rng.normal(size=(10, 4))
    np.testing.assert_allclose(quat_to_matrix(q * 3.7), quat_to_matrix(q), atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, 1.0, np.pi - 1e-6, np.pi])
def test_axis_angle_roundtrip_edge_angles(rng, angle):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    mat = axis_angle_to_matrix(axis * angle)
    np.testing.assert_allclose(mat, Rotation.from_rotvec(axis * angle).as_matrix(), atol=1e-12)
    back = matrix_to_axis_angle(mat)
    if angle < np.pi - 1e-3:
        np.testing.assert_allclose(back, axis * angle, atol=1e-9)
    np.testing.assert_allclose(axis_angle_to_matrix(back), mat, atol=1e-9)


def test_batched_shapes(rng):
    mats = random_rotations(rng, 24).reshape(2, 3, 4, 3, 3)
    assert matrix_to_quat(mats).shape == (2, 3, 4, 4)
    assert matrix_to_axis_angle(mats).shape == (2, 3, 4, 3)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(mats)), mats, atol=1e-12)


def test_torch_matches_numpy_and_differentiable(rng):
    rotvec = rng.normal(size=(8, 3))
    t = torch.tensor(rotvec, requires_grad=True)
    np.testing.assert_allclose(axis_angle_to_matrix(t).detach().numpy(), axis_angle_to_matrix(rotvec), atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(axis_angle_to_matrix(t)).detach().numpy(), matrix_to_quat(axis_angle_to_matrix(rotvec)), atol=1e-12)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (t,))
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_rotation_angle_deg_small_and_large(rng):
    axis = np.array([0.0, 0.6, 0.8])
    for deg in [0.01, 1.0, 90.0, 179.0]:
        mat = axis_angle_to_matrix(axis * np.radians(deg))
        assert rotation_angle_deg(mat) == pytest.approx(deg, rel=1e-9)
