"""Compiled (numba) kernels of the mapper's track triangulation, float64.

Each track is triangulated over the views that observe it only (a `[2m, 4]` DLT system for m observations), rather
than padded to every registered view. Observations are grouped by track: track t owns observations
`starts[t]:starts[t + 1]`, each with the index of its view into `cams [V, 3, 4]` and its normalised image
coordinates (x, y of the z = 1 ray). Cached on disk (`cache=True`) like `mapforge.sfm.ba_kernels`; numpy's error
model makes a division by zero (a point in a camera's plane) give inf or NaN, as in numpy, instead of raising.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def smallest_right_singular_vector(a: np.ndarray) -> np.ndarray:
    """The unit right singular vector `[4]` of `a [n, 4]` (overwritten) with the smallest singular value.

    One-sided Jacobi (Hestenes): plane rotations of column pairs until all columns are orthogonal; the rotations
    accumulate into V and the column norms become the singular values. As accurate as LAPACK's SVD and, for these
    tiny systems, many times faster than calling it.
    """
    n = a.shape[0]
    v = np.eye(4)
    for _ in range(30):
        rotated = False
        for i in range(3):
            for j in range(i + 1, 4):
                alpha, beta, gamma = 0.0, 0.0, 0.0
                for r in range(n):
                    alpha += a[r, i] * a[r, i]
                    beta += a[r, j] * a[r, j]
                    gamma += a[r, i] * a[r, j]
                if abs(gamma) <= 1e-15 * math.sqrt(alpha * beta):
                    continue
                rotated = True
                zeta = (beta - alpha) / (2.0 * gamma)
                t = math.copysign(1.0, zeta) / (abs(zeta) + math.sqrt(1.0 + zeta * zeta))
                c = 1.0 / math.sqrt(1.0 + t * t)
                s = c * t
                for r in range(n):
                    ai, aj = a[r, i], a[r, j]
                    a[r, i], a[r, j] = c * ai - s * aj, s * ai + c * aj
                for r in range(4):
                    vi, vj = v[r, i], v[r, j]
                    v[r, i], v[r, j] = c * vi - s * vj, s * vi + c * vj
        if not rotated:
            break
    best, best_norm = 0, np.inf
    for k in range(4):
        norm = 0.0
        for r in range(n):
            norm += a[r, k] * a[r, k]
        if norm < best_norm:
            best, best_norm = k, norm
    return v[:, best].copy()


@njit(cache=True, error_model="numpy")
def dlt_point(cams: np.ndarray, obs: np.ndarray, views: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation `[3]` of one point from the observations `obs [m, 2]` in views `views [m]` where
    `use [m]` is True, with unit-normalised rows (`geometry.triangulation.triangulate_dlt` restricted to the
    observing views). NaN with fewer than two observations or at infinity (homogeneous w ~ 0)."""
    point = np.full(3, np.nan)
    count = 0
    for k in range(use.shape[0]):
        count += use[k]
    if count < 2:
        return point
    a = np.empty((2 * count, 4))
    row = 0
    for k in range(use.shape[0]):
        if not use[k]:
            continue
        cam = cams[views[k]]
        for axis in range(2):
            norm2 = 0.0
            for c in range(4):
                a[row, c] = obs[k, axis] * cam[2, c] - cam[axis, c]
                norm2 += a[row, c] * a[row, c]
            norm = math.sqrt(norm2)
            if norm > 0:
                for c in range(4):
                    a[row, c] /= norm
            row += 1
    homog = smallest_right_singular_vector(a)
    scale = max(abs(homog[0]), abs(homog[1]), abs(homog[2]), abs(homog[3]))
    if abs(homog[3]) <= 1e-12 * scale:
        return point
    for c in range(3):
        point[c] = homog[c] / homog[3]
    return point


