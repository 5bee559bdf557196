"""Incremental mapper and PnP on synthetic correspondences with known cameras (noise and outliers added)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mapforge.errors import ReconstructionError
from mapforge.geometry.transforms import Rigid3
from mapforge.metrics.pose import evaluate_poses
from mapforge.scene import Camera
from mapforge.geometry.triangulation import triangulation_angles
from mapforge.sfm.mapper import MapperConfig, _max_track_angles, incremental_mapping
from mapforge.sfm.registration import estimate_absolute_pose, estimate_pose_from_relative, estimate_relative_pose


@dataclass
class _Features:
    keypoints: np.ndarray
    colors: np.ndarray


@dataclass
class _Geometry:
    matches: np.ndarray
    config: str = "calibrated"
    cam2_from_cam1: Rigid3 | None = None


def _look_at(center: np.ndarray, target: np.ndarray) -> Rigid3:
    forward = (target - center) / np.linalg.norm(target - center)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return Rigid3(rotation, -rotation @ center)


def synthetic_views(
    num_images: int = 8,
    num_points: int = 1000,
    camera: Camera | None = None,
    noise: float = 0.5,
    outlier_ratio: float = 0.01,
    seed: int = 0,
    arc_deg: float = 120.0,
    groups: int = 1,
):
    """Points in a box seen by cameras on an arc; returns features, geometries, cameras, names, gt poses.

    `groups` > 1 makes that many disjoint scenes (no matches between them).
    """
    rng = np.random.default_rng(seed)
    camera = camera or Camera("PINHOLE", 640, 480, [520.0, 520.0, 320.0, 240.0])
    features, poses, point_of = [], [], []
    for g in range(groups):
        points = rng.uniform([-1.5, -1.5, -0.5], [1.5, 1.5, 1.5], (num_points, 3))
        for k in range(num_images):
            angle = np.radians(-arc_deg / 2 + arc_deg * k / max(num_images - 1, 1)) + rng.uniform(-0.02, 0.02)
            center = np.array([6 * np.cos(angle), 6 * np.sin(angle), 1.5 + 0.5 * np.sin(3 * angle)])
            pose = _look_at(center, np.array([0.0, 0.0, 0.5]) + rng.normal(0, 0.1, 3))
            p_cam = pose.apply(points)
            pixels = camera.project(p_cam)
            visible = (p_cam[:, 2] > 0) & (pixels >= 0).all(1) & (pixels < [camera.width, camera.height]).all(1)
            visible &= rng.random(num_points) < 0.9
            ids = np.flatnonzero(visible)
            extra = rng.uniform([0, 0], [camera.width, camera.height], (200, 2))
            keypoints = np.concatenate([pixels[ids] + rng.normal(0, noise, (ids.size, 2)), extra])
            ids_all = np.concatenate([ids + g * num_points, np.full(len(extra), -1)])
            order = rng.permutation(len(keypoints))
            keypoints, ids_all = keypoints[order], ids_all[order]
            colors = rng.integers(0, 256, (len(keypoints), 3), dtype=np.uint8)
            features.append(_Features(keypoints, colors))
            poses.append(pose)
            point_of.append(ids_all)
    geometries = {}
    total = num_images * groups
    for i in range(total):
        for j in range(i + 1, total):
            common, a, b = np.intersect1d(point_of[i], point_of[j], return_indices=True)
            a, b = a[common >= 0], b[common >= 0]
            if len(a) < 20:
                continue
            num_out = int(outlier_ratio * len(a))
            wrong = np.stack([rng.integers(0, len(point_of[i]), num_out), rng.integers(0, len(point_of[j]), num_out)], 1)
            matches = np.concatenate([np.stack([a, b], 1), wrong])
            geometries[(i, j)] = _Geometry(matches)
    names = [f"{k:03d}.png" for k in range(total)]
    return features, geometries, [camera] * total, names, poses


def sparse_ring_views(num_images: int = 8, step_deg: float = 25.0, pair_points: int = 150, triple_points: int = 15,
                      seed: int = 0):  # fmt: skip
    """Cameras `step_deg` apart on a ring around the origin, like a sparse turntable capture: each neighbouring pair
    shares `pair_points` points that no third view sees, each three consecutive views share `triple_points`. An
    image therefore sees at most 2 x `triple_points` triangulated points when it is next in line, fewer than
    PnP's 30-inlier minimum, but has many matches with its registered neighbour."""
    rng = np.random.default_rng(seed)
    camera = Camera("PINHOLE", 640, 480, [520.0, 520.0, 320.0, 240.0])
    poses = []
    for k in range(num_images):
        angle = np.radians(step_deg * k)
        center = np.array([6 * np.cos(angle), 6 * np.sin(angle), 1.0 + 0.3 * np.sin(2 * angle)])
        poses.append(_look_at(center, np.array([0.0, 0.0, 0.3])))
    groups = [(k, k + 1) for k in range(num_images - 1)] + [(k, k + 1, k + 2) for k in range(num_images - 2)]
    observations: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(num_images)]  # (point id, pixel)
    next_id = 0
    for group in groups:
        count = pair_points if len(group) == 2 else triple_points
        points = rng.uniform([-1.2, -1.2, -0.5], [1.2, 1.2, 1.2], (count, 3))
        for k in group:
            pixels = camera.project(poses[k].apply(points)) + rng.normal(0, 0.5, (count, 2))
            observations[k].extend((next_id + n, pixels[n]) for n in range(count))
        next_id += count
    features, point_of = [], []
    for k in range(num_images):
        order = rng.permutation(len(observations[k]))
        ids = np.array([observations[k][n][0] for n in order])
        keypoints = np.stack([observations[k][n][1] for n in order])
        features.append(_Features(keypoints, rng.integers(0, 256, (len(keypoints), 3), dtype=np.uint8)))
        point_of.append(ids)
    geometries = {}
    for i in range(num_images):
        for j in range(i + 1, num_images):
            _, a, b = np.intersect1d(point_of[i], point_of[j], return_indices=True)
            if len(a) >= 15:
                geometries[(i, j)] = _Geometry(np.stack([a, b], 1))
    names = [f"{k:03d}.png" for k in range(num_images)]
    return features, geometries, [camera] * num_images, names, poses


