"""Project 3D Gaussians to image-space 2D Gaussians (EWA splatting) and find the tiles each one touches.

Differentiable torch code shared by every backend, so all backends composite exactly the same 2D Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mapforge.geometry.rotations import quat_to_matrix

# x/z and y/z are clamped to this multiple of the half field of view before the Jacobian of the perspective
# projection is taken, as in the reference 3DGS rasterizer: far off-screen Gaussians get a bounded footprint.
FOV_CLAMP = 1.3


@dataclass
class Projected:
    """2D Gaussians in pixel coordinates (COLMAP convention: pixel (i, j) is centred at (j + 0.5, i + 0.5)).

    Attributes:
        means2d: `[N, 2]` projected centres (differentiable).
        conics: `[N, 3]` inverse 2D covariance (a, b, c) = [[a, b], [b, c]] (differentiable); 0 when culled.
        depths: `[N]` camera z of the means (differentiable).
        radii: `[N]` int32 3-sigma screen radius in pixels; 0 marks a culled Gaussian.
        tile_rects: `[N, 4]` int32 (x0, y0, x1, y1) half-open range of tiles touched; empty when culled.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    tile_rects: torch.Tensor


def project_gaussians(
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
    """EWA projection of Gaussians `means [N, 3]`, `quats [N, 4]` (w, x, y, z), `scales [N, 3]`.

    `viewmat [4, 4]` is cam_from_world (OpenCV axes), `K [3, 3]` the pinhole calibration. The 2D covariance is
    J W Sigma W^T J^T + eps2d * I (eps2d is the 3DGS low-pass dilation). Gaussians with depth outside
    (near, far) or whose 3-sigma box misses the image are culled (radius 0).
    """
    # Written with per-Gaussian columns rather than batched 3x3 matmuls, which are slow for tiny matrices on CPU.
    rot_cw, trans_cw = viewmat[:3, :3], viewmat[:3, 3]
    points = means @ rot_cw.T + trans_cw
    z = points[:, 2]
    valid = (z > near) & (z < far)
    # Culled Gaussians still go through the arithmetic; a safe depth keeps NaNs out of the backward pass.
    z = torch.where(valid, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    u = points[:, 0] / z
    v = points[:, 1] / z
    means2d = torch.stack([fx * u + cx, fy * v + cy], -1)

    # Rows of T = J W ([N, 3] each): J is the Jacobian of the projection at the clamped point, W = rot_cw.
    u_clamped = torch.minimum(torch.maximum(u, -FOV_CLAMP * cx / fx), FOV_CLAMP * (width - cx) / fx)
    v_clamped = torch.minimum(torch.maximum(v, -FOV_CLAMP * cy / fy), FOV_CLAMP * (height - cy) / fy)
    t0 = (fx / z)[:, None] * (rot_cw[0] - u_clamped[:, None] * rot_cw[2])
    t1 = (fy / z)[:, None] * (rot_cw[1] - v_clamped[:, None] * rot_cw[2])
    # Sigma = M M^T with M = R diag(s), so J W Sigma W^T J^T = (T M)(T M)^T; rows of T M are [N, 3].
    m = quat_to_matrix(quats) * scales[:, None, :]
    tm0 = (t0[:, :, None] * m).sum(1)
    tm1 = (t1[:, :, None] * m).sum(1)
    a = (tm0 * tm0).sum(1) + eps2d
    b = (tm0 * tm1).sum(1)
    c = (tm1 * tm1).sum(1) + eps2d
    det = a * c - b * b
    valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1) * valid[:, None]

    with torch.no_grad():
        mid = 0.5 * (a + c)
        lambda_max = mid + torch.sqrt(torch.clamp_min(mid * mid - det, 0.1))
        radii = torch.ceil(3.0 * torch.sqrt(lambda_max))
        grid_w = (width + tile_size - 1) // tile_size
        grid_h = (height + tile_size - 1) // tile_size
        mx, my = means2d[:, 0], means2d[:, 1]
        x0 = torch.floor((mx - radii) / tile_size).clamp(0, grid_w)
        x1 = (torch.floor((mx + radii) / tile_size) + 1).clamp(0, grid_w)
        y0 = torch.floor((my - radii) / tile_size).clamp(0, grid_h)
        y1 = (torch.floor((my + radii) / tile_size) + 1).clamp(0, grid_h)
        valid = valid & (x1 > x0) & (y1 > y0) & torch.isfinite(mx) & torch.isfinite(my) & torch.isfinite(radii)
        rects = torch.stack([x0, y0, x1, y1], -1)
        tile_rects = torch.where(valid[:, None], rects, torch.zeros_like(rects)).to(torch.int32)
        radii = torch.where(valid, radii, torch.zeros_like(radii)).to(torch.int32)
    return Projected(means2d, conics, points[:, 2], radii, tile_rects)
