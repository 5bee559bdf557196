"""Real spherical harmonics up to degree 3 for view-dependent Gaussian colours, in torch (differentiable).

Constants, basis order and signs follow the reference 3D Gaussian splatting implementation, so coefficients read
from or written to standard 3DGS `.ply` files (`f_dc_*`, `f_rest_*`) mean the same colours here.
"""

from __future__ import annotations

import torch

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    """Number of coefficients per channel for SH degree 0..3: (degree + 1)^2."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be in 0..3, got {degree}")
    return (degree + 1) ** 2


def eval_sh(sh: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Evaluate real SH `sh [..., K, C]` in directions `dirs [..., 3]` (normalised here) -> `[..., C]`.

    Only the first `(degree + 1)^2` coefficients are used, so a model holding degree-3 coefficients can be
    rendered at a lower degree (progressive SH training). The result is the raw SH value, without the +0.5 offset.
    """
    k = num_sh_bases(degree)
    if sh.shape[-2] < k:
        raise ValueError(f"degree {degree} needs {k} SH coefficients per channel, got {sh.shape[-2]}")
    result = SH_C0 * sh[..., 0, :]
    if degree == 0:
        return result
    d = dirs / torch.linalg.norm(dirs, dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    result = result - SH_C1 * y * sh[..., 1, :] + SH_C1 * z * sh[..., 2, :] - SH_C1 * x * sh[..., 3, :]
    if degree == 1:
        return result
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    result = (
        result
        + SH_C2[0] * xy * sh[..., 4, :]
        + SH_C2[1] * yz * sh[..., 5, :]
        + SH_C2[2] * (2.0 * zz - xx - yy) * sh[..., 6, :]
        + SH_C2[3] * xz * sh[..., 7, :]
        + SH_C2[4] * (xx - yy) * sh[..., 8, :]
    )
    if degree == 2:
        return result
    return (
        result
        + SH_C3[0] * y * (3.0 * xx - yy) * sh[..., 9, :]
        + SH_C3[1] * xy * z * sh[..., 10, :]
        + SH_C3[2] * y * (4.0 * zz - xx - yy) * sh[..., 11, :]
        + SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh[..., 12, :]
        + SH_C3[4] * x * (4.0 * zz - xx - yy) * sh[..., 13, :]
        + SH_C3[5] * z * (xx - yy) * sh[..., 14, :]
        + SH_C3[6] * x * (xx - 3.0 * yy) * sh[..., 15, :]
    )


def sh_to_color(sh: torch.Tensor, means: torch.Tensor, camera_center: torch.Tensor, degree: int) -> torch.Tensor:
    """Per-Gaussian colours `[N, C]` seen from `camera_center [3]`: max(SH(dir) + 0.5, 0) as in 3DGS.

    `sh [N, K, C]`, `means [N, 3]`; the direction is from the camera centre to each mean (world frame).
    """
    return torch.clamp_min(eval_sh(sh, means - camera_center, degree) + 0.5, 0.0)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient `[..., C]` that renders colour `rgb [..., C]` (inverse of the degree-0 evaluation + 0.5)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    """Colour `[..., C]` of a DC coefficient `sh0 [..., C]` (no clamping)."""
    return sh0 * SH_C0 + 0.5