def _check_poses(rec, names, poses, max_rot_deg=0.1):
    est = {img.name: img.cam_from_world for img in rec.images.values()}
    gt = {n: p for n, p in zip(names, poses) if n in est}
    evaluation = evaluate_poses(est, gt)
    assert evaluation.num_registered == len(gt)
    assert np.max(evaluation.abs_rot_err_deg) < max_rot_deg
    assert evaluation.median_rot_err_deg < max_rot_deg
    return evaluation


def test_pnp_recovers_pose_with_outliers(rng):
    camera = Camera("SIMPLE_RADIAL", 640, 480, [500.0, 320.0, 240.0, -0.05])
    points = rng.uniform(-1, 1, (300, 3)) + [0, 0, 5]
    gt = Rigid3(np.eye(3), np.zeros(3))
    pixels = camera.project(points) + rng.normal(0, 0.3, (300, 2))
    pixels[:60] = rng.uniform(0, 480, (60, 2))
    result = estimate_absolute_pose(pixels, points, camera)
    assert result is not None
    assert result.inliers[60:].mean() > 0.95 and result.inliers[:60].mean() < 0.2
    angle = np.degrees(np.arccos(np.clip((np.trace(result.cam_from_world.rotation @ gt.rotation.T) - 1) / 2, -1, 1)))
    assert angle < 0.1
    assert np.linalg.norm(result.cam_from_world.translation - gt.translation) < 0.01


def test_pnp_rejects_too_few_points(rng):
    camera = Camera("PINHOLE", 640, 480, [500.0, 500.0, 320.0, 240.0])
    points = rng.uniform(-1, 1, (10, 3)) + [0, 0, 5]
    assert estimate_absolute_pose(camera.project(points), points, camera) is None


def test_pose_from_relative_pose_and_few_points(rng):
    camera = Camera("SIMPLE_RADIAL", 640, 480, [500.0, 320.0, 240.0, -0.05])
    posed = _look_at(np.array([6.0, 0.0, 1.0]), np.zeros(3))
    gt = _look_at(np.array([5.2, 3.0, 1.2]), np.zeros(3))
    # Points filling the view: in a narrow one, rotation and baseline direction are hard to tell apart.
    shared = rng.uniform(-2.5, 2.5, (150, 3))
    ours = camera.project(gt.apply(shared)) + rng.normal(0, 0.3, (150, 2))
    theirs = camera.project(posed.apply(shared)) + rng.normal(0, 0.3, (150, 2))
    relative, _ = estimate_relative_pose(theirs, ours, camera, camera)
    points = rng.uniform(-2.5, 2.5, (12, 3))
    pixels = camera.project(gt.apply(points)) + rng.normal(0, 0.3, (12, 2))
    pixels[:3] = rng.uniform(0, 480, (3, 2))  # wrong 2D-3D correspondences
    # Nine good 2D-3D correspondences are too few for PnP's 30 inliers; they do fix the baseline's length.
    assert estimate_absolute_pose(pixels, points, camera) is None
    result = estimate_pose_from_relative(pixels, points, camera, posed, relative)
    assert result is not None
    assert result.inliers.tolist() == [False] * 3 + [True] * 9
    angle = np.degrees(np.arccos(np.clip((np.trace(result.cam_from_world.rotation @ gt.rotation.T) - 1) / 2, -1, 1)))
    assert angle < 0.1
    assert np.linalg.norm(result.cam_from_world.inverse().translation - [5.2, 3.0, 1.2]) < 0.05
    # A wrong relative pose (the baseline reversed) leaves no length that reprojects the points.
    reversed_baseline = Rigid3(relative.rotation, -relative.translation)
    wrong = estimate_pose_from_relative(pixels, points, camera, posed, reversed_baseline)
    assert wrong is None or wrong.num_inliers <= 1


