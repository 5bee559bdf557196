from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mapforge.errors import InputError
from mapforge.geometry.alignment import (
    RansacConfig,
    align_camera_centers,
    align_cameras,
    umeyama,
    umeyama_ransac,
)
from mapforge.geometry.transforms import Rigid3, Sim3


def known_sim3() -> Sim3:
    return Sim3(2.7, Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix(), [1.0, -4.0, 0.5])


def test_umeyama_recovers_known_sim3(rng):
    truth = known_sim3()
    src = rng.normal(size=(50, 3))
    sim = umeyama(src, truth.apply(src))
    assert sim.scale == pytest.approx(truth.scale, rel=1e-12)
    np.testing.assert_allclose(sim.rotation, truth.rotation, atol=1e-12)
    np.testing.assert_allclose(sim.translation, truth.translation, atol=1e-12)


def test_umeyama_rigid_and_reflection_safe(rng):
    truth = known_sim3()
    rigid = Sim3(1.0, truth.rotation, truth.translation)
    src = rng.normal(size=(20, 3))
    sim = umeyama(src, rigid.apply(src) + rng.normal(0, 1e-3, (20, 3)), with_scale=False)
    assert sim.scale == 1.0
    assert np.linalg.det(sim.rotation) == pytest.approx(1.0)
    # planar points (a reflection would fit them as well as a rotation)
    planar = np.c_[rng.normal(size=(10, 2)), np.zeros(10)]
    sim = umeyama(planar, truth.apply(planar))
    assert np.linalg.det(sim.rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(sim.apply(planar), truth.apply(planar), atol=1e-10)


def test_umeyama_noise_and_weights(rng):
    truth = known_sim3()
    src = rng.normal(size=(200, 3))
    dst = truth.apply(src) + rng.normal(0, 0.01, (200, 3))
    sim = umeyama(src, dst)
    assert sim.scale == pytest.approx(truth.scale, rel=1e-2)
    dst[:5] += 100.0
    weights = np.ones(200)
    weights[:5] = 0
    weighted = umeyama(src, dst, weights=weights)
    assert weighted.scale == pytest.approx(truth.scale, rel=1e-2)


def test_ransac_with_outliers(rng):
    truth = known_sim3()
    src = rng.uniform(-5, 5, (100, 3))
    dst = truth.apply(src) + rng.normal(0, 0.01, (100, 3))
    outliers = rng.choice(100, 40, replace=False)
    dst[outliers] = rng.uniform(-30, 30, (40, 3))
    sim, inliers = umeyama_ransac(src, dst, RansacConfig(threshold=0.1))
    expected = np.ones(100, dtype=bool)
    expected[outliers] = False
    np.testing.assert_array_equal(inliers, expected)
    assert sim.scale == pytest.approx(truth.scale, rel=1e-3)
    np.testing.assert_allclose(sim.rotation, truth.rotation, atol=1e-3)
    robust = align_camera_centers(src, dst, ransac=RansacConfig(threshold=0.1))
    np.testing.assert_allclose(robust.matrix(), sim.matrix(), atol=1e-12)


def test_align_cameras_evaluates_poses_up_to_similarity(rng):
    truth = known_sim3()
    poses = [Rigid3(Rotation.random(random_state=i).as_matrix(), rng.normal(size=3)) for i in range(8)]
    moved = [truth.transform_pose(p) for p in poses]
    sim = align_cameras(poses, moved)
    for p, m in zip(poses, moved):
        np.testing.assert_allclose(sim.transform_pose(p).matrix(), m.matrix(), atol=1e-10)


def test_degenerate_input_raises(rng):
    with pytest.raises(InputError):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(InputError):
        umeyama(np.ones((5, 3)), rng.normal(size=(5, 3)))
    with pytest.raises(InputError):
        umeyama(rng.normal(size=(5, 3)), rng.normal(size=(4, 3)))
    with pytest.raises(InputError):
        align_cameras([Rigid3()], [])
