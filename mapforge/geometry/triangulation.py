"""Multi-view triangulation in float64, vectorised over points.

Observations are normalised image coordinates (pixels already unprojected with `cameras.unproject`, i.e. the x, y
of z = 1 rays), so the functions work for every camera model. Views in which a point is not observed are masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mapforge.errors import InputError


@dataclass
class RefineConfig:
    """Gauss-Newton refinement of triangulated points.

    `iterations`: maximum Gauss-Newton steps (10 is plenty: the DLT start is usually within a fraction of a pixel).
    `damping`: Levenberg-Marquardt damping relative to the normal matrix's diagonal, guarding near-degenerate
    (small-baseline) points. `tolerance`: stop once every point moves less than this relative to its depth.
    """

    iterations: int = 10
    damping: float = 1e-6
    tolerance: float = 1e-12


def _check_inputs(cams_from_world: np.ndarray, points2d: np.ndarray, mask: np.ndarray | None) -> tuple:
    cams = np.asarray(cams_from_world, dtype=np.float64)
    obs = np.asarray(points2d, dtype=np.float64)
    if cams.ndim != 3 or cams.shape[1:] != (3, 4):
        raise InputError(f"cams_from_world must be [V, 3, 4], got {cams.shape}")
    if obs.ndim != 3 or obs.shape[0] != cams.shape[0] or obs.shape[2] != 2:
        raise InputError(f"points2d must be [V, N, 2] with V = {cams.shape[0]}, got {obs.shape}")
    if mask is None:
        mask = np.ones(obs.shape[:2], dtype=bool)
    mask = np.asarray(mask, dtype=bool) & np.isfinite(obs).all(-1)
    if mask.shape != obs.shape[:2]:
        raise InputError(f"mask must be [V, N] = {obs.shape[:2]}, got {mask.shape}")
    return cams, obs, mask


def triangulate_dlt(cams_from_world: np.ndarray, points2d: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Linear (DLT) triangulation.

    Args:
        cams_from_world: `[V, 3, 4]` matrices `[R | t]`.
        points2d: `[V, N, 2]` normalised image coordinates of N points in V views.
        mask: `[V, N]` bool, True where the point is observed (default: everywhere). Non-finite observations
            are treated as unobserved.

    Returns:
        `[N, 3]` world points; NaN for points seen in fewer than two views or at infinity (homogeneous w ~ 0).
    """
    cams, obs, mask = _check_inputs(cams_from_world, points2d, mask)
    num_points = obs.shape[1]
    if num_points == 0:
        return np.zeros((0, 3))
    obs = np.where(mask[..., None], obs, 0.0)
    # Rows x * P[2] - P[0] and y * P[2] - P[1] per view: [N, V, 2, 4], zeroed where unobserved.
    rows = obs.transpose(1, 0, 2)[..., None] * cams[None, :, 2:3, :] - cams[None, :, :2, :]
    rows = rows * mask.T[:, :, None, None]
    # Each row is unit-normalised so every view weighs the same whatever its translation's magnitude.
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    rows = rows / np.where(norms > 0, norms, 1.0)
    a = rows.reshape(num_points, -1, 4)
    _, _, vt = np.linalg.svd(a, full_matrices=False)
    homog = vt[:, -1, :]
    w = homog[:, 3]
    scale = np.abs(homog).max(-1)
    at_infinity = np.abs(w) <= 1e-12 * scale
    points = homog[:, :3] / np.where(at_infinity, 1.0, w)[:, None]
    bad = at_infinity | (mask.sum(0) < 2)
    points[bad] = np.nan
    return points


