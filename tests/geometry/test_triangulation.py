from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mapforge.errors import InputError
from mapforge.geometry.cameras import project, unproject
from mapforge.geometry.transforms import Rigid3
from mapforge.geometry.triangulation import (
    camera_centers,
    cheirality,
    reprojection_errors,
    triangulate_dlt,
    triangulate_points,
    triangulation_angles,
)


def ring_of_cameras(rng: np.random.Generator, views: int, radius: float = 4.0) -> np.ndarray:
    """`[V, 3, 4]` cameras on an arc looking at the origin (OpenCV axes)."""
    cams = []
    for angle in np.linspace(-0.6, 0.6, views):
        center = radius * np.array([np.sin(angle), 0.2 * rng.normal(), -np.cos(angle)])
        forward = -center / np.linalg.norm(center)
        right = np.cross([0.0, 1.0, 0.0], forward)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        cams.append(Rigid3(rotation, -rotation @ center).matrix())
    return np.stack(cams)


def observe(cams: np.ndarray, points: np.ndarray) -> np.ndarray:
    p_cam = np.einsum("vij,nj->vni", cams[:, :, :3], points) + cams[:, None, :, 3]
    return p_cam[..., :2] / p_cam[..., 2:]


def test_noise_free_exact(rng):
    cams = ring_of_cameras(rng, 5)
    points = rng.uniform(-1, 1, (500, 3))
    obs = observe(cams, points)
    np.testing.assert_allclose(triangulate_dlt(cams, obs), points, atol=1e-10)
    np.testing.assert_allclose(triangulate_points(cams, obs), points, atol=1e-10)
    assert cheirality(cams, points).all()


def test_through_a_distorted_camera(rng):
    # Observations in pixels of an OPENCV camera, unprojected first: triangulation is model-agnostic.
    params = np.array([600.0, 610.0, 320.0, 240.0, -0.2, 0.05, 0.001, 0.002])
    cams = ring_of_cameras(rng, 3)
    points = rng.uniform(-1, 1, (50, 3))
    p_cam = np.einsum("vij,nj->vni", cams[:, :, :3], points) + cams[:, None, :, 3]
    pixels = project("OPENCV", params, p_cam)
    obs = unproject("OPENCV", params, pixels)[..., :2]
    np.testing.assert_allclose(triangulate_points(cams, obs), points, atol=1e-9)


def test_noise_robustness_and_refinement_lowers_error(rng):
    cams = ring_of_cameras(rng, 6)
    points = rng.uniform(-1, 1, (400, 3))
    sigma = 1.0 / 600  # one pixel at a 600 px focal length
    obs = observe(cams, points) + rng.normal(0, sigma, (6, 400, 2))
    dlt = triangulate_dlt(cams, obs)
    refined = triangulate_points(cams, obs)
    err_dlt = np.linalg.norm(dlt - points, axis=-1)
    err_refined = np.linalg.norm(refined - points, axis=-1)
    assert np.median(err_refined) < 0.01 and err_refined.max() < 0.05
    rms = lambda x: np.sqrt(np.nanmean(reprojection_errors(cams, obs, x) ** 2))  # noqa: E731
    assert rms(refined) <= rms(dlt) + 1e-15
    # at the optimum, 3 unknowns fitted to 12 measurements leave E|residual|^2 = 2 sigma^2 * 9 / 12 per observation
    assert rms(refined) == pytest.approx(sigma * np.sqrt(2 * 9 / 12), rel=0.05)


def test_mask_and_degenerate_points(rng):
    cams = ring_of_cameras(rng, 4)
    points = rng.uniform(-1, 1, (30, 3))
    obs = observe(cams, points)
    mask = np.ones((4, 30), dtype=bool)
    mask[:3, 0] = False  # seen once: NaN
    mask[[0, 2], 1] = False  # seen twice: still exact
    obs[1, 2] = np.nan  # non-finite observation counts as unobserved
    garbage = obs.copy()
    garbage[~mask] = 1e3  # masked observations must not matter
    result = triangulate_points(cams, garbage, mask)
    assert np.isnan(result[0]).all()
    np.testing.assert_allclose(result[1:], points[1:], atol=1e-9)


def test_point_at_infinity_is_nan(rng):
    cams = ring_of_cameras(rng, 2)
    direction = np.array([0.0, 0.0, 1.0])
    # the same direction in both views, with identical rotations: no parallax at all
    cams[1, :, :3] = cams[0, :, :3]
    obs = (cams[:, :, :3] @ direction)[:, None, :2] / (cams[:, :, :3] @ direction)[:, None, 2:]
    assert np.isnan(triangulate_dlt(cams, obs)).all()


def test_angles_and_cheirality(rng):
    centers = np.array([[-1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0]])
    points = np.array([[0.0, 0, 1.0], [0.0, 0, 1e6]])
    angles = triangulation_angles(centers, points)
    np.testing.assert_allclose(angles, [90.0, np.degrees(2 * np.arctan(1e-6))], rtol=1e-9)
    mask = np.array([[True, True], [False, False], [True, True]])
    np.testing.assert_allclose(triangulation_angles(centers, points, mask)[0], 45.0)
    assert triangulation_angles(centers, points, np.eye(3, 2, dtype=bool))[0] == 0.0

    cams = ring_of_cameras(rng, 3)
    np.testing.assert_allclose(camera_centers(cams)[:, [0, 2]], 4.0 * np.c_[np.sin([-0.6, 0, 0.6]), -np.cos([-0.6, 0, 0.6])], atol=1e-12)
    behind = 2 * camera_centers(cams)[1]  # behind the middle camera, seen from its back
    front = cheirality(cams, np.stack([np.zeros(3), behind, np.full(3, np.nan)]))
    assert front[:, 0].all() and not front[1, 1] and not front[:, 2].any()


def test_bad_shapes_raise():
    with pytest.raises(InputError):
        triangulate_points(np.zeros((2, 3, 3)), np.zeros((2, 5, 2)))
    with pytest.raises(InputError):
        triangulate_points(np.zeros((2, 3, 4)), np.zeros((3, 5, 2)))


def test_rotation_helper_consistency(rng):
    # Cameras given through scipy rotations agree with the Rigid3 path.
    rotation = Rotation.random(random_state=1).as_matrix()
    pose = Rigid3(rotation, rng.normal(size=3))
    cams = np.stack([pose.matrix(), (Rigid3(np.eye(3), [1.0, 0, 0]) * pose).matrix()])
    points = pose.inverse().apply(np.c_[rng.uniform(-1, 1, (10, 2)), rng.uniform(3, 6, (10, 1))])
    np.testing.assert_allclose(triangulate_points(cams, observe(cams, points)), points, atol=1e-9)
