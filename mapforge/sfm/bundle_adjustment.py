"""Bundle adjustment: joint refinement of poses, points and intrinsics by robust non-linear least squares.

The residual of an observation is its projection minus its keypoint, in pixels, through the camera's COLMAP model
(`mapforge.geometry.cameras`). Everything is float64. The solver is Levenberg-Marquardt on the normal equations
with the points eliminated by the Schur complement (the structure Ceres exploits for COLMAP), with an analytic
Jacobian (closed forms for the pinhole, radial and OpenCV models, central differences of the distortion for the
others) and the robust loss applied by iteratively reweighting each observation's squared pixel error. A generic
sparse solver (scipy's least_squares with LSMR) was 30-50x slower. The per-observation work (projection, pose and
point Jacobians, normal equations, Schur complement, back substitution) runs in the compiled kernels of
`mapforge.sfm.ba_kernels`; the distortion models stay vectorised numpy. Against the former all-numpy solver this
was 5x faster on fountain-P11's mapping (50 s to 10 s, the same poses to 1e-12).

Rotations are parameterised by an axis-angle increment applied on the left of the current rotation
(`R = exp(delta) R0`, delta starting at 0), so there is no singularity and no over-parameterisation. The gauge
(the 7 degrees of freedom of a similarity that leave the reprojection error unchanged) is fixed by holding the
first image's pose and one translation coordinate of the second image when no constant image anchors the problem,
as COLMAP does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from mapforge.errors import InputError
from mapforge.geometry.cameras import CAMERA_MODELS, CameraModel, distort
from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Reconstruction
from mapforge.sfm.ba_kernels import (
    normal_equations,
    point_steps,
    pose_point_jacobians,
    pose_rotations,
    project,
    reduced_camera_system,
)

LOSSES = ("linear", "huber", "soft_l1", "cauchy")


@dataclass
class BundleAdjustmentConfig:
    """Options of `bundle_adjust`.

    `loss` / `loss_scale`: robust loss rho on each observation's squared pixel error e^2 (cost
    0.5 * s^2 * rho(e^2 / s^2), scipy's loss names); "soft_l1" with a 1 px scale is what COLMAP's incremental
    mapper uses in local bundle adjustment. `max_iterations`: cap on Levenberg-Marquardt iterations (COLMAP: 25
    local, 50 global). `function_tolerance`: relative cost decrease below which to stop (COLMAP/Ceres: 1e-6). `refine_focal`, `refine_principal_point`, `refine_extra_params`: which intrinsics are
    free (COLMAP's defaults: focal and distortion yes, principal point no).
    """

    loss: str = "soft_l1"
    loss_scale: float = 1.0
    max_iterations: int = 50
    function_tolerance: float = 1e-6
    refine_focal: bool = True
    refine_principal_point: bool = False
    refine_extra_params: bool = True


@dataclass
class BundleAdjustmentSummary:
    """What `bundle_adjust` did: costs are half the sum of the robust losses, RMSEs in pixels."""

    num_images: int
    num_points: int
    num_observations: int
    num_parameters: int
    initial_cost: float
    final_cost: float
    initial_rmse: float
    final_rmse: float
    iterations: int
    seconds: float
    message: str


def _distortion_jacobians(
    model: CameraModel, params: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distorted normalised coordinates `[n, 2]`, d(distorted)/d(u, v) `[n, 2, 2]`, d(distorted)/d(extra) `[n, 2, E]`
    of the normalised coordinates `u, v [n]` through one camera's `params [P]`."""
    n = u.shape[0]
    extra = list(model.extra_idxs)
    if model.pinhole:
        jac = np.zeros((n, 2, 2))
        jac[:, 0, 0] = jac[:, 1, 1] = 1.0
        return np.stack([u, v], -1), jac, np.zeros((n, 2, 0))
    if model.name in ("SIMPLE_RADIAL", "RADIAL", "OPENCV"):
        k1 = params[extra[0]]
        k2 = params[extra[1]] if model.name != "SIMPLE_RADIAL" else 0.0
        r2 = u * u + v * v
        s = 1 + k1 * r2 + k2 * r2 * r2
        ds = k1 + 2 * k2 * r2  # d s / d r2
        ud, vd = u * s, v * s
        jac = np.empty((n, 2, 2))
        jac[:, 0, 0] = s + 2 * u * u * ds
        jac[:, 0, 1] = jac[:, 1, 0] = 2 * u * v * ds
        jac[:, 1, 1] = s + 2 * v * v * ds
        cols = [np.stack([u * r2, v * r2], -1)]
        if model.name != "SIMPLE_RADIAL":
            cols.append(np.stack([u * r2 * r2, v * r2 * r2], -1))
        if model.name == "OPENCV":
            p1, p2 = params[extra[2]], params[extra[3]]
            ud = ud + 2 * p1 * u * v + p2 * (r2 + 2 * u * u)
            vd = vd + 2 * p2 * u * v + p1 * (r2 + 2 * v * v)
            jac[:, 0, 0] += 2 * p1 * v + 6 * p2 * u
            jac[:, 0, 1] += 2 * p1 * u + 2 * p2 * v
            jac[:, 1, 0] += 2 * p2 * v + 2 * p1 * u
            jac[:, 1, 1] += 2 * p2 * u + 6 * p1 * v
            cols.append(np.stack([2 * u * v, r2 + 2 * v * v], -1))
            cols.append(np.stack([r2 + 2 * u * u, 2 * u * v], -1))
        return np.stack([ud, vd], -1), jac, np.stack(cols, -1)
    # Other models: central differences of `distort` (vectorised over all observations).
    uv = np.stack([u, v], -1)
    base = distort(model, params, uv)
    jac = np.empty((n, 2, 2))
    for axis in range(2):
        h = 1e-6 * np.maximum(np.abs(uv[:, axis]), 1.0)
        step = np.zeros_like(uv)
        step[:, axis] = h
        jac[:, :, axis] = (distort(model, params, uv + step) - distort(model, params, uv - step)) / (2 * h[:, None])
    d_extra = np.empty((n, 2, len(extra)))
    for k, idx in enumerate(extra):
        h = 1e-7 * max(abs(params[idx]), 1e-2)
        plus, minus = params.copy(), params.copy()
        plus[idx] += h
        minus[idx] -= h
        d_extra[:, :, k] = (distort(model, plus, uv) - distort(model, minus, uv)) / (2 * h)
    return base, jac, d_extra


class _Problem:
    """Index arrays and parameter layout of one bundle adjustment problem.

    The full parameter vector is [pose increments (6 per image), intrinsics (per camera), points (3 per point)];
    `free` masks the refined entries. Points are always free; the "camera side" is the free part before them.
    """

    def __init__(
        self,
        rec: Reconstruction,
        image_ids: list[int],
        point_ids: list[int],
        constant_image_ids: set[int],
        refined_cameras: dict[int, list[int]],
        gauge: tuple[int | None, int | None],
        tracks: list[np.ndarray] | None = None,
    ) -> None:
        """`tracks`: the points' tracks `[M_p, 2]` when the caller has gathered them already."""
        self.rec = rec
        self.image_ids = image_ids
        self.point_ids = point_ids
        self.points = [rec.points3D[p] for p in point_ids]
        self.camera_ids = sorted({rec.images[i].camera_id for i in image_ids})
        image_index = {image_id: k for k, image_id in enumerate(image_ids)}
        camera_index = {camera_id: k for k, camera_id in enumerate(self.camera_ids)}

        if tracks is None:
            tracks = [point.track for point in self.points]
        if tracks:
            track = np.concatenate(tracks)
            owner = np.repeat(np.arange(len(point_ids)), [len(t) for t in tracks])
        else:
            track, owner = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
        lookup = np.full(max(image_ids, default=0) + 1, -1, dtype=np.int64)
        lookup[image_ids] = np.arange(len(image_ids))
        inside = track[:, 0] < len(lookup)
        inside[inside] = lookup[track[inside, 0]] >= 0
        track, owner = track[inside], owner[inside]
        self.obs_img = lookup[track[:, 0]]
        self.obs_pt = owner
        self.obs_xy = np.zeros((len(track), 2))
        for k, image_id in enumerate(image_ids):
            sel = self.obs_img == k
            self.obs_xy[sel] = rec.images[image_id].keypoints[track[sel, 1]]
        image_camera = np.array([camera_index[rec.images[i].camera_id] for i in image_ids], dtype=np.int64)
        self.obs_cam = image_camera[self.obs_img] if len(image_ids) else np.zeros(0, np.int64)
        cam_obs = [np.flatnonzero(self.obs_cam == c) for c in range(len(self.camera_ids))]
        self.cam_counts = [len(sel) for sel in cam_obs]
        # a camera observed by every observation (the usual case) is selected by a slice: views, not copies
        self.cam_obs = [slice(None) if len(sel) == len(track) else sel for sel in cam_obs]

        self.rot0 = np.stack([rec.images[i].cam_from_world.rotation for i in image_ids])
        self.trans0 = np.stack([rec.images[i].cam_from_world.translation for i in image_ids])
        self.points0 = np.array([point.xyz for point in self.points]).reshape(-1, 3)
        self.params0 = [rec.cameras[c].params.copy() for c in self.camera_ids]
        self.models = [CAMERA_MODELS[rec.cameras[c].model] for c in self.camera_ids]

        num_images = len(image_ids)
        self.camera_offsets = []
        offset = 6 * num_images
        for params in self.params0:
            self.camera_offsets.append(offset)
            offset += params.size
        self.point_offset = offset
        num_full = offset + 3 * len(point_ids)

        free = np.ones(num_full, dtype=bool)
        for k, image_id in enumerate(image_ids):
            if image_id in constant_image_ids:
                free[6 * k : 6 * k + 6] = False
        for k, camera_id in enumerate(self.camera_ids):
            size = self.params0[k].size
            mask = np.zeros(size, dtype=bool)
            mask[refined_cameras.get(camera_id, [])] = True
            free[self.camera_offsets[k] : self.camera_offsets[k] + size] = mask
        fixed_pose, fixed_scale = gauge
        if fixed_pose is not None:
            k = image_index[fixed_pose]
            free[6 * k : 6 * k + 6] = False
        if fixed_scale is not None:
            k = image_index[fixed_scale]
            # Holding the largest translation coordinate of a second camera fixes the scale.
            free[6 * k + 3 + int(np.argmax(np.abs(self.trans0[k])))] = False
        self.free = free
        self.col_of = np.where(free, np.cumsum(free) - 1, -1)
        self.num_camera_side = int(free[: self.point_offset].sum())
        self.block_width = 6 + max(
            int(free[o : o + p.size].sum()) for o, p in zip(self.camera_offsets, self.params0)
        )
        self.full0 = np.concatenate([np.zeros(6 * num_images)] + self.params0 + [self.points0.reshape(-1)])

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Rotations `[I, 3, 3]` with the left Jacobians of their increments `[I, 3, 3]`, translations `[I, 3]`,
        points `[P, 3]` and camera parameters (one `[P_c]` per camera) of the free parameters `x`."""
        full = self.full0.copy()
        full[self.free] = x
        n = len(self.image_ids)
        poses = full[: 6 * n].reshape(n, 6)
        rot, left_jacobians = pose_rotations(poses[:, :3], self.rot0)
        trans = self.trans0 + poses[:, 3:]
        points = full[self.point_offset :].reshape(-1, 3)
        params = [full[o : o + p.size] for o, p in zip(self.camera_offsets, self.params0)]
        return rot, left_jacobians, trans, points, params

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """`[n_obs, 2]` projection minus keypoint, pixels."""
        return self._evaluate(x, False)[0]

    def linearize(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Residuals `[n, 2]`; camera-side Jacobian blocks `[n, 2, K]` with their free-column indices `[n, K]`
        (-1 for held parameters); point Jacobian blocks `[n, 2, 3]`."""
        return self._evaluate(x, True)

    def _evaluate(self, x: np.ndarray, with_jacobian: bool) -> tuple:
        rot, left_jacobians, trans, points, params = self.unpack(x)
        n_obs = len(self.obs_img)
        rotated, uv, inv_z = project(rot, trans, points, self.obs_img, self.obs_pt)
        residuals = np.empty((n_obs, 2))
        if with_jacobian:
            j_dist_all = np.empty((n_obs, 2, 2))
            focal_all = np.empty((n_obs, 2))
        intrinsics = []  # (observations [n], free columns [c], values [n, 2, c]) of cameras with free intrinsics
        for c, model in enumerate(self.models):
            sel, count = self.cam_obs[c], self.cam_counts[c]
            if count == 0:
                continue
            p = params[c]
            fx, fy = p[model.focal_idxs[0]], p[model.focal_idxs[-1]]
            cx, cy = p[model.principal_point_idxs[0]], p[model.principal_point_idxs[1]]
            distorted, j_dist, j_extra = _distortion_jacobians(model, p, uv[sel, 0], uv[sel, 1])
            residuals[sel, 0] = fx * distorted[:, 0] + cx - self.obs_xy[sel, 0]
            residuals[sel, 1] = fy * distorted[:, 1] + cy - self.obs_xy[sel, 1]
            if not with_jacobian:
                continue
            j_dist_all[sel] = j_dist
            focal_all[sel, 0], focal_all[sel, 1] = fx, fy
            free = np.flatnonzero(self.col_of[self.camera_offsets[c] + np.arange(model.num_params)] >= 0)
            if free.size == 0:
                continue
            j_cam = np.zeros((count, 2, model.num_params))
            if len(model.focal_idxs) == 1:
                j_cam[:, :, model.focal_idxs[0]] = distorted
            else:
                j_cam[:, 0, model.focal_idxs[0]] = distorted[:, 0]
                j_cam[:, 1, model.focal_idxs[1]] = distorted[:, 1]
            j_cam[:, 0, model.principal_point_idxs[0]] = 1.0
            j_cam[:, 1, model.principal_point_idxs[1]] = 1.0
            if model.extra_idxs:
                j_cam[:, :, list(model.extra_idxs)] = np.array([fx, fy])[None, :, None] * j_extra
            intrinsics.append((sel, self.col_of[self.camera_offsets[c] + free], j_cam[:, :, free]))
        if not with_jacobian:
            return (residuals,)

        pose_cols = self.col_of[: 6 * len(self.image_ids)].reshape(-1, 6)
        j_cam_side, cam_cols, j_point = pose_point_jacobians(
            rotated, uv, inv_z, j_dist_all, focal_all, rot, left_jacobians, self.obs_img, pose_cols, self.block_width,
        )  # fmt: skip
        # Only the free intrinsics take columns: with fixed intrinsics every block is 2 x 6.
        for obs, free_cols, values in intrinsics:
            j_cam_side[obs, :, 6 : 6 + free_cols.size] = values
            cam_cols[obs, 6 : 6 + free_cols.size] = free_cols
        return residuals, j_cam_side, cam_cols, j_point

    def write_back(self, x: np.ndarray, point_errors: np.ndarray) -> None:
        """Store the refined poses, points and intrinsics in the reconstruction, and each point's mean reprojection
        error `point_errors [P]` (pixels)."""
        rot, _, trans, points, params = self.unpack(x)
        for k, image_id in enumerate(self.image_ids):
            self.rec.images[image_id].cam_from_world = Rigid3(rot[k], trans[k])
        # Rows of one fresh array: each point's xyz is its own view, not shared with the solver's state.
        for point, xyz, error in zip(self.points, points.copy(), point_errors.tolist()):
            point.xyz = xyz
            point.error = error
        for k, camera_id in enumerate(self.camera_ids):
            self.rec.cameras[camera_id].params = np.asarray(params[k], dtype=np.float64).copy()


def _loss(sq: np.ndarray, config: BundleAdjustmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Robust cost terms 0.5 s^2 rho(e^2 / s^2) and weights rho'(e^2 / s^2) for squared errors `sq` `[n]`."""
    s2 = config.loss_scale**2
    z = sq / s2
    if config.loss == "linear":
        rho, weight = z, np.ones_like(z)
    elif config.loss == "huber":
        root = np.sqrt(np.maximum(z, 1.0))
        rho, weight = np.where(z <= 1, z, 2 * root - 1), np.where(z <= 1, 1.0, 1.0 / root)
    elif config.loss == "soft_l1":
        root = np.sqrt(1 + z)
        rho, weight = 2 * (root - 1), 1.0 / root
    else:
        rho, weight = np.log1p(z), 1.0 / (1 + z)
    return 0.5 * s2 * rho, weight


def same_group_pairs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (a, b), a and b included, of entries with equal values in the sorted `groups [n]`."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    lengths = np.diff(np.r_[starts, n])
    length_of = np.repeat(lengths, lengths)
    start_of = np.repeat(starts, lengths)
    first = np.repeat(np.arange(n), length_of)
    # Position of each pair inside its run of `first`: 0..length-1, added to the group's start.
    run_starts = np.repeat(np.cumsum(length_of) - length_of, length_of)
    second = start_of[first] + (np.arange(len(first)) - run_starts)
    return first, second


def _levenberg_marquardt(
    problem: _Problem, x: np.ndarray, config: BundleAdjustmentConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, str]:
    """Minimise the robust reprojection cost; returns (x, initial and final squared pixel errors `[n_obs]`,
    iterations, stop reason).

    Normal equations [[U, W], [W^T, V]] with V block-diagonal (one 3x3 block per point); the camera-side step
    solves the dense Schur complement S = U - W V^-1 W^T (`mapforge.sfm.ba_kernels`), then the points follow by
    back substitution. Each candidate is linearised right away: almost every step is accepted, and an accepted
    candidate's Jacobian is the next iteration's.
    """
    num_c = problem.num_camera_side
    num_points = len(problem.point_ids)
    obs_pt = problem.obs_pt  # sorted: observations are grouped by point
    point_starts = np.searchsorted(obs_pt, np.arange(num_points + 1))

    res, j_cs, cs_cols, j_pt = problem.linearize(x)
    sq = sq0 = (res**2).sum(-1)
    terms, weight = _loss(sq, config)
    cost = terms.sum()
    lam, nu = 1e-4, 2.0
    reason = "maximum iterations reached"
    iteration = 0
    for iteration in range(1, config.max_iterations + 1):
        normal = normal_equations(res, j_cs, cs_cols, j_pt, weight, obs_pt, num_c, num_points)
        u_block, g_c, v_block, g_p, w_obs = normal
        gradient_norm = max(np.abs(g_c).max(initial=0.0), np.abs(g_p).max(initial=0.0))
        if gradient_norm < 1e-10:
            reason = "gradient below tolerance"
            break
        while True:
            schur, rhs, v_inv = reduced_camera_system(u_block, g_c, v_block, g_p, w_obs, cs_cols, point_starts, lam)
            if num_c:
                try:
                    dc = scipy.linalg.cho_solve(scipy.linalg.cho_factor(schur), rhs)
                except np.linalg.LinAlgError:
                    dc = np.linalg.lstsq(schur, rhs, rcond=None)[0]
            else:
                dc = np.zeros(0)
            dp = point_steps(dc, g_p, w_obs, cs_cols, obs_pt, v_inv)
            step = np.concatenate([dc, dp.reshape(-1)])
            candidate = x + step
            linearized = problem.linearize(candidate)
            sq_new = (linearized[0] ** 2).sum(-1)
            terms_new, weight_new = _loss(sq_new, config)
            cost_new = terms_new.sum()
            if np.isfinite(cost_new) and cost_new < cost:
                break
            lam *= nu
            nu *= 2
            if lam > 1e16:
                return x, sq0, sq, iteration, "no further decrease"
        # not np.linalg.norm: its BLAS dot starts threads that wait for busy cores, milliseconds per call
        small_step = np.sqrt(np.sum(step**2)) <= 1e-10 * (np.sqrt(np.sum(x**2)) + 1e-10)
        decrease = (cost - cost_new) / max(cost, 1e-300)
        x = candidate
        lam, nu = max(lam / 3.0, 1e-12), 2.0
        res, j_cs, cs_cols, j_pt = linearized
        sq, weight, cost = sq_new, weight_new, cost_new
        if decrease < config.function_tolerance:
            reason = "function tolerance reached"
            break
        if small_step:
            reason = "step below tolerance"
            break
    return x, sq0, sq, iteration, reason


def refined_param_indices(model: str, config: BundleAdjustmentConfig) -> list[int]:
    """Indices of the camera parameters that `config` lets bundle adjustment refine."""
    m = CAMERA_MODELS[model]
    idxs: list[int] = []
    if config.refine_focal:
        idxs += list(m.focal_idxs)
    if config.refine_principal_point:
        idxs += list(m.principal_point_idxs)
    if config.refine_extra_params:
        idxs += list(m.extra_idxs)
    return sorted(idxs)


def bundle_adjust(
    rec: Reconstruction,
    config: BundleAdjustmentConfig | None = None,
    image_ids: list[int] | None = None,
    point_ids: list[int] | None = None,
    constant_image_ids: set[int] | None = None,
    constant_camera_ids: set[int] | None = None,
    gauge_image_ids: tuple[int, ...] | None = None,
) -> BundleAdjustmentSummary:
    """Refine `rec` in place and report what happened.

    Args:
        rec: the reconstruction; every image in it counts as registered.
        config: loss, iterations and which intrinsics to refine.
        image_ids: images whose poses may change (default: all).
        point_ids: points whose positions may change (default: every point seen by a variable image). All their
            observations in any image of `rec` enter the problem; images outside `image_ids` are held constant.
        constant_image_ids: images of `image_ids` whose poses are nevertheless held.
        constant_camera_ids: cameras whose intrinsics are held whatever `config` says.
        gauge_image_ids: `(first, second)`: the first image's pose and one translation coordinate of the second
            are held, which removes the similarity ambiguity. Default: the two lowest variable image ids when no
            held image observes the points, only the scale (through the lowest variable image) when one does,
            nothing when two or more do.

    Returns:
        `BundleAdjustmentSummary`. Points' `error` fields are set to their mean reprojection error in the problem.
    """
    config = config or BundleAdjustmentConfig()
    if config.loss not in LOSSES:
        raise InputError(f"unknown bundle adjustment loss {config.loss!r} (choose from {', '.join(LOSSES)})")
    start = time.perf_counter()
    variable = sorted(rec.images) if image_ids is None else sorted(set(image_ids))
    if point_ids is None:
        seen = [rec.images[image_id].point3D_ids for image_id in variable]
        seen_ids = np.unique(np.concatenate(seen)) if seen else np.zeros(0, np.int64)
        point_ids = seen_ids[seen_ids >= 0].tolist()
    else:
        point_ids = sorted(set(point_ids))
    tracks = [rec.points3D[point_id].track for point_id in point_ids]
    observing: set[int] = set()
    if tracks:
        observing = set(np.unique(np.concatenate(tracks)[:, 0]).tolist())
    constant = (observing - set(variable)) | (set(constant_image_ids or ()) & set(variable))
    problem_images = sorted(set(variable) | observing)
    if gauge_image_ids is None:
        movable = [i for i in problem_images if i not in constant]
        if len(constant) >= 2 or not movable:
            gauge: tuple[int | None, int | None] = (None, None)
        elif len(constant) == 1:
            # One held camera already fixes rotation and translation; the scale remains free.
            gauge = (None, movable[0])
        else:
            gauge = (movable[0], movable[1] if len(movable) > 1 else None)
    else:
        gauge = (gauge_image_ids[0], gauge_image_ids[1] if len(gauge_image_ids) > 1 else None)
    constant_cams = set(constant_camera_ids or ())
    refined = {
        c: refined_param_indices(rec.cameras[c].model, config)
        for c in {rec.images[i].camera_id for i in problem_images}
        if c not in constant_cams
    }
    problem = _Problem(rec, problem_images, point_ids, constant, refined, gauge, tracks)
    x0 = problem.full0[problem.free]
    num_obs = len(problem.obs_img)
    if num_obs == 0 or x0.size == 0:
        return BundleAdjustmentSummary(
            len(problem_images), len(point_ids), num_obs, int(x0.size), 0.0, 0.0, 0.0, 0.0, 0, 0.0, "nothing to refine"
        )
    x, sq0, sq1, iterations, message = _levenberg_marquardt(problem, x0, config)
    errors = np.sqrt(sq1)
    counts = np.maximum(np.bincount(problem.obs_pt, minlength=len(point_ids)), 1)
    problem.write_back(x, np.bincount(problem.obs_pt, errors, len(point_ids)) / counts)
    return BundleAdjustmentSummary(
        num_images=len(problem_images),
        num_points=len(point_ids),
        num_observations=num_obs,
        num_parameters=int(x0.size),
        initial_cost=float(_loss(sq0, config)[0].sum()),
        final_cost=float(_loss(sq1, config)[0].sum()),
        initial_rmse=float(np.sqrt(sq0.mean())),
        final_rmse=float(np.sqrt(sq1.mean())),
        iterations=iterations,
        seconds=time.perf_counter() - start,
        message=message,
    )