def test_mapper_recovers_poses_known_intrinsics():
    features, geometries, cameras, names, poses = synthetic_views()
    config = MapperConfig(ba_refine_focal=False, ba_refine_extra_params=False)
    models = incremental_mapping(features, geometries, cameras, config, names)
    assert len(models) == 1
    rec = models[0]
    assert len(rec.images) == len(names)
    _check_poses(rec, names, poses)
    errors = rec.reprojection_errors()
    assert np.mean(errors) < 1.0 and np.max(errors) <= 4.0 + 1e-6
    assert len(rec.points3D) > 600
    # Colours are the mean of the observations' feature colours.
    point = next(iter(rec.points3D.values()))
    expected = np.mean([features[i - 1].colors[k] for i, k in point.track], axis=0)
    np.testing.assert_allclose(point.rgb, expected, atol=0.51)


def test_mapper_refines_unknown_focal():
    true_camera = Camera("SIMPLE_RADIAL", 640, 480, [520.0, 320.0, 240.0, -0.03])
    features, geometries, _, names, poses = synthetic_views(num_images=10, camera=true_camera, seed=1)
    prior = Camera("SIMPLE_RADIAL", 640, 480, [1.2 * 640, 320.0, 240.0, 0.0])
    models = incremental_mapping(features, geometries, [prior] * len(names), MapperConfig(), names)
    rec = models[0]
    assert len(rec.images) == len(names)
    (camera,) = rec.cameras.values()
    assert abs(camera.params[0] - 520.0) < 2.0
    assert prior.params[0] == 1.2 * 640  # the input camera is not modified
    _check_poses(rec, names, poses, max_rot_deg=0.2)


def test_mapper_keeps_disconnected_models():
    features, geometries, cameras, names, poses = synthetic_views(num_images=5, num_points=800, groups=2, seed=2)
    config = MapperConfig(min_model_size=3)
    models = incremental_mapping(features, geometries, cameras, config, names)
    assert len(models) == 2
    assert sorted(len(m.images) for m in models) == [5, 5]
    for rec in models:
        _check_poses(rec, names, poses, max_rot_deg=0.25)


def test_sparse_ring_registers_from_relative_poses():
    features, geometries, cameras, names, poses = sparse_ring_views()
    known = dict(ba_refine_focal=False, ba_refine_extra_params=False)
    pnp_config = MapperConfig(relative_registration=False, **known)
    pnp_only = incremental_mapping(features, geometries, cameras, pnp_config, names)
    assert len(pnp_only[0].images) < len(names)  # what COLMAP's strategy reaches on such a capture
    models = incremental_mapping(features, geometries, cameras, MapperConfig(**known), names)
    assert len(models) == 1 and len(models[0].images) == len(names)
    # Two-view points carry the chain: bundle adjustment started from the true poses ends at 0.8 deg as well.
    _check_poses(models[0], names, poses, max_rot_deg=1.5)
    assert np.max(models[0].reprojection_errors()) <= 4.0 + 1e-6


def test_relative_registration_needs_enough_points():
    # With too few 2D-3D correspondences to fix the scale, images are left out rather than guessed.
    features, geometries, cameras, names, _ = sparse_ring_views(triple_points=3)
    config = MapperConfig(ba_refine_focal=False, ba_refine_extra_params=False, min_model_size=2)
    models = incremental_mapping(features, geometries, cameras, config, names)
    assert max(len(m.images) for m in models) < len(names)


def test_mapper_errors_clearly():
    features, geometries, cameras, names, _ = synthetic_views(num_images=3, num_points=300)
    with pytest.raises(ReconstructionError, match="at least 2 images"):
        incremental_mapping(features[:1], {}, cameras[:1], MapperConfig(), names[:1])
    with pytest.raises(ReconstructionError, match="verified matches"):
        incremental_mapping(features, {}, cameras, MapperConfig(), names)
    with pytest.raises(ReconstructionError, match="initial image pair"):
        incremental_mapping(features, geometries, cameras, MapperConfig(init_min_num_inliers=100000), names)


def test_max_track_angles_match_dense_angles(rng):
    centres = rng.normal(0, 3, (6, 3))
    points = rng.normal(0, 1, (50, 3))
    mask = rng.random((6, 50)) < 0.6
    mask[:2] = True  # every point seen at least twice
    owner, views = np.nonzero(mask.T)  # grouped by point
    angles = _max_track_angles(points, centres[views], owner)
    np.testing.assert_allclose(angles, triangulation_angles(centres, points, mask), atol=1e-6)
