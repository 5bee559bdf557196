"""Similarity alignment of point sets and camera trajectories (evaluation of poses up to a similarity)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3, Sim3


def _pairs(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise InputError(f"alignment needs two [N, 3] point sets of equal size, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise InputError("alignment points contain NaN or infinite values")
    return src, dst


def umeyama(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = True, weights: np.ndarray | None = None
) -> Sim3:
    """The least-squares similarity with `dst ≈ sim.apply(src)` (Umeyama 1991), optionally weighted.

    Args:
        src, dst: `[N, 3]` corresponding points, N >= 3 and not all collinear (otherwise the rotation about their
            line is arbitrary).
        with_scale: estimate the scale; otherwise it is 1 (a rigid alignment).
        weights: `[N]` non-negative weights (default: all 1).

    Returns:
        The `Sim3`. Raises `InputError` for degenerate input (fewer than 3 points, or all at one place).
    """
    src, dst = _pairs(src, dst)
    if src.shape[0] < 3:
        raise InputError(f"alignment needs at least 3 point pairs, got {src.shape[0]}")
    w = np.ones(src.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != src.shape[0] or np.any(w < 0) or w.sum() <= 0:
        raise InputError("alignment weights must be [N], non-negative and not all zero")
    w = w / w.sum()
    mean_src, mean_dst = w @ src, w @ dst
    a, b = src - mean_src, dst - mean_dst
    var_src = float(w @ (a * a).sum(-1))
    if var_src <= 1e-300:
        raise InputError("alignment source points all coincide")
    cov = (b * w[:, None]).T @ a  # [3, 3] = sum w b a^T
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / var_src) if with_scale else 1.0
    translation = mean_dst - scale * rotation @ mean_src
    return Sim3(scale, rotation, translation)


@dataclass
class RansacConfig:
    """RANSAC for `umeyama_ransac`.

    `threshold`: inlier distance in dst units (required: it depends on the scene's scale). `iterations`: number of
    3-point samples (1000 makes missing an all-inlier sample negligible up to ~70 % outliers). `seed`: for
    reproducible sampling. `refine_iterations`: re-fits on the inliers of the best model (local optimisation).
    """

    threshold: float
    iterations: int = 1000
    seed: int = 0
    refine_iterations: int = 3


def umeyama_ransac(
    src: np.ndarray, dst: np.ndarray, config: RansacConfig, with_scale: bool = True
) -> tuple[Sim3, np.ndarray]:
    """Robust `umeyama`: RANSAC over minimal 3-point samples, then least squares on the inliers.

    Args:
        src, dst: `[N, 3]` corresponding points, some of which may be wrong.

    Returns:
        `(sim, inliers)`: the `Sim3` with `dst ≈ sim.apply(src)` on the inliers and the `[N]` bool inlier mask.
        Raises `InputError` when no sample gives at least 3 inliers.
    """
    src, dst = _pairs(src, dst)
    n = src.shape[0]
    if n < 3:
        raise InputError(f"alignment needs at least 3 point pairs, got {n}")
    if not config.threshold > 0:
        raise InputError(f"RANSAC threshold must be positive, got {config.threshold}")
    rng = np.random.default_rng(config.seed)
    best_inliers = np.zeros(n, dtype=bool)
    best_cost = np.inf
    threshold2 = config.threshold**2
    for _ in range(config.iterations):
        sample = rng.choice(n, size=3, replace=False)
        try:
            sim = umeyama(src[sample], dst[sample], with_scale)
        except InputError:
            continue
        if not np.isfinite(sim.scale) or sim.scale <= 0:
            continue
        err2 = ((sim.apply(src) - dst) ** 2).sum(-1)
        inliers = err2 < threshold2
        # MSAC cost: inliers count by their error, outliers by the threshold, which breaks count ties by accuracy.
        cost = float(np.minimum(err2, threshold2).sum())
        if cost < best_cost:
            best_cost, best_inliers = cost, inliers
    if best_inliers.sum() < 3:
        raise InputError(f"no similarity explains at least 3 of {n} point pairs within {config.threshold}")
    inliers = best_inliers
    sim = umeyama(src[inliers], dst[inliers], with_scale)
    for _ in range(config.refine_iterations):
        new_inliers = ((sim.apply(src) - dst) ** 2).sum(-1) < threshold2
        if new_inliers.sum() < 3 or np.array_equal(new_inliers, inliers):
            break
        inliers = new_inliers
        sim = umeyama(src[inliers], dst[inliers], with_scale)
    return sim, inliers


def align_camera_centers(
    centers_src: np.ndarray,
    centers_dst: np.ndarray,
    with_scale: bool = True,
    ransac: RansacConfig | None = None,
) -> Sim3:
    """The similarity mapping camera centres `[N, 3]` of one reconstruction onto another's (`dst ≈ sim.apply(src)`).

    Least squares by default; robust with `ransac` (e.g. `RansacConfig(threshold=0.1 * scene extent)`).
    Apply the result to poses with `sim.transform_pose(cam_from_world)`.
    """
    if ransac is None:
        return umeyama(centers_src, centers_dst, with_scale)
    return umeyama_ransac(centers_src, centers_dst, ransac, with_scale)[0]


def align_cameras(
    cams_from_world_src: list[Rigid3],
    cams_from_world_dst: list[Rigid3],
    with_scale: bool = True,
    ransac: RansacConfig | None = None,
) -> Sim3:
    """`align_camera_centers` for two lists of corresponding `cam_from_world` poses."""
    if len(cams_from_world_src) != len(cams_from_world_dst):
        raise InputError(f"cannot align {len(cams_from_world_src)} cameras with {len(cams_from_world_dst)}")

    def centers(poses: list[Rigid3]) -> np.ndarray:
        return np.stack([-p.rotation.T @ p.translation for p in poses]) if poses else np.zeros((0, 3))

    return align_camera_centers(centers(cams_from_world_src), centers(cams_from_world_dst), with_scale, ransac)
