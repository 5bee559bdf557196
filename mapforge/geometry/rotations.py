"""Rotation conversions between matrices, unit quaternions (w, x, y, z as in COLMAP) and axis-angle vectors.

Every function takes numpy arrays (float64 geometry) or torch tensors (differentiable, any device) with arbitrary
leading batch dimensions, and returns the same kind.
"""

from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def _stack(items: list, dim: int) -> Array:
    if isinstance(items[0], torch.Tensor):
        return torch.stack(items, dim=dim)
    return np.stack(items, axis=dim)


def _norm(x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.linalg.norm(x, dim=-1, keepdim=True)
    return np.linalg.norm(x, axis=-1, keepdims=True)


def quat_to_matrix(quat: Array) -> Array:
    """Unit quaternions `[..., 4]` (w, x, y, z) to rotation matrices `[..., 3, 3]`.

    The input is normalised first, so unnormalised parameters (as in Gaussian splatting) are fine.
    """
    q = quat / _norm(quat)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        _stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        _stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        _stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return _stack(rows, -2)


def matrix_to_quat(matrix: Array) -> Array:
    """Rotation matrices `[..., 3, 3]` to unit quaternions `[..., 4]` (w, x, y, z) with w >= 0.

    Uses the numerically stable branch on the largest of the four squared components.
    """
    is_torch = isinstance(matrix, torch.Tensor)
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = _stack(
        [
            _stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            _stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1),
            _stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], 1 - m00 + m11 - m22, m[..., 2, 1] + m[..., 1, 2]], -1),
            _stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], 1 - m00 - m11 + m22], -1),
        ],
        -2,
    )  # [..., 4, 4]: row k is 4 * q_k * q
    diag = _stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    if is_torch:
        best = torch.argmax(diag, dim=-1, keepdim=True)
        row = torch.gather(candidates, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
        q = row / torch.linalg.norm(row, dim=-1, keepdim=True)
        return torch.where(q[..., :1] < 0, -q, q)
    best = np.argmax(diag, axis=-1)[..., None, None]
    row = np.take_along_axis(candidates, np.broadcast_to(best, (*best.shape[:-2], 1, 4)), axis=-2)[..., 0, :]
    q = row / np.linalg.norm(row, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(rotvec: Array) -> Array:
    """Axis-angle vectors `[..., 3]` (direction = axis, norm = angle in radians) to matrices `[..., 3, 3]`.

    Rodrigues' formula with a Taylor expansion near zero, so gradients stay finite at the identity.
    """
    is_torch = isinstance(rotvec, torch.Tensor)
    theta2 = (rotvec * rotvec).sum(-1)
    small = theta2 < 1e-8
    if is_torch:
        theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
        a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
        b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta * theta))
        eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    else:
        theta = np.sqrt(np.where(small, 1.0, theta2))
        a = np.where(small, 1 - theta2 / 6, np.sin(theta) / theta)
        b = np.where(small, 0.5 - theta2 / 24, (1 - np.cos(theta)) / (theta * theta))
        eye = np.eye(3)
    x, y, z = rotvec[..., 0], rotvec[..., 1], rotvec[..., 2]
    zero = x * 0
    skew = _stack([_stack([zero, -z, y], -1), _stack([z, zero, -x], -1), _stack([-y, x, zero], -1)], -2)
    return eye + a[..., None, None] * skew + b[..., None, None] * (skew @ skew)


def matrix_to_axis_angle(matrix: Array) -> Array:
    """Rotation matrices `[..., 3, 3]` to axis-angle vectors `[..., 3]`, going through the quaternion (stable at 180°)."""
    q = matrix_to_quat(matrix)
    vec = q[..., 1:]
    if isinstance(q, torch.Tensor):
        sin_half = torch.linalg.norm(vec, dim=-1)
        angle = 2 * torch.atan2(sin_half, q[..., 0])
        scale = torch.where(sin_half < 1e-8, 2.0 / q[..., 0].clamp_min(1e-12), angle / sin_half.clamp_min(1e-12))
    else:
        sin_half = np.linalg.norm(vec, axis=-1)
        angle = 2 * np.arctan2(sin_half, q[..., 0])
        scale = np.where(sin_half < 1e-8, 2.0 / np.maximum(q[..., 0], 1e-12), angle / np.maximum(sin_half, 1e-12))
    return vec * scale[..., None]


def rotation_angle_deg(matrix: np.ndarray) -> np.ndarray:
    """Angle in degrees of rotation matrices `[..., 3, 3]` (geodesic distance to the identity).

    Computed from the quaternion rather than `arccos` of the trace, which loses precision at the small angles
    (hundredths of a degree) that pose benchmarks compare.
    """
    return np.degrees(np.linalg.norm(matrix_to_axis_angle(np.asarray(matrix, dtype=np.float64)), axis=-1))
