"""Pose of a new image: PnP from 2D-3D correspondences, or a relative pose to a posed neighbour plus its scale.

Keypoints are first unprojected through the camera's model (so any distortion model works) and handed to
poselib's LO-RANSAC P3P with a pinhole camera of the same focal length, which keeps the inlier threshold in pixels;
poselib refines the pose on the inliers (robust least squares) before returning.

`estimate_pose_from_relative` registers an image that sees too few triangulated points for PnP but has many
matches with a registered image: their relative pose fixes five of the six degrees of freedom, the few 2D-3D
correspondences the sixth. (poselib's hybrid 2D-3D + 2D-2D estimator was tried for this and rejected: with a
dozen 2D-3D points its RANSAC returned poses 5-20 degrees off that still fit the 2D-2D matches, differently from
run to run.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import poselib

from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera


@dataclass
class AbsolutePoseConfig:
    """`max_error`: RANSAC inlier threshold in pixels (COLMAP's abs_pose_max_error: 12). `min_num_inliers` and
    `min_inlier_ratio`: acceptance (COLMAP: 30 and 0.25). `max_iterations`, `seed`: RANSAC budget and sampling."""

    max_error: float = 12.0
    min_num_inliers: int = 30
    min_inlier_ratio: float = 0.25
    max_iterations: int = 10000
    seed: int = 0


@dataclass
class AbsolutePose:
    """`cam_from_world` and the `[N]` inlier mask of the correspondences."""

    cam_from_world: Rigid3
    inliers: np.ndarray

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def mean_focal(camera: Camera) -> float:
    K = camera.K
    return float(0.5 * (K[0, 0] + K[1, 1]))


def estimate_absolute_pose(
    points2d: np.ndarray, points3d: np.ndarray, camera: Camera, config: AbsolutePoseConfig | None = None
) -> AbsolutePose | None:
    """PnP RANSAC + refinement.

    Args:
        points2d: `[N, 2]` keypoints in pixels (COLMAP convention). points3d: `[N, 3]` world points.
        camera: the image's camera (any COLMAP model).

    Returns:
        The pose and inliers, or None when fewer than `min_num_inliers` (or the inlier ratio) support any pose.
    """
    config = config or AbsolutePoseConfig()
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    if len(points2d) < max(4, config.min_num_inliers):
        return None
    rays = camera.unproject(points2d)[:, :2]
    valid = np.isfinite(rays).all(1)
    if valid.sum() < max(4, config.min_num_inliers):
        return None
    focal = mean_focal(camera)
    pinhole = {"model": "SIMPLE_PINHOLE", "width": camera.width, "height": camera.height, "params": [focal, 0.0, 0.0]}
    ransac = {
        "max_reproj_error": config.max_error,
        "max_iterations": config.max_iterations,
        "min_iterations": 100,
        "success_prob": 0.9999,
        "seed": config.seed,
    }
    pose, info = poselib.estimate_absolute_pose(focal * rays[valid], points3d[valid], pinhole, ransac, {})
    inliers = np.zeros(len(points2d), dtype=bool)
    inliers[np.flatnonzero(valid)] = np.asarray(info["inliers"], dtype=bool)
    num = int(inliers.sum())
    if num < config.min_num_inliers or num < config.min_inlier_ratio * len(points2d):
        return None
    return AbsolutePose(Rigid3(np.asarray(pose.R), np.asarray(pose.t)), inliers)


def estimate_pose_from_relative(
    points2d: np.ndarray,
    points3d: np.ndarray,
    camera: Camera,
    neighbour_from_world: Rigid3,
    cam_from_neighbour: Rigid3,
    max_error: float = 4.0,
) -> AbsolutePose | None:
    """Pose of an image from its relative pose to a posed neighbour and the scale of that relative pose.

    The relative pose (from the two images' matches, e.g. `estimate_relative_pose`) fixes the rotation and the
    direction of the baseline; a few 2D-3D correspondences fix the one unknown left, the baseline length. Each
    correspondence gives it in closed form; the length supported by the most correspondences within `max_error`
    pixels is kept (one-point RANSAC, tried exhaustively, so deterministic) and re-fitted on its inliers. The inlier
    count is also the test of the relative pose: a wrong rotation or direction leaves no length that reprojects
    the points.

    Args:
        points2d: `[N, 2]` keypoints in pixels (COLMAP convention). points3d: `[N, 3]` world points.
        camera: the image's camera (any COLMAP model).
        neighbour_from_world: the neighbour's pose. cam_from_neighbour: the relative pose; its translation's
            length is ignored.

    Returns:
        The pose and the `[N]` inliers, or None without a positive baseline length supported by 1 or more points.
        How many inliers are enough is the caller's decision.
    """
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    rays = camera.unproject(points2d)
    direction = cam_from_neighbour.translation / max(np.linalg.norm(cam_from_neighbour.translation), 1e-300)
    # In the image's frame a point sits at a + s * b for baseline length s; its ray u is parallel to that.
    a = neighbour_from_world.apply(points3d) @ cam_from_neighbour.rotation.T
    u_cross_a = np.cross(rays, a)
    u_cross_b = np.cross(rays, direction)
    with np.errstate(invalid="ignore", divide="ignore"):
        lengths = -(u_cross_a * u_cross_b).sum(1) / (u_cross_b * u_cross_b).sum(1)
    candidates = np.flatnonzero(np.isfinite(lengths) & (lengths > 0) & np.isfinite(rays).all(1))
    if candidates.size == 0:
        return None
    focal = mean_focal(camera)

    def inliers_at(length: float) -> tuple[np.ndarray, float]:
        """Inlier mask and truncated error sum (pixels) of the baseline length."""
        p = a + length * direction
        with np.errstate(invalid="ignore", divide="ignore"):
            error = focal * np.linalg.norm(p[:, :2] / p[:, 2:] - rays[:, :2], axis=1)
        inlier = (p[:, 2] > 0) & (error < max_error)
        return inlier, float(np.where(inlier, error, max_error).sum())

    scores = [inliers_at(lengths[k]) for k in candidates]
    best = min(range(len(candidates)), key=lambda k: (-scores[k][0].sum(), scores[k][1]))
    length, inliers = lengths[candidates[best]], scores[best][0]
    if not inliers.any():
        return None
    refit = -(u_cross_a[inliers] * u_cross_b[inliers]).sum() / (u_cross_b[inliers] ** 2).sum()
    if refit > 0 and inliers_at(refit)[0].sum() >= inliers.sum():
        length, inliers = refit, inliers_at(refit)[0]
    cam_from_world = Rigid3(cam_from_neighbour.rotation, length * direction) * neighbour_from_world
    return AbsolutePose(cam_from_world, inliers)


def estimate_relative_pose(
    points1: np.ndarray, points2: np.ndarray, camera1: Camera, camera2: Camera, max_error: float = 4.0, seed: int = 0
) -> tuple[Rigid3, np.ndarray] | None:
    """`cam2_from_cam1` (unit translation) and the `[N]` inlier mask from matched pixels `[N, 2]` of two images."""
    rays1 = camera1.unproject(np.asarray(points1, dtype=np.float64))[:, :2]
    rays2 = camera2.unproject(np.asarray(points2, dtype=np.float64))[:, :2]
    valid = np.isfinite(rays1).all(1) & np.isfinite(rays2).all(1)
    if valid.sum() < 5:
        return None
    f1, f2 = mean_focal(camera1), mean_focal(camera2)
    cam1 = {"model": "SIMPLE_PINHOLE", "width": camera1.width, "height": camera1.height, "params": [f1, 0.0, 0.0]}
    cam2 = {"model": "SIMPLE_PINHOLE", "width": camera2.width, "height": camera2.height, "params": [f2, 0.0, 0.0]}
    ransac = {"max_epipolar_error": max_error, "seed": seed, "success_prob": 0.9999}
    pose, info = poselib.estimate_relative_pose(f1 * rays1[valid], f2 * rays2[valid], cam1, cam2, ransac, {})
    inliers = np.zeros(len(rays1), dtype=bool)
    inliers[np.flatnonzero(valid)] = np.asarray(info["inliers"], dtype=bool)
    if inliers.sum() < 5:
        return None
    return Rigid3(np.asarray(pose.R), np.asarray(pose.t)), inliers