@njit(cache=True, error_model="numpy")
def _max_angle(centers: np.ndarray, point: np.ndarray, views: np.ndarray, use: np.ndarray) -> float:
    """Largest angle (degrees) between the rays from two observing camera centres to `point`; 0 below two views.
    As `geometry.triangulation.triangulation_angles`: the pair with the smallest cosine, its angle by atan2."""
    m = views.shape[0]
    rays = np.empty((m, 3))
    for k in range(m):
        norm2 = 0.0
        for c in range(3):
            rays[k, c] = point[c] - centers[views[k], c]
            norm2 += rays[k, c] * rays[k, c]
        norm = max(math.sqrt(norm2), 1e-300)
        for c in range(3):
            rays[k, c] /= norm
    best_cos, best_a, best_b = np.inf, -1, -1
    for a in range(m):
        if not use[a]:
            continue
        for b in range(m):
            if b == a or not use[b]:
                continue
            cos = rays[a, 0] * rays[b, 0] + rays[a, 1] * rays[b, 1] + rays[a, 2] * rays[b, 2]
            if cos < best_cos:
                best_cos, best_a, best_b = cos, a, b
    if best_a < 0:
        return 0.0
    ra, rb = rays[best_a], rays[best_b]
    cross0 = ra[1] * rb[2] - ra[2] * rb[1]
    cross1 = ra[2] * rb[0] - ra[0] * rb[2]
    cross2 = ra[0] * rb[1] - ra[1] * rb[0]
    sine = math.sqrt(cross0 * cross0 + cross1 * cross1 + cross2 * cross2)
    return math.degrees(math.atan2(sine, ra[0] * rb[0] + ra[1] * rb[1] + ra[2] * rb[2]))


@njit(cache=True, error_model="numpy")
def triangulate_tracks(
    cams: np.ndarray, centers: np.ndarray, focal: np.ndarray, obs: np.ndarray, obs_view: np.ndarray,
    starts: np.ndarray, max_error: float, max_rounds: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Triangulate every track by DLT, drop the observations that do not fit, re-triangulate from the rest.

    Args: cameras `[V, 3, 4]`, their centres `[V, 3]` and focal lengths in pixels `[V]`; normalised observations
    `[M, 2]` (non-finite: unusable) and their views `[M]`, grouped by track through `starts [T + 1]`; the pixel
    reprojection limit; the number of triangulation rounds.

    An observation fits when its point is in front of the camera and reprojects within `max_error` pixels; the
    rounds stop once every used observation fits. Returns the points `[T, 3]` (NaN when not triangulable), the
    observations kept `[M]` (those that fit the final point) and each point's triangulation angle in degrees `[T]`
    over the kept observations.
    """
    num_tracks = starts.shape[0] - 1
    points = np.full((num_tracks, 3), np.nan)
    keep = np.zeros(obs.shape[0], dtype=np.bool_)
    angles = np.zeros(num_tracks)
    for t in range(num_tracks):
        lo, hi = starts[t], starts[t + 1]
        track_obs, views = obs[lo:hi], obs_view[lo:hi]
        use = np.empty(hi - lo, dtype=np.bool_)
        for k in range(hi - lo):
            use[k] = np.isfinite(track_obs[k, 0]) and np.isfinite(track_obs[k, 1])
        point = np.full(3, np.nan)
        for _ in range(max_rounds):
            point = dlt_point(cams, track_obs, views, use)
            converged = True
            for k in range(hi - lo):
                cam = cams[views[k]]
                x = cam[0, 0] * point[0] + cam[0, 1] * point[1] + cam[0, 2] * point[2] + cam[0, 3]
                y = cam[1, 0] * point[0] + cam[1, 1] * point[1] + cam[1, 2] * point[2] + cam[1, 3]
                z = cam[2, 0] * point[0] + cam[2, 1] * point[1] + cam[2, 2] * point[2] + cam[2, 3]
                dx, dy = x / z - track_obs[k, 0], y / z - track_obs[k, 1]
                fits = use[k] and z > 0 and math.sqrt(dx * dx + dy * dy) * focal[views[k]] < max_error
                converged &= fits == use[k]
                use[k] = fits
            if converged:
                break
        points[t] = point
        keep[lo:hi] = use
        if np.isfinite(point).all():
            angles[t] = _max_angle(centers, point, views, use)
    return points, keep, angles