def refine_points(
    cams_from_world: np.ndarray,
    points2d: np.ndarray,
    points3d: np.ndarray,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    config: RefineConfig | None = None,
) -> np.ndarray:
    """Minimise each point's squared reprojection error (in normalised coordinates) by damped Gauss-Newton.

    Args:
        cams_from_world: `[V, 3, 4]`; points2d: `[V, N, 2]` normalised coordinates; points3d: `[N, 3]` start.
        mask: `[V, N]` observed flags. weights: `[V, N]` per-observation weights on the residuals (e.g. focal
            lengths in pixels, to minimise pixel errors). NaN start points stay NaN.

    Returns:
        `[N, 3]` refined points. A point's step is only taken when it lowers its cost.
    """
    cams, obs, mask = _check_inputs(cams_from_world, points2d, mask)
    config = config or RefineConfig()
    points = np.array(points3d, dtype=np.float64).reshape(-1, 3)
    if points.shape[0] != obs.shape[1]:
        raise InputError(f"points3d has {points.shape[0]} points but points2d has {obs.shape[1]}")
    w = np.ones(mask.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != mask.shape:
        raise InputError(f"weights must be [V, N] = {mask.shape}, got {w.shape}")
    w = np.where(mask, w, 0.0)
    obs = np.where(mask[..., None], obs, 0.0)
    active = np.isfinite(points).all(-1)
    rot, trans = cams[:, :, :3], cams[:, :, 3]

    def residuals(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p_cam = np.einsum("vij,nj->vni", rot, x) + trans[:, None, :]  # [V, N, 3]
        z = p_cam[..., 2]
        z_safe = np.where(np.abs(z) > 1e-300, z, 1e-300)
        proj = p_cam[..., :2] / z_safe[..., None]
        res = (proj - obs) * w[..., None]
        return res, p_cam, z_safe

    def cost(res: np.ndarray) -> np.ndarray:
        return np.einsum("vni,vni->n", res, res)

    x = np.where(active[:, None], points, 0.0)
    res, p_cam, z = residuals(x)
    current = cost(res)
    for _ in range(config.iterations):
        # d proj / d p_cam = [[1/z, 0, -x/z^2], [0, 1/z, -y/z^2]], then times R: [V, N, 2, 3].
        inv_z = 1.0 / z
        d_proj = np.zeros(p_cam.shape[:2] + (2, 3))
        d_proj[..., 0, 0] = inv_z
        d_proj[..., 1, 1] = inv_z
        d_proj[..., :, 2] = -p_cam[..., :2] * (inv_z * inv_z)[..., None]
        jac = np.einsum("vnij,vjk->vnik", d_proj, rot) * w[..., None, None]
        jtj = np.einsum("vnik,vnil->nkl", jac, jac)
        jtr = np.einsum("vnik,vni->nk", jac, res)
        diag = np.einsum("nkk->nk", jtj)
        jtj = jtj + config.damping * diag[:, :, None] * np.eye(3)
        solvable = active & (np.linalg.det(jtj) != 0)
        step = np.zeros_like(x)
        step[solvable] = -np.linalg.solve(jtj[solvable], jtr[solvable][..., None])[..., 0]
        candidate = x + step
        res_c, p_cam_c, z_c = residuals(candidate)
        new = cost(res_c)
        better = solvable & np.isfinite(new) & (new < current)
        x = np.where(better[:, None], candidate, x)
        current = np.where(better, new, current)
        res = np.where(better[None, :, None], res_c, res)
        p_cam = np.where(better[None, :, None], p_cam_c, p_cam)
        z = np.where(better[None, :], z_c, z)
        moved = np.linalg.norm(step, axis=-1) * better
        depth = np.abs(z).max(0)
        if not np.any(moved > config.tolerance * np.maximum(depth, 1e-300)):
            break
    return np.where(active[:, None], x, np.nan)


def triangulate_points(
    cams_from_world: np.ndarray,
    points2d: np.ndarray,
    mask: np.ndarray | None = None,
    refine: bool = True,
    weights: np.ndarray | None = None,
    config: RefineConfig | None = None,
) -> np.ndarray:
    """DLT triangulation followed (by default) by Gauss-Newton refinement of the reprojection error.

    Args:
        cams_from_world: `[V, 3, 4]`; points2d: `[V, N, 2]` normalised coordinates; mask: `[V, N]` observed flags;
        weights: `[V, N]` residual weights for the refinement (see `refine_points`).

    Returns:
        `[N, 3]` world points, NaN where fewer than two views observe the point or it is at infinity. Use
        `cheirality` and `triangulation_angles` to reject points behind cameras or with too small a baseline.
    """
    points = triangulate_dlt(cams_from_world, points2d, mask)
    if refine:
        points = refine_points(cams_from_world, points2d, points, mask, weights, config)
    return points


def camera_centers(cams_from_world: np.ndarray) -> np.ndarray:
    """World positions `[V, 3]` of cameras given as `[V, 3, 4]` matrices: c = -R^T t."""
    cams = np.asarray(cams_from_world, dtype=np.float64)
    return -np.einsum("vji,vj->vi", cams[:, :, :3], cams[:, :, 3])


def cheirality(cams_from_world: np.ndarray, points3d: np.ndarray, min_depth: float = 0.0) -> np.ndarray:
    """`[V, N]` bool: True where point n is in front of camera v (depth > `min_depth`; NaN points are False)."""
    cams = np.asarray(cams_from_world, dtype=np.float64)
    points = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    depth = np.einsum("vj,nj->vn", cams[:, 2, :3], points) + cams[:, 2, 3][:, None]
    return depth > min_depth


def reprojection_errors(
    cams_from_world: np.ndarray, points2d: np.ndarray, points3d: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """`[V, N]` distance in normalised coordinates between each observation and its point's projection.

    Unobserved entries are NaN. Multiply by the focal length to get pixels (approximately, for distorted models).
    """
    cams, obs, mask = _check_inputs(cams_from_world, points2d, mask)
    points = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    p_cam = np.einsum("vij,nj->vni", cams[:, :, :3], points) + cams[:, :, 3][:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = p_cam[..., :2] / p_cam[..., 2:3]
    errors = np.linalg.norm(proj - obs, axis=-1)
    return np.where(mask, errors, np.nan)


def triangulation_angles(
    centers: np.ndarray, points3d: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Largest angle in degrees, per point, between the rays from two observing camera centres to the point.

    Args:
        centers: `[V, 3]` camera centres in world coordinates (see `camera_centers`).
        points3d: `[N, 3]` points. mask: `[V, N]` observed flags (default: all views).

    Returns:
        `[N]` angles in [0, 180]; 0 for points with fewer than two observations. O(V^2 N) memory: fine for the
        track lengths of SfM (pass tracks in chunks for very long ones).
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    points = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    if mask is None:
        mask = np.ones((centers.shape[0], points.shape[0]), dtype=bool)
    rays = points[None, :, :] - centers[:, None, :]  # [V, N, 3]
    rays = rays / np.maximum(np.linalg.norm(rays, axis=-1, keepdims=True), 1e-300)
    cos = np.einsum("ani,bni->abn", rays, rays)  # [V, V, N]
    num_views = centers.shape[0]
    pair = mask[:, None, :] & mask[None, :, :] & ~np.eye(num_views, dtype=bool)[:, :, None]
    cos = np.where(pair, cos, np.inf).reshape(num_views * num_views, -1)
    # The widest pair has the smallest cosine; its angle is then taken with atan2, exact also at tiny angles.
    best = np.argmin(cos, axis=0)
    a = np.take_along_axis(rays, (best // num_views)[None, :, None], axis=0)[0]
    b = np.take_along_axis(rays, (best % num_views)[None, :, None], axis=0)[0]
    angles = np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1)))
    return np.where(pair.any(axis=(0, 1)), angles, 0.0)
