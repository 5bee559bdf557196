"""Two-view geometry: relative pose from E on synthetic correspondences, planar/uncalibrated/degenerate pairs,
and a real pair of templeSparseRing against its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.geometry.rotations import axis_angle_to_matrix, rotation_angle_deg
from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera
from mapforge.sfm.matching import MatchingConfig, match_pairs
from mapforge.sfm.verification import VerificationConfig, iteration_cap, verify_pair, verify_pairs
from tests.conftest import shared_dataset

CAMERA = Camera("OPENCV", 800, 600, [700.0, 710.0, 400.5, 300.5, -0.08, 0.02, 0.001, -0.0005])
CAM2_FROM_CAM1 = Rigid3(axis_angle_to_matrix(np.radians(np.array([2.0, -12.0, 3.0]))), np.array([1.0, 0.1, 0.05]))


def _correspondences(rng, points_cam1: np.ndarray, noise: float = 0.3, outliers: float = 0.3):
    """Project points seen by both cameras, add pixel noise and replace a share by random outliers."""
    p1 = CAMERA.project(points_cam1)
    p2 = CAMERA.project(CAM2_FROM_CAM1.apply(points_cam1))
    inside = (p1 >= 0).all(1) & (p1 < [800, 600]).all(1) & (p2 >= 0).all(1) & (p2 < [800, 600]).all(1)
    p1, p2 = p1[inside], p2[inside]
    p1 = p1 + noise * rng.standard_normal(p1.shape)
    p2 = p2 + noise * rng.standard_normal(p2.shape)
    bad = rng.random(len(p1)) < outliers
    p2[bad] = rng.random((bad.sum(), 2)) * [800, 600]
    matches = np.stack([np.arange(len(p1)), np.arange(len(p1))], axis=1)
    return p1, p2, matches, ~bad


def _translation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def test_calibrated_pair_recovers_relative_pose(rng):
    points = np.concatenate([rng.uniform(-3, 3, (600, 2)), rng.uniform(4, 9, (600, 1))], axis=1)
    p1, p2, matches, good = _correspondences(rng, points)
    geometry = verify_pair(p1, p2, matches, CAMERA, CAMERA)
    assert geometry.config == "calibrated"
    assert rotation_angle_deg(geometry.cam2_from_cam1.rotation.T @ CAM2_FROM_CAM1.rotation) < 0.1
    assert _translation_angle_deg(geometry.cam2_from_cam1.translation, CAM2_FROM_CAM1.translation) < 1.0
    inlier = good[geometry.matches[:, 0]]
    assert inlier.mean() > 0.97 and geometry.num_inliers > 0.95 * good.sum()
    x1 = CAMERA.unproject(p1[good])
    x2 = CAMERA.unproject(p2[good])
    assert np.median(np.abs(np.einsum("ni,ij,nj->n", x2, geometry.E, x1))) < 1e-3
    assert geometry.F is not None and geometry.H is not None


@pytest.mark.parametrize("outliers", [0.3, 0.0])
def test_fundamental_matrix_fits_undistorted_pixels(rng, outliers):
    # With 30% outliers F is searched for; without any, E keeps every match and F is derived from it.
    points = np.concatenate([rng.uniform(-3, 3, (400, 2)), rng.uniform(4, 9, (400, 1))], axis=1)
    p1, p2, matches, good = _correspondences(rng, points, outliers=outliers)
    geometry = verify_pair(p1, p2, matches, CAMERA, CAMERA)
    assert geometry.config == "calibrated"
    u1 = CAMERA.unproject(p1[good]) @ CAMERA.K.T
    u2 = CAMERA.unproject(p2[good]) @ CAMERA.K.T
    F = geometry.F / np.linalg.norm(geometry.F)
    lines = u1 @ F.T  # epipolar lines in image 2
    distance = np.abs(np.einsum("ni,ni->n", u2, lines)) / np.linalg.norm(lines[:, :2], axis=1)
    assert np.median(distance) < 0.5


def test_planar_scene_is_flagged(rng):
    xy = rng.uniform(-3, 3, (800, 2))
    points = np.concatenate([xy, 6.0 + 0.3 * xy[:, :1]], axis=1)  # one tilted plane
    p1, p2, matches, _ = _correspondences(rng, points)
    assert verify_pair(p1, p2, matches, CAMERA, CAMERA).config == "planar"


def test_without_intrinsics_only_f_and_h(rng):
    points = np.concatenate([rng.uniform(-3, 3, (500, 2)), rng.uniform(4, 9, (500, 1))], axis=1)
    camera = Camera("PINHOLE", 800, 600, [700.0, 700.0, 400.0, 300.0])
    p1 = camera.project(points)
    p2 = camera.project(CAM2_FROM_CAM1.apply(points))
    matches = np.stack([np.arange(len(p1))] * 2, axis=1)
    geometry = verify_pair(p1, p2, matches)
    assert geometry.config == "uncalibrated"
    assert geometry.E is None and geometry.cam2_from_cam1 is None
    assert geometry.num_inliers > 0.95 * len(p1)
    F = geometry.F / np.linalg.norm(geometry.F)
    h1, h2 = (np.concatenate([p, np.ones((len(p), 1))], axis=1) for p in (p1, p2))
    lines = h1 @ F.T  # epipolar lines in image 2
    distance = np.abs((h2 * lines).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)
    assert np.median(distance) < 0.05


def test_too_few_matches_is_degenerate(rng):
    p = rng.random((10, 2)) * 100
    geometry = verify_pair(p, p, np.stack([np.arange(10)] * 2, axis=1), CAMERA, CAMERA)
    assert geometry.config == "degenerate" and geometry.num_inliers == 0 and geometry.cam2_from_cam1 is None


def test_random_matches_are_degenerate(rng):
    p1, p2 = rng.random((200, 2)) * [800, 600], rng.random((200, 2)) * [800, 600]
    matches = np.stack([np.arange(200)] * 2, axis=1)
    geometry = verify_pair(p1, p2, matches, CAMERA, CAMERA, VerificationConfig(max_error=1.0))
    assert geometry.config == "degenerate"


def test_iteration_cap_only_cuts_hopeless_searches(rng):
    config = VerificationConfig()
    caps = [iteration_cap(m, 5, config) for m in (10, 15, 30, 60, 200, 5000)]
    assert caps[0] == caps[1] == config.min_iterations  # every match must be an inlier: the minimum suffices
    # at least min_num_inliers / M inliers: 1 - (1 - (1/2)^5)^cap >= confidence
    assert 1 - (1 - 0.5**5) ** caps[2] >= config.confidence > 1 - (1 - 0.5**5) ** (caps[2] - 1)
    assert caps == sorted(caps) and caps[-1] == config.max_iterations
    # A pair with barely more than min_num_inliers true matches among outliers still verifies under the cap.
    points = np.concatenate([rng.uniform(-3, 3, (200, 2)), rng.uniform(4, 9, (200, 1))], axis=1)
    p1, p2, matches, good = _correspondences(rng, points, outliers=0.0)
    keep = np.concatenate([np.flatnonzero(good)[:20], np.arange(len(p1))[-12:]])
    p2 = p2.copy()
    p2[keep[20:]] = rng.random((12, 2)) * [800, 600]
    geometry = verify_pair(p1, p2, matches[keep], CAMERA, CAMERA)
    assert geometry.config == "calibrated" and 18 <= geometry.num_inliers <= 21


def test_temple_pair_matches_ground_truth():
    from mapforge.datasets import load_dataset
    from mapforge.sfm.features import extract_features
    from mapforge.sfm.executor import LocalExecutor

    dataset = load_dataset(shared_dataset("middlebury_templeSparseRing"))
    paths = [dataset.image_dir / dataset.image_names[i] for i in (0, 1)]
    features = extract_features(paths, executor=LocalExecutor(1))
    config = MatchingConfig()
    matches = match_pairs(features, [(0, 1)], config)
    geometry = verify_pairs(features, matches, dataset.cameras[:2], config)[(0, 1)]
    assert geometry.config == "calibrated" and geometry.num_inliers > 200
    gt = dataset.cam_from_world[1] * dataset.cam_from_world[0].inverse()
    assert rotation_angle_deg(gt.rotation.T @ geometry.cam2_from_cam1.rotation) < 1.0
    assert _translation_angle_deg(geometry.cam2_from_cam1.translation, gt.translation) < 5.0


def test_verify_pairs_checks_camera_count(rng):
    from mapforge.errors import InputError

    with pytest.raises(InputError):
        verify_pairs([None, None], {(0, 1): np.zeros((0, 2), int)}, [CAMERA])
