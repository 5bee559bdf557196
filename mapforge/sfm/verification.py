"""Geometric verification of matched pairs: RANSAC for E, F and H (PoseLib), and COLMAP's rules to classify a pair.

With known intrinsics, keypoints are first turned into normalised image coordinates by `Camera.unproject` (so
distorted camera models are handled exactly), the essential matrix is estimated with the 5-point solver inside
LO-RANSAC followed by non-linear refinement (PoseLib), and the relative pose comes with it. F and H are estimated
on undistorted pixel coordinates (the camera's K applied to normalised coordinates); F needs no search of its own
when E's inliers already make up `min_e_f_inlier_ratio` of all matches (the pair is "calibrated" whatever F would
find), and is then E's. Without intrinsics, F and H are estimated on raw pixels. RANSAC stops, at the latest, once a
pair would have been found with `min_num_inliers` inliers (`iteration_cap`): most pairs of an exhaustive set do
not overlap, and without the cap each of them ran the maximum 10000 iterations (templeSparseRing: 4x faster in
total, the same pairs and inliers).

Classification (as COLMAP's two-view geometry, thresholds from its defaults):
* fewer than `min_num_inliers` inliers for every model, or with known intrinsics for E -> "degenerate" (unused);
* calibrated, E explains at least `min_e_f_inlier_ratio` of F's inliers -> "calibrated";
* otherwise F -> "uncalibrated" (with known intrinsics this hints at wrong intrinsics for this pair);
* in either case, if H explains more than `max_h_inlier_ratio` of the chosen model's inliers the pair is
  "planar": a planar scene or a pure rotation, poor for initialising a reconstruction and for triangulation.

PoseLib was chosen over OpenCV's `findEssentialMat(USAC_MAGSAC)` + `recoverPose` because its pose is refined on
all inliers: on the 55 pairs of fountain-P11 (same matches, 4 px threshold) the median relative rotation error is
0.040 degrees against OpenCV's 0.21, for 2.4 s against 1.8 s in total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import poselib

from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera
from mapforge.sfm.executor import Executor, LocalExecutor
from mapforge.sfm.features import Features

CONFIGS = ("calibrated", "uncalibrated", "planar", "degenerate")


@dataclass
class VerificationConfig:
    """Two-view RANSAC and classification settings (defaults are COLMAP's two-view geometry options).

    Attributes:
        max_error: inlier threshold in pixels (Sampson error for E/F, transfer error for H); COLMAP's 4.
        min_num_inliers: fewer inliers make the pair "degenerate"; COLMAP's 15.
        min_e_f_inlier_ratio: E must keep this share of F's inliers for "calibrated"; COLMAP's 0.95.
        max_h_inlier_ratio: H keeping more than this share of the chosen model's inliers means "planar"; COLMAP's 0.8.
        refine_loss_scale: pixels; scale of the Cauchy loss in the non-linear refinement of every model on the RANSAC
            inliers. 1 px instead of `max_error` (PoseLib's default) halves the median relative rotation error on
            templeSparseRing (0.47 instead of 1.17 degrees at 640x480) and changes nothing on fountain-P11.
        confidence: RANSAC success probability; PoseLib's default 0.9999.
        min_iterations, max_iterations: RANSAC iteration bounds; COLMAP's 100 and 10000 (`iteration_cap` lowers the
            upper one for pairs with few matches).
        seed: RANSAC random seed, for repeatable results.
    """

    max_error: float = 4.0
    min_num_inliers: int = 15
    min_e_f_inlier_ratio: float = 0.95
    max_h_inlier_ratio: float = 0.8
    refine_loss_scale: float = 1.0
    confidence: float = 0.9999
    min_iterations: int = 100
    max_iterations: int = 10000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_error <= 0:
            raise InputError(f"the verification inlier threshold must be positive, got {self.max_error}")
        if self.min_num_inliers < 8:
            raise InputError(f"min_num_inliers must be at least 8 (the 8-point F needs 8), got {self.min_num_inliers}")


@dataclass
class TwoViewGeometry:
    """The verified geometry of one image pair `(i, j)`.

    Attributes:
        matches: `[M, 2]` int64 inlier matches (keypoint indices in image i, image j); empty when degenerate.
        config: "calibrated", "uncalibrated", "planar" or "degenerate".
        E: `[3, 3]` essential matrix (known intrinsics only), with `x_j^T E x_i = 0` on normalised coordinates.
        F: `[3, 3]` fundamental matrix, `p_j^T F p_i = 0` on (undistorted) pixels.
        H: `[3, 3]` homography, `p_j ~ H p_i` on (undistorted) pixels.
        cam2_from_cam1: pose of camera j relative to camera i from E (unit translation), when E had at least
            `min_num_inliers` inliers; else None.
        num_inliers: `len(matches)`.
    """

    matches: np.ndarray
    config: str
    E: np.ndarray | None = None
    F: np.ndarray | None = None
    H: np.ndarray | None = None
    cam2_from_cam1: Rigid3 | None = None

    @property
    def num_inliers(self) -> int:
        return len(self.matches)


def _ransac_options(config: VerificationConfig, num_matches: int, sample_size: int, **threshold: float) -> dict:
    return {
        "min_iterations": config.min_iterations,
        "max_iterations": iteration_cap(num_matches, sample_size, config),
        "success_prob": config.confidence,
        "seed": config.seed,
        **threshold,
    }


def iteration_cap(num_matches: int, sample_size: int, config: VerificationConfig) -> int:
    """RANSAC iterations after which a pair of `num_matches` matches can stop: `config.max_iterations`, or fewer.

    A pair is only kept with `min_num_inliers` inliers, an inlier ratio of at least r = min_num_inliers /
    num_matches; after log(1 - confidence) / log(1 - r^s) samples of size s, a model with that many inliers has been
    sampled from inliers alone with the confidence RANSAC's own stopping rule asks for. Pairs with more inliers stop
    earlier by that rule anyway, so only pairs that end up degenerate (most of an exhaustive set: few matches, few of
    them consistent) are cut short, instead of running `max_iterations` for nothing.
    """
    ratio = config.min_num_inliers / max(num_matches, 1)
    if ratio >= 1.0:
        return config.min_iterations
    needed = math.log(1.0 - config.confidence) / math.log1p(-(ratio**sample_size))
    return int(min(config.max_iterations, max(config.min_iterations, math.ceil(needed))))


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _estimate_essential(
    x1: np.ndarray, x2: np.ndarray, focal: float, config: VerificationConfig
) -> tuple[Rigid3, np.ndarray, np.ndarray]:
    """E on normalised coordinates `[M, 2]` (pixel thresholds divided by `focal`) -> (cam2_from_cam1, E, inliers)."""
    threshold, loss_scale = config.max_error / focal, config.refine_loss_scale / focal
    identity = {"model": "PINHOLE", "width": 1, "height": 1, "params": [1.0, 1.0, 0.0, 0.0]}
    options = _ransac_options(config, len(x1), 5, max_epipolar_error=threshold)
    pose, info = poselib.estimate_relative_pose(x1, x2, identity, identity, options, {"loss_scale": loss_scale})
    cam2_from_cam1 = Rigid3(pose.R, pose.t)
    E = _skew(cam2_from_cam1.translation) @ cam2_from_cam1.rotation
    return cam2_from_cam1, E, np.asarray(info["inliers"], bool)


def _estimate_fundamental(p1: np.ndarray, p2: np.ndarray, config: VerificationConfig) -> tuple[np.ndarray, np.ndarray]:
    F, info = poselib.estimate_fundamental(
        p1, p2, _ransac_options(config, len(p1), 7, max_epipolar_error=config.max_error),
        {"loss_scale": config.refine_loss_scale},
    )
    return np.asarray(F), np.asarray(info["inliers"], bool)


def _estimate_homography(p1: np.ndarray, p2: np.ndarray, config: VerificationConfig) -> tuple[np.ndarray, np.ndarray]:
    H, info = poselib.estimate_homography(
        p1, p2, _ransac_options(config, len(p1), 4, max_reproj_error=config.max_error),
        {"loss_scale": config.refine_loss_scale},
    )
    return np.asarray(H), np.asarray(info["inliers"], bool)


def _normalised(camera: Camera, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates `[M, 2]` (NaN where a ray cannot be formed) and the same points as undistorted pixels."""
    x = camera.unproject(pixels)[:, :2]
    K = camera.K
    return x, x * np.diag(K)[:2] + K[:2, 2]


def _scatter(valid: np.ndarray, inliers: np.ndarray) -> np.ndarray:
    """An inlier mask over the valid subset `[V]` as a mask over all matches `[M]`."""
    full = np.zeros(len(valid), dtype=bool)
    full[np.flatnonzero(valid)[inliers]] = True
    return full


def verify_pair(
    keypoints1: np.ndarray,
    keypoints2: np.ndarray,
    matches: np.ndarray,
    camera1: Camera | None = None,
    camera2: Camera | None = None,
    config: VerificationConfig | None = None,
) -> TwoViewGeometry:
    """Verify the matches `[M, 2]` between keypoints `[N1, 2]` and `[N2, 2]` (pixels, COLMAP convention).

    With both cameras the pair can be "calibrated" (E and relative pose); without them only F and H are estimated.
    """
    config = config or VerificationConfig()
    matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    degenerate = TwoViewGeometry(np.zeros((0, 2), dtype=np.int64), "degenerate")
    if len(matches) < config.min_num_inliers:
        return degenerate
    p1 = np.asarray(keypoints1, dtype=np.float64)[matches[:, 0]]
    p2 = np.asarray(keypoints2, dtype=np.float64)[matches[:, 1]]
    calibrated = camera1 is not None and camera2 is not None
    valid = np.ones(len(matches), dtype=bool)
    E = pose = None
    e_inliers = np.zeros(len(matches), dtype=bool)
    if calibrated:
        x1, p1 = _normalised(camera1, p1)
        x2, p2 = _normalised(camera2, p2)
        valid = np.isfinite(x1).all(1) & np.isfinite(x2).all(1)  # rays beyond 90 degrees (fisheye) have none
        if valid.sum() < config.min_num_inliers:
            return degenerate
        focal = 0.5 * (np.mean(np.diag(camera1.K)[:2]) + np.mean(np.diag(camera2.K)[:2]))
        pose, E, inliers = _estimate_essential(x1[valid], x2[valid], focal, config)
        e_inliers = _scatter(valid, inliers)
        if e_inliers.sum() < config.min_num_inliers:
            # COLMAP would still try F; with known intrinsics a pair E cannot explain is chance agreement, and
            # skipping the F and H searches keeps non-overlapping pairs (most of an exhaustive set) cheap
            return degenerate
    if calibrated and e_inliers.sum() >= config.min_e_f_inlier_ratio * valid.sum():
        # F can have no more inliers than there are matches, so E keeps the share of them that "calibrated" asks
        # for whatever F's search would find: F is E's, in the undistorted pixels' coordinates
        F, f_inliers = np.linalg.inv(camera2.K).T @ E @ np.linalg.inv(camera1.K), e_inliers
    else:
        F, f_inliers = _estimate_fundamental(p1[valid], p2[valid], config)
        f_inliers = _scatter(valid, f_inliers)
    H, h_inliers = _estimate_homography(p1[valid], p2[valid], config)
    h_inliers = _scatter(valid, h_inliers)
    num_e, num_f, num_h = int(e_inliers.sum()), int(f_inliers.sum()), int(h_inliers.sum())
    if calibrated and num_e >= config.min_num_inliers and num_e >= config.min_e_f_inlier_ratio * num_f:
        label, inliers = "calibrated", e_inliers
    elif num_f >= config.min_num_inliers:
        label, inliers = "uncalibrated", f_inliers
    else:
        return degenerate
    if num_h > config.max_h_inlier_ratio * inliers.sum():
        label = "planar"
        if num_h > inliers.sum():
            inliers = h_inliers
    if num_e < config.min_num_inliers:
        E = pose = None
    return TwoViewGeometry(matches[inliers], label, E=E, F=F, H=H, cam2_from_cam1=pose)


def _verify_task(task: tuple) -> TwoViewGeometry:
    return verify_pair(*task)


def verify_pairs(
    features: Sequence[Features],
    matches: dict[tuple[int, int], np.ndarray],
    cameras: Sequence[Camera] | None = None,
    config: VerificationConfig | None = None,
    executor: Executor | None = None,
) -> dict[tuple[int, int], TwoViewGeometry]:
    """Verify every matched pair: `{(i, j): TwoViewGeometry}`, degenerate pairs included (with no matches).

    `cameras` (one per image, known intrinsics) enables E and relative poses; None verifies with F and H only.
    `config` is a `VerificationConfig`, or any object with a `verification` attribute holding one (such as
    `MatchingConfig`). Runs through `executor` (default: a `LocalExecutor` on every core), one task per pair.
    """
    config = getattr(config, "verification", config) or VerificationConfig()
    if cameras is not None and len(cameras) != len(features):
        raise InputError(f"{len(cameras)} cameras given for {len(features)} images")
    keys = list(matches)
    tasks = []
    for i, j in keys:
        camera_i = cameras[i] if cameras is not None else None
        camera_j = cameras[j] if cameras is not None else None
        tasks.append((features[i].keypoints, features[j].keypoints, matches[(i, j)], camera_i, camera_j, config))
    results = (executor or LocalExecutor()).map(_verify_task, tasks, desc="verification")
    return dict(zip(keys, results))
