"""CPU kernels (numba) of ray marching through the occupancy grid and of packed volume rendering.

They do the arithmetic of `OccupancyGrid.march` and `rendering.composite_packed` one ray at a time, without the
`[rays, steps]` candidate tensors and the chains of segment sums that the torch versions (kept as the reference
and the path for CUDA) build. Rays are independent, so every kernel runs one `prange` iteration per ray and
writes only that ray's samples: no races and no atomics.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always")
def _cell_of(ox, oy, oz, dx, dy, dz, mid, lo, cell, hi, resolution):
    # The float32 operations of `OccupancyGrid.query` in the same order, so both give the same samples: the
    # integer cell (ix, iy, iz) of the point at distance `mid`, and whether the point is inside the box.
    px = ox + mid * dx
    py = oy + mid * dy
    pz = oz + mid * dz
    inside = not (px < lo[0] or py < lo[1] or pz < lo[2] or px > hi[0] or py > hi[1] or pz > hi[2])
    ix = min(max(np.int64((px - lo[0]) / cell[0]), 0), resolution - 1)
    iy = min(max(np.int64((py - lo[1]) / cell[1]), 0), resolution - 1)
    iz = min(max(np.int64((pz - lo[2]) / cell[2]), 0), resolution - 1)
    return inside, ix, iy, iz


# Fine cells per side of a coarse cell: empty space is crossed a coarse cell at a time (4x fewer cell visits
# where the grid is empty, as instant-ngp's coarser occupancy levels do).
COARSE_FACTOR = 4


@numba.njit(inline="always")
def _axis_exit(o, d, lo, size, first, last):
    # Distance at which the ray leaves the slab of cells [first, last) along one axis (infinite when parallel).
    if d > 0:
        return (lo + last * size - o) / d
    if d < 0:
        return (lo + first * size - o) / d
    return np.inf


@numba.njit(inline="always")
def _next_step(r, k, origins, directions, t_min, t_max, step, lo, cell, hi, resolution, occupied, coarse):
    """(occupied, next k): whether step k of ray r is kept, and the next step to look at. From an empty cell
    (or an empty coarse cell, `coarse` being the occupancy OR-pooled over blocks of COARSE_FACTOR^3 cells) it jumps
    to one step before the first midpoint past the cell's exit, so no step in another cell is ever skipped (each
    is then classified exactly as `OccupancyGrid.query` does)."""
    ox, oy, oz = origins[r, 0], origins[r, 1], origins[r, 2]
    dx, dy, dz = directions[r, 0], directions[r, 1], directions[r, 2]
    start = t_min[r] + np.float32(k) * step
    end = min(start + step, t_max[r])
    inside, ix, iy, iz = _cell_of(ox, oy, oz, dx, dy, dz, np.float32(0.5) * (start + end), lo, cell, hi, resolution)
    if not inside:
        return False, k + 1
    f = COARSE_FACTOR
    if coarse[ix // f, iy // f, iz // f]:
        if occupied[(ix * resolution + iy) * resolution + iz]:
            return True, k + 1
        x0, y0, z0, x1, y1, z1 = ix, iy, iz, ix + 1, iy + 1, iz + 1
    else:
        x0, y0, z0 = (ix // f) * f, (iy // f) * f, (iz // f) * f
        x1, y1, z1 = min(x0 + f, resolution), min(y0 + f, resolution), min(z0 + f, resolution)
    exit_ = min(_axis_exit(ox, dx, lo[0], cell[0], x0, x1), _axis_exit(oy, dy, lo[1], cell[1], y0, y1),
                _axis_exit(oz, dz, lo[2], cell[2], z0, z1))
    jump = np.ceil((exit_ - t_min[r] - 0.5 * step) / step) - 1.0
    return False, max(k + 1, np.int64(min(jump, 1e18)))


@numba.njit(cache=True)
def coarse_occupancy(occupied, resolution):  # pragma: no cover - numba
    """`[C, C, C]` bool, C = ceil(resolution / COARSE_FACTOR): whether any cell of each block of the flat
    `occupied [resolution^3]` grid is occupied."""
    f = COARSE_FACTOR
    side = (resolution + f - 1) // f
    coarse = np.zeros((side, side, side), dtype=np.bool_)
    for x in range(resolution):
        for y in range(resolution):
            row = (x * resolution + y) * resolution
            for z in range(resolution):
                if occupied[row + z]:
                    coarse[x // f, y // f, z // f] = True
    return coarse


@numba.njit(parallel=True, cache=True)
def march(origins, directions, t_min, t_max, steps, step_size, lo, cell, hi, resolution, occupied):  # pragma: no cover
    """Occupied intervals of rays `[R, 3]` stepping `steps [R]` times by `step_size` from `t_min [R]`, clipped at
    `t_max [R]` -> (`ray_indices [M]`, `starts [M]`, `ends [M]`), ordered by ray then distance. Empty cells are
    crossed in one jump (see `_next_step`), so the cost grows with the cells a ray crosses, not its steps. Each
    ray is traversed once, its kept steps noted in its own stretch of a scratch array, then packed."""
    num_rays = origins.shape[0]
    step = np.float32(step_size)
    coarse = coarse_occupancy(occupied, resolution)
    slots = np.zeros(num_rays + 1, dtype=np.int64)
    for r in range(num_rays):
        slots[r + 1] = slots[r] + steps[r]
    kept = np.empty(slots[num_rays], dtype=np.int32)
    counts = np.zeros(num_rays, dtype=np.int64)
    for r in numba.prange(num_rays):
        k = 0
        count = 0
        while k < steps[r]:
            keep, following = _next_step(r, k, origins, directions, t_min, t_max, step, lo, cell, hi, resolution,
                                         occupied, coarse)
            if keep:
                kept[slots[r] + count] = k
                count += 1
            k = following
        counts[r] = count
    first = np.zeros(num_rays + 1, dtype=np.int64)
    for r in range(num_rays):
        first[r + 1] = first[r] + counts[r]
    total = first[num_rays]
    ray_indices = np.empty(total, dtype=np.int64)
    starts = np.empty(total, dtype=np.float32)
    ends = np.empty(total, dtype=np.float32)
    for r in numba.prange(num_rays):
        for j in range(counts[r]):
            start = t_min[r] + np.float32(kept[slots[r] + j]) * step
            ray_indices[first[r] + j] = r
            starts[first[r] + j] = start
            ends[first[r] + j] = min(start + step, t_max[r])
    return ray_indices, starts, ends


@numba.njit(parallel=True, cache=True)
def composite_forward(density, rgb, deltas, t, first, background):  # pragma: no cover - numba
    """Front-to-back compositing of packed samples; ray r owns samples `first[r]:first[r + 1]`.

    Returns `color [R, 3]` (over `background [3]`; pass zeros for none), `depth [R]`, `opacity [R]`, `weights [M]`
    and `transmittance [M]` (before each sample). The optical depth is accumulated in float64 per ray."""
    num_rays = first.shape[0] - 1
    color = np.zeros((num_rays, 3), dtype=np.float32)
    depth = np.zeros(num_rays, dtype=np.float32)
    opacity = np.zeros(num_rays, dtype=np.float32)
    weights = np.empty(density.shape[0], dtype=np.float32)
    transmittance = np.empty(density.shape[0], dtype=np.float32)
    for r in numba.prange(num_rays):
        optical_sum = 0.0
        cr, cg, cb, d, o = 0.0, 0.0, 0.0, 0.0, 0.0
        for i in range(first[r], first[r + 1]):
            optical = density[i] * deltas[i]
            trans = np.exp(-optical_sum)
            w = trans * (1.0 - np.exp(-optical))
            transmittance[i] = trans
            weights[i] = w
            cr += w * rgb[i, 0]
            cg += w * rgb[i, 1]
            cb += w * rgb[i, 2]
            d += w * t[i]
            o += w
            optical_sum += optical
        color[r, 0] = cr + (1.0 - o) * background[0]
        color[r, 1] = cg + (1.0 - o) * background[1]
        color[r, 2] = cb + (1.0 - o) * background[2]
        depth[r] = d
        opacity[r] = o
    return color, depth, opacity, weights, transmittance


@numba.njit(parallel=True, cache=True)
def composite_backward(grad_color, grad_depth, grad_opacity, grad_weights, density, rgb, deltas, t, weights,
                       transmittance, first, background):  # pragma: no cover - numba
    """Gradients of `density [M]` and `rgb [M, 3]` given those of `composite_forward`'s colour, depth, opacity and
    weights. With `g_i` the gradient reaching weight i, `dL/dsigma_i = delta_i (T_{i+1} g_i - sum_{j>i} w_j g_j)`."""
    num_rays = first.shape[0] - 1
    grad_density = np.zeros(density.shape[0], dtype=np.float32)
    grad_rgb = np.zeros((density.shape[0], 3), dtype=np.float32)
    for r in numba.prange(num_rays):
        gr, gg, gb = grad_color[r, 0], grad_color[r, 1], grad_color[r, 2]
        # The background term (1 - opacity) * background moves the opacity's gradient.
        g_opacity = grad_opacity[r] - (gr * background[0] + gg * background[1] + gb * background[2])
        total = 0.0
        for i in range(first[r], first[r + 1]):
            g = gr * rgb[i, 0] + gg * rgb[i, 1] + gb * rgb[i, 2] + grad_depth[r] * t[i] + g_opacity + grad_weights[i]
            total += weights[i] * g
        behind = total
        for i in range(first[r], first[r + 1]):
            w = weights[i]
            g = gr * rgb[i, 0] + gg * rgb[i, 1] + gb * rgb[i, 2] + grad_depth[r] * t[i] + g_opacity + grad_weights[i]
            behind -= w * g
            after = transmittance[i] - w  # transmittance after sample i
            grad_density[i] = deltas[i] * (after * g - behind)
            grad_rgb[i, 0] = w * gr
            grad_rgb[i, 1] = w * gg
            grad_rgb[i, 2] = w * gb
    return grad_density, grad_rgb


@numba.njit(parallel=True, cache=True)
def alive_mask(optical, first, min_transmittance):  # pragma: no cover - numba
    """`[M]` bool: the samples of each ray (`first [R + 1]`, as `composite_forward`) in front of which the
    transmittance `exp(-sum of optical [M] before it)` is still above `min_transmittance`."""
    keep = np.zeros(optical.shape[0], dtype=np.bool_)
    limit = -np.log(min_transmittance)
    for r in numba.prange(first.shape[0] - 1):
        optical_sum = 0.0
        for i in range(first[r], first[r + 1]):
            if optical_sum > limit:
                break
            keep[i] = True
            optical_sum += optical[i]
    return keep
