"""Compiled (numba) kernels of bundle adjustment, all float64: the pose rotations, the projection of every
observation and its pose and point Jacobians, the normal equations, the reduced camera system and the back
substitution of the point steps.

Observations are sorted by point, so the observations of point p are `point_starts[p]:point_starts[p + 1]`. Each
observation has a camera-side Jacobian block `[2, K]` whose columns go to `cols [K]` of the camera-side unknowns
(-1: a held parameter, whose Jacobian entries are zero) and a point block `[2, 3]`.

The kernels are compiled on first use and cached on disk (`cache=True`), so a later process loads them in a fraction
of a second. They run on one thread: a bundle adjustment is one step of the sequential mapper, and the Schur
complement accumulates into one dense matrix.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def normal_equations(
    res: np.ndarray, j_cam: np.ndarray, cols: np.ndarray, j_point: np.ndarray, weight: np.ndarray,
    obs_pt: np.ndarray, num_c: int, num_points: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Blocks of the weighted normal equations [[U, W], [W^T, V]] [dc, dp] = -[g_c, g_p].

    Args: residuals `[n, 2]`, camera-side Jacobians `[n, 2, K]` with columns `[n, K]`, point Jacobians `[n, 2, 3]`,
    robust weights `[n]`, point of each observation `[n]`.

    Returns: U `[num_c, num_c]`, g_c `[num_c]`, V `[P, 3, 3]`, g_p `[P, 3]`, and each observation's block of W
    `[n, K, 3]`.
    """
    n, _, k = j_cam.shape
    u = np.zeros((num_c, num_c))
    g_c = np.zeros(num_c)
    v = np.zeros((num_points, 3, 3))
    g_p = np.zeros((num_points, 3))
    w_obs = np.zeros((n, k, 3))
    for o in range(n):
        w = weight[o]
        p = obs_pt[o]
        r0, r1 = w * res[o, 0], w * res[o, 1]
        for i in range(3):
            a0, a1 = j_point[o, 0, i], j_point[o, 1, i]
            g_p[p, i] += a0 * r0 + a1 * r1
            for j in range(3):
                v[p, i, j] += w * (a0 * j_point[o, 0, j] + a1 * j_point[o, 1, j])
        for a in range(k):
            ca = cols[o, a]
            if ca < 0:
                continue
            c0, c1 = w * j_cam[o, 0, a], w * j_cam[o, 1, a]
            g_c[ca] += c0 * res[o, 0] + c1 * res[o, 1]
            for b in range(k):
                cb = cols[o, b]
                if cb >= 0:
                    u[ca, cb] += c0 * j_cam[o, 0, b] + c1 * j_cam[o, 1, b]
            for j in range(3):
                w_obs[o, a, j] = c0 * j_point[o, 0, j] + c1 * j_point[o, 1, j]
    return u, g_c, v, g_p, w_obs


@njit(cache=True)
def _damped_inverse(v: np.ndarray, lam: float, out: np.ndarray) -> None:
    """Write into `out [3, 3]` the inverse of the symmetric 3x3 `v + lam diag(v) + 1e-12 I` by its adjugate."""
    a = v[0, 0] * (1.0 + lam) + 1e-12
    e = v[1, 1] * (1.0 + lam) + 1e-12
    i = v[2, 2] * (1.0 + lam) + 1e-12
    b, c, f = v[0, 1], v[0, 2], v[1, 2]
    out[0, 0] = e * i - f * f
    out[0, 1] = out[1, 0] = c * f - b * i
    out[0, 2] = out[2, 0] = b * f - c * e
    out[1, 1] = a * i - c * c
    out[1, 2] = out[2, 1] = b * c - a * f
    out[2, 2] = a * e - b * b
    det = a * out[0, 0] + b * out[1, 0] + c * out[2, 0]
    out /= det


