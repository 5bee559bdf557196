"""CPU kernels of the hash-grid encoding (numba), fused so no `[N, levels, 8]` index tensor is ever built.

Profiling the vectorised torch version on a 2-core CPU gave ~5 s forward and ~1.6 s backward for 200k points
(16 levels), almost all in building corner indices and in `index_add_`; these kernels do the same arithmetic
per point in registers. The torch version in `encodings.py` stays the reference and the path for CUDA.
Backward runs one thread per level: levels own disjoint table rows, so the scatter-adds never race.
"""

from __future__ import annotations

import numba
import numpy as np

_PRIME_Y = np.int64(2654435761)
_PRIME_Z = np.int64(805459861)


@numba.njit(inline="always")
def _corner(x, y, z, resolution, dense, mask):
    # Index of vertex (x, y, z) inside its level (before the level's row offset).
    if dense:
        side = resolution + 1
        return (x * side + y) * side + z
    return (x ^ (y * _PRIME_Y) ^ (z * _PRIME_Z)) & mask


@numba.njit(inline="always")
def _cell(p, resolution):
    scaled = p * resolution
    cell = np.int64(np.floor(scaled))
    if cell > resolution - 1:
        cell = resolution - 1
    if cell < 0:
        cell = 0
    return cell, scaled - cell


@numba.njit(parallel=True, cache=True)
def hashgrid_forward(points, table, resolutions, offsets, dense, hashmap_size):  # pragma: no cover - numba
    """`points [N, 3]` in [0, 1] -> features `[N, L, F]` of the table's dtype."""
    n = points.shape[0]
    levels = resolutions.shape[0]
    features = table.shape[1]
    mask = np.int64(hashmap_size - 1)
    out = np.zeros((n, levels, features), dtype=table.dtype)
    for i in numba.prange(n):
        for level in range(levels):
            res = resolutions[level]
            x0, fx = _cell(points[i, 0], res)
            y0, fy = _cell(points[i, 1], res)
            z0, fz = _cell(points[i, 2], res)
            for c in range(8):
                cx, cy, cz = (c >> 2) & 1, (c >> 1) & 1, c & 1
                w = (fx if cx else 1 - fx) * (fy if cy else 1 - fy) * (fz if cz else 1 - fz)
                row = offsets[level] + _corner(x0 + cx, y0 + cy, z0 + cz, res, dense[level], mask)
                for f in range(features):
                    out[i, level, f] += w * table[row, f]
    return out


@numba.njit(parallel=True, cache=True)
def hashgrid_backward(points, grad_out, num_rows, resolutions, offsets, dense, hashmap_size):  # pragma: no cover
    """Gradient of the table `[num_rows, F]` given `grad_out [N, L, F]`."""
    n = points.shape[0]
    levels = resolutions.shape[0]
    features = grad_out.shape[2]
    mask = np.int64(hashmap_size - 1)
    grad = np.zeros((num_rows, features), dtype=grad_out.dtype)
    for level in numba.prange(levels):
        res = resolutions[level]
        for i in range(n):
            x0, fx = _cell(points[i, 0], res)
            y0, fy = _cell(points[i, 1], res)
            z0, fz = _cell(points[i, 2], res)
            for c in range(8):
                cx, cy, cz = (c >> 2) & 1, (c >> 1) & 1, c & 1
                w = (fx if cx else 1 - fx) * (fy if cy else 1 - fy) * (fz if cz else 1 - fz)
                row = offsets[level] + _corner(x0 + cx, y0 + cy, z0 + cz, res, dense[level], mask)
                for f in range(features):
                    grad[row, f] += w * grad_out[i, level, f]
    return grad
