"""Bundle adjustment on synthetic scenes: perturbed poses, points and intrinsics are recovered."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.geometry.alignment import umeyama
from mapforge.geometry.rotations import axis_angle_to_matrix, rotation_angle_deg
from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera, Image, Point3D, Reconstruction
from mapforge.sfm.ba_kernels import normal_equations, point_steps, pose_rotations, reduced_camera_system
from mapforge.sfm.bundle_adjustment import BundleAdjustmentConfig, _Problem, bundle_adjust, refined_param_indices


def _scene(camera: Camera, num_images: int = 6, num_points: int = 300, seed: int = 0) -> Reconstruction:
    rng = np.random.default_rng(seed)
    rec = Reconstruction(cameras={1: camera})
    points = rng.uniform(-1, 1, (num_points, 3))
    for k in range(num_images):
        angle = 0.25 * k
        center = np.array([4 * np.sin(angle), 0.3 * np.cos(3 * angle), -4 * np.cos(angle)])
        forward = -center / np.linalg.norm(center)
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        rotation = np.stack([right, np.cross(forward, right), forward])
        pose = Rigid3(rotation, -rotation @ center)
        keypoints = camera.project(pose.apply(points))
        rec.images[k + 1] = Image(f"{k}.png", 1, pose, keypoints, np.arange(num_points))
    for p in range(num_points):
        track = np.stack([np.arange(1, num_images + 1), np.full(num_images, p)], 1)
        rec.points3D[p + 1] = Point3D(points[p], track=track)
    for image in rec.images.values():
        image.point3D_ids = image.point3D_ids + 1
    return rec


def _perturb(rec: Reconstruction, rng: np.random.Generator, noise_px: float = 0.3) -> None:
    for image_id, image in rec.images.items():
        if image_id > 1:
            rotation = axis_angle_to_matrix(rng.normal(0, 0.01, 3)) @ image.cam_from_world.rotation
            image.cam_from_world = Rigid3(rotation, image.cam_from_world.translation + rng.normal(0, 0.03, 3))
        image.keypoints = image.keypoints + rng.normal(0, noise_px, image.keypoints.shape)
    for point in rec.points3D.values():
        point.xyz = point.xyz + rng.normal(0, 0.03, 3)


def _dense_jacobian(problem: _Problem, j_cs: np.ndarray, cols: np.ndarray, j_pt: np.ndarray) -> np.ndarray:
    """The `[2 n_obs, n_free]` Jacobian assembled from the per-observation blocks of `_Problem.linearize`."""
    num_obs = len(j_cs)
    dense = np.zeros((2 * num_obs, problem.num_camera_side + 3 * len(problem.point_ids)))
    rows = np.arange(num_obs)
    for k in range(cols.shape[1]):
        for r in range(2):
            sel = cols[:, k] >= 0
            dense[2 * rows[sel] + r, cols[sel, k]] += j_cs[sel, r, k]
    for r in range(2):
        for c in range(3):
            dense[2 * rows + r, problem.num_camera_side + 3 * problem.obs_pt + c] = j_pt[:, r, c]
    return dense


@pytest.mark.parametrize(
    "model, params",
    [
        ("PINHOLE", [500.0, 510.0, 320.0, 240.0]),
        ("SIMPLE_RADIAL", [500.0, 320.0, 240.0, 0.05]),
        ("OPENCV", [500.0, 510.0, 320.0, 240.0, 0.05, -0.01, 0.001, 0.002]),
        ("OPENCV_FISHEYE", [500.0, 510.0, 320.0, 240.0, 0.01, 0.002, 0.0, 0.0]),
    ],
)
def test_analytic_jacobian_matches_finite_differences(model, params):
    rec = _scene(Camera(model, 640, 480, params), num_images=3, num_points=15)
    config = BundleAdjustmentConfig(refine_principal_point=True)
    problem = _Problem(rec, sorted(rec.images), sorted(rec.points3D), set(), {1: refined_param_indices(model, config)}, (1, 2))
    x = problem.full0[problem.free] + np.random.default_rng(1).normal(0, 1e-3, problem.free.sum())
    res, j_cs, cols, j_pt = problem.linearize(x)
    dense = _dense_jacobian(problem, j_cs, cols, j_pt)
    numeric = np.zeros_like(dense)
    for k in range(x.size):
        h = 1e-6 * max(1.0, abs(x[k]))
        plus, minus = x.copy(), x.copy()
        plus[k] += h
        minus[k] -= h
        numeric[:, k] = (problem.residuals(plus) - problem.residuals(minus)).reshape(-1) / (2 * h)
    assert np.abs(dense - numeric).max() < 1e-5 * np.abs(numeric).max()


def test_schur_step_equals_dense_damped_step(rng):
    # Tracks of 2 to 4 images, one held image, free focal length and distortion: every kind of column.
    camera = Camera("SIMPLE_RADIAL", 640, 480, [500.0, 320.0, 240.0, 0.05])
    rec = _scene(camera, num_images=5, num_points=40)
    _perturb(rec, rng)
    for point_id, point in rec.points3D.items():
        point.track = point.track[point_id % 2 : point_id % 2 + 2 + point_id % 3]
    config = BundleAdjustmentConfig()
    refined = {1: refined_param_indices("SIMPLE_RADIAL", config)}
    problem = _Problem(rec, sorted(rec.images), sorted(rec.points3D), {5}, refined, (1, 2))
    res, j_cs, cols, j_pt = problem.linearize(problem.full0[problem.free])
    weight = rng.uniform(0.2, 1.0, len(res))
    num_c, num_points, lam = problem.num_camera_side, len(problem.point_ids), 1e-2

    jac = _dense_jacobian(problem, j_cs, cols, j_pt)
    hessian = jac.T @ (np.repeat(weight, 2)[:, None] * jac)
    damped = hessian + lam * np.diag(np.diag(hessian)) + 1e-12 * np.eye(len(hessian))
    expected = np.linalg.solve(damped, -jac.T @ (np.repeat(weight, 2) * res.reshape(-1)))

    u, g_c, v, g_p, w_obs = normal_equations(res, j_cs, cols, j_pt, weight, problem.obs_pt, num_c, num_points)
    point_starts = np.searchsorted(problem.obs_pt, np.arange(num_points + 1))
    schur, rhs, v_inv = reduced_camera_system(u, g_c, v, g_p, w_obs, cols, point_starts, lam)
    dc = np.linalg.solve(schur, rhs)
    dp = point_steps(dc, g_p, w_obs, cols, problem.obs_pt, v_inv)
    step = np.concatenate([dc, dp.reshape(-1)])
    np.testing.assert_allclose(step, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())


def test_recovers_poses_points_and_focal(rng):
    camera = Camera("SIMPLE_RADIAL", 640, 480, [500.0, 320.0, 240.0, 0.05])
    truth = _scene(camera.copy())
    rec = _scene(camera.copy())
    _perturb(rec, rng)
    rec.cameras[1].params[0] *= 1.03
    rec.cameras[1].params[3] = 0.0
    summary = bundle_adjust(rec, BundleAdjustmentConfig(loss="linear"))
    assert summary.final_cost < 0.01 * summary.initial_cost
    assert summary.final_rmse < 0.5 < summary.initial_rmse  # noise is 0.3 px per coordinate
    assert abs(rec.cameras[1].params[0] - 500.0) < 1.0
    assert abs(rec.cameras[1].params[3] - 0.05) < 0.015  # weakly observed: points span r < 0.3
    assert rec.cameras[1].params[1] == 320.0  # principal point held by default
    # The gauge: image 1 untouched, and the scale held through the second image.
    np.testing.assert_allclose(rec.images[1].cam_from_world.rotation, truth.images[1].cam_from_world.rotation)
    for image_id in rec.images:
        relative = rec.images[image_id].cam_from_world.rotation @ truth.images[image_id].cam_from_world.rotation.T
        assert rotation_angle_deg(relative) < 0.05
    # Points agree up to the scale held by the (perturbed) second image.
    ids = sorted(rec.points3D)
    est = np.stack([rec.points3D[p].xyz for p in ids])
    sim = umeyama(est, np.stack([truth.points3D[p].xyz for p in ids]))
    assert np.median(np.linalg.norm(sim.apply(est) - np.stack([truth.points3D[p].xyz for p in ids]), axis=1)) < 0.01
    assert all(point.error >= 0 for point in rec.points3D.values())


def test_robust_loss_resists_outliers(rng):
    camera = Camera("PINHOLE", 640, 480, [500.0, 500.0, 320.0, 240.0])
    truth = _scene(camera.copy(), seed=3)
    rec = _scene(camera.copy(), seed=3)
    _perturb(rec, rng, noise_px=0.2)
    image = rec.images[3]
    bad = rng.choice(len(image.keypoints), 30, replace=False)
    image.keypoints[bad] += rng.uniform(20, 60, (30, 2))
    bundle_adjust(rec, BundleAdjustmentConfig(loss="cauchy", loss_scale=1.0, refine_focal=False, refine_extra_params=False))
    relative = rec.images[3].cam_from_world.rotation @ truth.images[3].cam_from_world.rotation.T
    assert rotation_angle_deg(relative) < 0.05


def test_local_adjustment_holds_constant_images(rng):
    camera = Camera("PINHOLE", 640, 480, [500.0, 500.0, 320.0, 240.0])
    truth = _scene(camera.copy(), seed=4)
    rec = _scene(camera.copy(), seed=4)
    moved = rec.images[5].cam_from_world
    rec.images[5].cam_from_world = Rigid3(axis_angle_to_matrix(np.array([0.01, -0.01, 0.005])) @ moved.rotation, moved.translation + 0.05)
    before = {i: rec.images[i].cam_from_world.matrix().copy() for i in rec.images}
    summary = bundle_adjust(rec, BundleAdjustmentConfig(refine_focal=False, refine_extra_params=False), image_ids=[5], point_ids=[])
    assert summary.message == "nothing to refine"
    bundle_adjust(rec, BundleAdjustmentConfig(refine_focal=False, refine_extra_params=False), image_ids=[5])
    for image_id in (1, 2, 3, 4, 6):
        np.testing.assert_array_equal(rec.images[image_id].cam_from_world.matrix(), before[image_id])
    np.testing.assert_allclose(rec.images[5].cam_from_world.matrix(), truth.images[5].cam_from_world.matrix(), atol=1e-6)


def test_unknown_loss_is_rejected():
    rec = _scene(Camera("PINHOLE", 640, 480, [500.0, 500.0, 320.0, 240.0]), num_images=2, num_points=10)
    with pytest.raises(InputError, match="loss"):
        bundle_adjust(rec, BundleAdjustmentConfig(loss="tukey"))


def test_pose_rotations_and_left_jacobians(rng):
    # Increments around zero (the Taylor branches), small and large.
    rotvec = np.concatenate([np.zeros((1, 3)), rng.normal(0, 1e-6, (3, 3)), rng.normal(0, 0.5, (6, 3))])
    rot0 = axis_angle_to_matrix(rng.normal(0, 1, (len(rotvec), 3)))
    rot, left = pose_rotations(rotvec, rot0)
    np.testing.assert_allclose(rot, axis_angle_to_matrix(rotvec) @ rot0, atol=1e-15)
    # exp(r + e) = exp(J_l(r) e) exp(r) to first order in e.
    h = 1e-6
    for k in range(len(rotvec)):
        for axis in range(3):
            step = np.zeros(3)
            step[axis] = h
            plus = axis_angle_to_matrix(rotvec[k] + step) @ axis_angle_to_matrix(rotvec[k]).T
            minus = axis_angle_to_matrix(rotvec[k] - step) @ axis_angle_to_matrix(rotvec[k]).T
            d = (plus - minus) / (2 * h)  # the cross-product matrix of J_l e_axis
            np.testing.assert_allclose([d[2, 1], d[0, 2], d[1, 0]], left[k][:, axis], atol=1e-8)
