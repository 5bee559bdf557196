from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from mapforge.geometry.transforms import Rigid3, Sim3


def random_rigid(rng: np.random.Generator) -> Rigid3:
    return Rigid3(Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix(), rng.normal(size=3))


def test_rigid_inverse_and_composition(rng):
    a_from_b, b_from_c = random_rigid(rng), random_rigid(rng)
    points = rng.normal(size=(20, 3))
    a_from_c = a_from_b * b_from_c
    np.testing.assert_allclose(a_from_c.apply(points), a_from_b.apply(b_from_c.apply(points)), atol=1e-12)
    np.testing.assert_allclose(a_from_b.inverse().apply(a_from_b.apply(points)), points, atol=1e-12)
    identity = a_from_b * a_from_b.inverse()
    np.testing.assert_allclose(identity.matrix(), np.eye(4)[:3], atol=1e-12)


def test_rigid_matrix_and_quat_roundtrip(rng):
    pose = random_rigid(rng)
    again = Rigid3.from_quat(pose.quat, pose.translation)
    np.testing.assert_allclose(again.matrix(), pose.matrix(), atol=1e-12)
    np.testing.assert_allclose(Rigid3.from_matrix(pose.matrix4()).matrix(), pose.matrix(), atol=0)
    homog = np.c_[rng.normal(size=(5, 3)), np.ones(5)]
    np.testing.assert_allclose((pose.matrix4() @ homog.T).T[:, :3], pose.apply(homog[:, :3]), atol=1e-12)


def test_sim3_inverse_and_composition(rng):
    a = Sim3(2.5, random_rigid(rng).rotation, rng.normal(size=3))
    b = Sim3(0.3, random_rigid(rng).rotation, rng.normal(size=3))
    points = rng.normal(size=(20, 3))
    np.testing.assert_allclose((a * b).apply(points), a.apply(b.apply(points)), atol=1e-12)
    np.testing.assert_allclose(a.inverse().apply(a.apply(points)), points, atol=1e-12)
    np.testing.assert_allclose(a.matrix()[:, :3] @ points.T + a.matrix()[:, 3:], a.apply(points).T, atol=1e-12)


def test_sim3_transform_pose_preserves_projection(rng):
    cam_from_world = random_rigid(rng)
    new_from_world = Sim3(1.7, random_rigid(rng).rotation, rng.normal(size=3))
    cam_from_new = new_from_world.transform_pose(cam_from_world)
    points = rng.normal(size=(10, 3)) + np.array([0, 0, 5.0])
    before = cam_from_world.apply(points)
    after = cam_from_new.apply(new_from_world.apply(points))
    np.testing.assert_allclose(after[:, :2] / after[:, 2:], before[:, :2] / before[:, 2:], atol=1e-12)
    np.testing.assert_allclose(after, 1.7 * before, atol=1e-12)
