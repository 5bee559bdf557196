"""Numba EWA projection with a hand-written backward pass: the CPU counterpart of `projection.project_gaussians`.

Per-Gaussian work is a few hundred flops, which torch spends mostly on dispatching dozens of small tensor ops
(forward and backward together cost about as much as compositing); one fused loop is ~50x cheaper. Arithmetic is
float64 inside; outputs use the input dtype. Gradients reach means, quats and scales (not viewmat or K: callers
that optimise cameras use the torch projection).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange

from mapforge.splat.rasterize.projection import FOV_CLAMP, Projected

# Gaussians per parallel work item; scratch arrays are allocated once per item.
_CHUNK = 1024


@njit(cache=True, inline="always")
def _rotation(q0, q1, q2, q3, rot):
    norm = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3)
    w, x, y, z = q0 / norm, q1 / norm, q2 / norm, q3 / norm
    rot[0, 0] = 1.0 - 2.0 * (y * y + z * z)
    rot[0, 1] = 2.0 * (x * y - w * z)
    rot[0, 2] = 2.0 * (x * z + w * y)
    rot[1, 0] = 2.0 * (x * y + w * z)
    rot[1, 1] = 1.0 - 2.0 * (x * x + z * z)
    rot[1, 2] = 2.0 * (y * z - w * x)
    rot[2, 0] = 2.0 * (x * z - w * y)
    rot[2, 1] = 2.0 * (y * z + w * x)
    rot[2, 2] = 1.0 - 2.0 * (x * x + y * y)
    return norm, w, x, y, z


@njit(cache=True, inline="always")
def _jacobian_rows(view, z, u, v, fx, fy, lims, t):
    """Rows of T = J W at the clamped point ([2, 3]) and whether u, v were inside the clamp range."""
    u_in = lims[0] < u < lims[1]
    v_in = lims[2] < v < lims[3]
    uc = min(max(u, lims[0]), lims[1])
    vc = min(max(v, lims[2]), lims[3])
    for k in range(3):
        t[0, k] = fx / z * (view[0, k] - uc * view[2, k])
        t[1, k] = fy / z * (view[1, k] - vc * view[2, k])
    return u_in, v_in


@njit(parallel=True, cache=True)
def project_forward(means, quats, scales, view, intrinsics, width, height, near, far, eps2d, tile_size):
    """Returns means2d [N, 2], conics [N, 3], depths [N], radii [N] int32, tile_rects [N, 4] int32 (see
    `projection.Projected`); `view [3, 4]` cam_from_world, `intrinsics` (fx, fy, cx, cy) float64."""
    n = means.shape[0]
    dtype = means.dtype
    means2d = np.zeros((n, 2), dtype)
    conics = np.zeros((n, 3), dtype)
    depths = np.zeros(n, dtype)
    radii = np.zeros(n, np.int32)
    rects = np.zeros((n, 4), np.int32)
    fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
    lims = np.array([-FOV_CLAMP * cx / fx, FOV_CLAMP * (width - cx) / fx, -FOV_CLAMP * cy / fy, FOV_CLAMP * (height - cy) / fy])
    grid_w = (width + tile_size - 1) // tile_size
    grid_h = (height + tile_size - 1) // tile_size
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        cam = np.empty(3)
        a0 = np.empty(3)
        a1 = np.empty(3)
        rot = np.empty((3, 3))
        t = np.empty((2, 3))
        for i in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            for r in range(3):
                cam[r] = view[r, 0] * means[i, 0] + view[r, 1] * means[i, 1] + view[r, 2] * means[i, 2] + view[r, 3]
            z = cam[2]
            depths[i] = z
            if not (near < z < far):
                continue
            u, v = cam[0] / z, cam[1] / z
            mx, my = fx * u + cx, fy * v + cy
            means2d[i, 0], means2d[i, 1] = mx, my
            _jacobian_rows(view, z, u, v, fx, fy, lims, t)
            _rotation(quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3], rot)
            a0[:] = 0.0
            a1[:] = 0.0
            for j in range(3):
                for k in range(3):
                    m = rot[k, j] * scales[i, j]
                    a0[j] += t[0, k] * m
                    a1[j] += t[1, k] * m
            a = a0[0] * a0[0] + a0[1] * a0[1] + a0[2] * a0[2] + eps2d
            b = a0[0] * a1[0] + a0[1] * a1[1] + a0[2] * a1[2]
            c = a1[0] * a1[0] + a1[1] * a1[1] + a1[2] * a1[2] + eps2d
            det = a * c - b * b
            if not det > 0.0:
                continue
            mid = 0.5 * (a + c)
            extent = 3.0 * math.sqrt(mid + math.sqrt(max(mid * mid - det, 0.1)))
            if not (math.isfinite(extent) and math.isfinite(mx) and math.isfinite(my)):
                continue
            radius = float(math.ceil(extent))
            x0 = min(max(math.floor((mx - radius) / tile_size), 0.0), grid_w)
            x1 = min(max(math.floor((mx + radius) / tile_size) + 1.0, 0.0), grid_w)
            y0 = min(max(math.floor((my - radius) / tile_size), 0.0), grid_h)
            y1 = min(max(math.floor((my + radius) / tile_size) + 1.0, 0.0), grid_h)
            if not (x1 > x0 and y1 > y0):
                continue
            conics[i, 0], conics[i, 1], conics[i, 2] = c / det, -b / det, a / det
            radii[i] = int(radius)
            rects[i, 0], rects[i, 1], rects[i, 2], rects[i, 3] = int(x0), int(y0), int(x1), int(y1)
    return means2d, conics, depths, radii, rects


@njit(parallel=True, cache=True)
def project_backward(means, quats, scales, view, intrinsics, width, height, eps2d, radii, g_means2d, g_conics, g_depths):
    """Gradients w.r.t. means [N, 3], quats [N, 4], scales [N, 3] (float64) from those of the outputs."""
    n = means.shape[0]
    g_means = np.zeros((n, 3))
    g_quats = np.zeros((n, 4))
    g_scales = np.zeros((n, 3))
    fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
    lims = np.array([-FOV_CLAMP * cx / fx, FOV_CLAMP * (width - cx) / fx, -FOV_CLAMP * cy / fy, FOV_CLAMP * (height - cy) / fy])
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        cam = np.empty(3)
        m = np.empty((3, 3))
        a0 = np.empty(3)
        a1 = np.empty(3)
        g_t = np.empty((2, 3))
        g_rot = np.empty((3, 3))
        rot = np.empty((3, 3))
        t = np.empty((2, 3))
        for i in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if radii[i] == 0:
                continue  # culled: no influence on the image
            for r in range(3):
                cam[r] = view[r, 0] * means[i, 0] + view[r, 1] * means[i, 1] + view[r, 2] * means[i, 2] + view[r, 3]
            z = cam[2]
            u, v = cam[0] / z, cam[1] / z
            u_in, v_in = _jacobian_rows(view, z, u, v, fx, fy, lims, t)
            norm, qw, qx, qy, qz = _rotation(quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3], rot)
            a0[:] = 0.0
            a1[:] = 0.0
            for j in range(3):
                for k in range(3):
                    m[k, j] = rot[k, j] * scales[i, j]
                    a0[j] += t[0, k] * m[k, j]
                    a1[j] += t[1, k] * m[k, j]
            a = a0[0] * a0[0] + a0[1] * a0[1] + a0[2] * a0[2] + eps2d
            b = a0[0] * a1[0] + a0[1] * a1[1] + a0[2] * a1[2]
            c = a1[0] * a1[0] + a1[1] * a1[1] + a1[2] * a1[2] + eps2d
            inv = 1.0 / (a * c - b * b)
            g0, g1, g2 = g_conics[i, 0], g_conics[i, 1], g_conics[i, 2]
            shared = inv * inv * (g0 * c - g1 * b + g2 * a)
            g_a = -c * shared + g2 * inv
            g_b = 2.0 * b * shared - g1 * inv
            g_c = -a * shared + g0 * inv
            g_t[:] = 0.0
            for j in range(3):
                g_a0 = 2.0 * g_a * a0[j] + g_b * a1[j]
                g_a1 = g_b * a0[j] + 2.0 * g_c * a1[j]
                g_s = 0.0
                for k in range(3):
                    g_t[0, k] += g_a0 * m[k, j]
                    g_t[1, k] += g_a1 * m[k, j]
                    g_m = g_a0 * t[0, k] + g_a1 * t[1, k]
                    g_s += g_m * rot[k, j]
                    g_rot[k, j] = g_m * scales[i, j]
                g_scales[i, j] = g_s
            # T rows: t0 = fx / z (W0 - uc W2), t1 = fy / z (W1 - vc W2)
            g_z = np.float64(g_depths[i])
            g_uc = 0.0
            g_vc = 0.0
            for k in range(3):
                g_z -= (g_t[0, k] * t[0, k] + g_t[1, k] * t[1, k]) / z
                g_uc -= fx / z * g_t[0, k] * view[2, k]
                g_vc -= fy / z * g_t[1, k] * view[2, k]
            g_u = fx * g_means2d[i, 0] + (g_uc if u_in else 0.0)
            g_v = fy * g_means2d[i, 1] + (g_vc if v_in else 0.0)
            g_cam0 = g_u / z
            g_cam1 = g_v / z
            g_z -= (g_u * u + g_v * v) / z
            for k in range(3):
                g_means[i, k] = view[0, k] * g_cam0 + view[1, k] * g_cam1 + view[2, k] * g_z
            # rotation matrix of the normalised quaternion -> quaternion, then through the normalisation
            gw = 2.0 * (-qz * g_rot[0, 1] + qy * g_rot[0, 2] + qz * g_rot[1, 0] - qx * g_rot[1, 2] - qy * g_rot[2, 0] + qx * g_rot[2, 1])
            gx = 2.0 * (qy * g_rot[0, 1] + qz * g_rot[0, 2] + qy * g_rot[1, 0] - 2.0 * qx * g_rot[1, 1] - qw * g_rot[1, 2]
                        + qz * g_rot[2, 0] + qw * g_rot[2, 1] - 2.0 * qx * g_rot[2, 2])
            gy = 2.0 * (-2.0 * qy * g_rot[0, 0] + qx * g_rot[0, 1] + qw * g_rot[0, 2] + qx * g_rot[1, 0] + qz * g_rot[1, 2]
                        - qw * g_rot[2, 0] + qz * g_rot[2, 1] - 2.0 * qy * g_rot[2, 2])
            gz = 2.0 * (-2.0 * qz * g_rot[0, 0] - qw * g_rot[0, 1] + qx * g_rot[0, 2] + qw * g_rot[1, 0] - 2.0 * qz * g_rot[1, 1]
                        + qy * g_rot[1, 2] + qx * g_rot[2, 0] + qy * g_rot[2, 1])
            dot = qw * gw + qx * gx + qy * gy + qz * gz
            g_quats[i, 0] = (gw - qw * dot) / norm
            g_quats[i, 1] = (gx - qx * dot) / norm
            g_quats[i, 2] = (gy - qy * dot) / norm
            g_quats[i, 3] = (gz - qz * dot) / norm
    return g_means, g_quats, g_scales


def _camera_arrays(viewmat: torch.Tensor, K: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    view = viewmat.detach().cpu().to(torch.float64).numpy()[:3].copy()
    k = K.detach().cpu().to(torch.float64).numpy()
    return view, np.array([k[0, 0], k[1, 1], k[0, 2], k[1, 2]])


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, view, intrinsics, width, height, near, far, eps2d, tile_size):
        arrays = [t.detach().contiguous().numpy() for t in (means, quats, scales)]
        means2d, conics, depths, radii, rects = project_forward(*arrays, view, intrinsics, width, height, near, far, eps2d, tile_size)
        ctx.arrays, ctx.camera, ctx.radii = arrays, (view, intrinsics, width, height, eps2d), radii
        radii_t, rects_t = torch.from_numpy(radii), torch.from_numpy(rects)
        ctx.mark_non_differentiable(radii_t, rects_t)
        return torch.from_numpy(means2d), torch.from_numpy(conics), torch.from_numpy(depths), radii_t, rects_t

    @staticmethod
    def backward(ctx, g_means2d, g_conics, g_depths, _g_radii, _g_rects):
        view, intrinsics, width, height, eps2d = ctx.camera
        dtype = ctx.arrays[0].dtype
        grads = [g.contiguous().numpy() for g in (g_means2d, g_conics, g_depths)]
        g_means, g_quats, g_scales = project_backward(*ctx.arrays, view, intrinsics, width, height, eps2d, ctx.radii, *grads)
        out = [torch.from_numpy(g.astype(dtype, copy=False)) for g in (g_means, g_quats, g_scales)]
        return (*out, None, None, None, None, None, None, None, None)


def project_gaussians_cpu(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
    eps2d: float,
    tile_size: int,
) -> Projected:
    """Same contract as `projection.project_gaussians` for CPU tensors; no gradients to `viewmat` or `K`."""
    view, intrinsics = _camera_arrays(viewmat, K)
    means2d, conics, depths, radii, rects = _Project.apply(
        means, quats, scales, view, intrinsics, width, height, float(near), float(far), float(eps2d), tile_size
    )
    return Projected(means2d, conics, depths, radii, rects)