@njit(cache=True)
def reduced_camera_system(
    u: np.ndarray, g_c: np.ndarray, v: np.ndarray, g_p: np.ndarray, w_obs: np.ndarray, cols: np.ndarray,
    point_starts: np.ndarray, lam: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The damped Schur complement S = U' - W V'^-1 W^T and its right-hand side -g_c + W V'^-1 g_p.

    U' and V' are U and V with their diagonals scaled by (1 + lam) (plus 1e-12, against exactly singular blocks).
    W V'^-1 W^T is summed over pairs of observations of the same point, so its cost grows with the squared track
    lengths. Returns S `[num_c, num_c]`, the right-hand side `[num_c]` and the damped inverses V'^-1 `[P, 3, 3]`.
    """
    num_c = u.shape[0]
    num_points = v.shape[0]
    k = w_obs.shape[1]
    s = u.copy()
    for c in range(num_c):
        s[c, c] += lam * u[c, c] + 1e-12
    rhs = -g_c.copy()
    v_inv = np.empty((num_points, 3, 3))
    y = np.empty((k, 3))
    for p in range(num_points):
        vi = v_inv[p]
        _damped_inverse(v[p], lam, vi)
        for o in range(point_starts[p], point_starts[p + 1]):
            # y = W_o V'^-1  [K, 3]
            for a in range(k):
                for j in range(3):
                    y[a, j] = w_obs[o, a, 0] * vi[0, j] + w_obs[o, a, 1] * vi[1, j] + w_obs[o, a, 2] * vi[2, j]
            for a in range(k):
                ca = cols[o, a]
                if ca < 0:
                    continue
                rhs[ca] += y[a, 0] * g_p[p, 0] + y[a, 1] * g_p[p, 1] + y[a, 2] * g_p[p, 2]
                # the block of the pair (q, o) is the transpose of that of (o, q): each unordered pair once
                for q in range(o, point_starts[p + 1]):
                    for b in range(k):
                        cb = cols[q, b]
                        if cb >= 0:
                            value = y[a, 0] * w_obs[q, b, 0] + y[a, 1] * w_obs[q, b, 1] + y[a, 2] * w_obs[q, b, 2]
                            s[ca, cb] -= value
                            if q != o:
                                s[cb, ca] -= value
    return s, rhs, v_inv


@njit(cache=True)
def point_steps(
    dc: np.ndarray, g_p: np.ndarray, w_obs: np.ndarray, cols: np.ndarray, obs_pt: np.ndarray, v_inv: np.ndarray
) -> np.ndarray:
    """Point steps `[P, 3]` dp = -V'^-1 (g_p + W^T dc) for the camera-side step `dc [num_c]`."""
    acc = g_p.copy()
    n, k = cols.shape
    for o in range(n):
        p = obs_pt[o]
        for a in range(k):
            c = cols[o, a]
            if c >= 0:
                for j in range(3):
                    acc[p, j] += w_obs[o, a, j] * dc[c]
    dp = np.empty_like(acc)
    for p in range(acc.shape[0]):
        for i in range(3):
            dp[p, i] = -(v_inv[p, i, 0] * acc[p, 0] + v_inv[p, i, 1] * acc[p, 1] + v_inv[p, i, 2] * acc[p, 2])
    return dp


@njit(cache=True)
def project(
    rot: np.ndarray, trans: np.ndarray, points: np.ndarray, obs_img: np.ndarray, obs_pt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R X `[n, 3]` (the rotated point), normalised coordinates (x/z, y/z) `[n, 2]` and 1/z `[n]` of every
    observation, for poses R `[I, 3, 3]`, t `[I, 3]` and points X `[P, 3]`; |z| below 1e-12 counts as 1e-12."""
    n = obs_img.shape[0]
    rotated = np.empty((n, 3))
    uv = np.empty((n, 2))
    inv_z = np.empty(n)
    for o in range(n):
        i, p = obs_img[o], obs_pt[o]
        for r in range(3):
            rotated[o, r] = rot[i, r, 0] * points[p, 0] + rot[i, r, 1] * points[p, 1] + rot[i, r, 2] * points[p, 2]
        z = rotated[o, 2] + trans[i, 2]
        z = z if abs(z) > 1e-12 else 1e-12
        inv_z[o] = 1.0 / z
        uv[o, 0] = (rotated[o, 0] + trans[i, 0]) / z
        uv[o, 1] = (rotated[o, 1] + trans[i, 1]) / z
    return rotated, uv, inv_z


@njit(cache=True)
def pose_point_jacobians(
    rotated: np.ndarray, uv: np.ndarray, inv_z: np.ndarray, j_dist: np.ndarray, focal: np.ndarray, rot: np.ndarray,
    left_jacobians: np.ndarray, obs_img: np.ndarray, pose_cols: np.ndarray, width: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Pixel Jacobians of every observation with respect to its pose increment and its point.

    Args: R X `[n, 3]`, normalised coordinates `[n, 2]`, 1/z `[n]`, d(distorted)/d(normalised) `[n, 2, 2]`, focal
    lengths (fx, fy) `[n, 2]`, rotations `[I, 3, 3]`, left Jacobians of the rotation increments `[I, 3, 3]`, image of
    each observation `[n]`, free columns of each image's 6 pose parameters `[I, 6]` (-1: held), block width K >= 6.

    Returns: camera-side blocks `[n, 2, K]` with the pose in the first 6 columns (zero where held, the rest zero),
    their columns `[n, K]` (the pose's free columns, -1 elsewhere) and point blocks `[n, 2, 3]`.
    """
    n = rotated.shape[0]
    j_cam = np.zeros((n, 2, width))
    cols = np.full((n, width), -1, dtype=np.int64)
    j_point = np.empty((n, 2, 3))
    d_pix = np.empty((2, 3))
    m = np.empty((2, 3))
    for o in range(n):
        i = obs_img[o]
        jl = left_jacobians[i]
        # d(pixel)/d(camera point) = diag(f) J_dist d(u, v)/d(p_cam)
        for r in range(2):
            a0 = focal[o, r] * j_dist[o, r, 0] * inv_z[o]
            a1 = focal[o, r] * j_dist[o, r, 1] * inv_z[o]
            d_pix[r, 0] = a0
            d_pix[r, 1] = a1
            d_pix[r, 2] = -(a0 * uv[o, 0] + a1 * uv[o, 1])
        x0, x1, x2 = rotated[o, 0], rotated[o, 1], rotated[o, 2]
        for r in range(2):
            # m = -d_pix [R X]_x: the derivative with respect to a rotation increment applied on the left
            m[r, 0] = -(d_pix[r, 1] * x2 - d_pix[r, 2] * x1)
            m[r, 1] = -(d_pix[r, 2] * x0 - d_pix[r, 0] * x2)
            m[r, 2] = -(d_pix[r, 0] * x1 - d_pix[r, 1] * x0)
            for c in range(3):
                j_cam[o, r, c] = m[r, 0] * jl[0, c] + m[r, 1] * jl[1, c] + m[r, 2] * jl[2, c]
                j_cam[o, r, 3 + c] = d_pix[r, c]
                j_point[o, r, c] = d_pix[r, 0] * rot[i, 0, c] + d_pix[r, 1] * rot[i, 1, c] + d_pix[r, 2] * rot[i, 2, c]
        for c in range(6):
            cols[o, c] = pose_cols[i, c]
            if pose_cols[i, c] < 0:
                j_cam[o, 0, c] = 0.0
                j_cam[o, 1, c] = 0.0
    return j_cam, cols, j_point


@njit(cache=True)
def _skew_into(v: np.ndarray, out: np.ndarray) -> None:
    """Write the cross-product matrix of `v [3]` into `out [3, 3]`."""
    out[0, 0], out[0, 1], out[0, 2] = 0.0, -v[2], v[1]
    out[1, 0], out[1, 1], out[1, 2] = v[2], 0.0, -v[0]
    out[2, 0], out[2, 1], out[2, 2] = -v[1], v[0], 0.0


@njit(cache=True)
def pose_rotations(rotvec: np.ndarray, rot0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotations exp(r) R0 `[I, 3, 3]` of the increments `rotvec [I, 3]` applied on the left of `rot0 [I, 3, 3]`,
    and the SO(3) left Jacobians `[I, 3, 3]` of the increments (exp(r + e) ≈ exp(J_l(r) e) exp(r) for small e).

    exp is Rodrigues' formula with the Taylor expansion of `geometry.rotations.axis_angle_to_matrix` near zero.
    """
    num = rotvec.shape[0]
    rot = np.empty((num, 3, 3))
    left = np.empty((num, 3, 3))
    k = np.empty((3, 3))
    k2 = np.empty((3, 3))
    exp = np.empty((3, 3))
    for i in range(num):
        _skew_into(rotvec[i], k)
        for r in range(3):
            for c in range(3):
                k2[r, c] = k[r, 0] * k[0, c] + k[r, 1] * k[1, c] + k[r, 2] * k[2, c]
        theta2 = rotvec[i, 0] * rotvec[i, 0] + rotvec[i, 1] * rotvec[i, 1] + rotvec[i, 2] * rotvec[i, 2]
        theta = np.sqrt(theta2)
        if theta2 < 1e-8:
            a, b = 1 - theta2 / 6, 0.5 - theta2 / 24
        else:
            a, b = np.sin(theta) / theta, (1 - np.cos(theta)) / (theta * theta)
        if theta < 1e-8:
            la, lb = 0.5, 1.0 / 6.0
        else:
            la, lb = (1 - np.cos(theta)) / theta**2, (theta - np.sin(theta)) / theta**3
        for r in range(3):
            for c in range(3):
                eye = 1.0 if r == c else 0.0
                exp[r, c] = eye + a * k[r, c] + b * k2[r, c]
                left[i, r, c] = eye + la * k[r, c] + lb * k2[r, c]
        for r in range(3):
            for c in range(3):
                rot[i, r, c] = exp[r, 0] * rot0[i, 0, c] + exp[r, 1] * rot0[i, 1, c] + exp[r, 2] * rot0[i, 2, c]
    return rot, left
