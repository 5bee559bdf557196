"""Numba CPU kernels for tile compositing: binning, forward pass and the hand-written backward pass.

Work is split over threads by tile (each thread owns whole tiles, balanced by Gaussian count), so image writes
never race; per-Gaussian gradients are accumulated per thread and summed afterwards. Arithmetic inside a pixel is
float64 whatever the storage type: it costs little on a CPU and keeps the backward pass, which recovers
transmittance by division while walking back to front, as accurate as the forward pass.

The compositing rules are those of `torch_ref` (the reference 3DGS rasterizer); see that module.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4
# A pixel whose power is this far below log(ALPHA_MIN / opacity) is skipped without calling exp(); the margin is
# far above float64 rounding, so the exact alpha test still decides every borderline case.
SKIP_MARGIN = 1e-6
# Pixels this close (in pixels) outside a Gaussian's effective ellipse are still tested exactly.
_SPAN_MARGIN = 1e-3
# Columns of the per-tile Gaussian buffer.
_MX, _MY, _CA, _CB, _CC, _OP, _LOGMIN = 0, 1, 2, 3, 4, 5, 6
# Columns of the gradient buffers before the colour channels: d/d(mean x, mean y, conic a, b, c, opacity).
N_GEOM_GRADS = 6


@njit(cache=True)
def bin_tiles(tile_rects: np.ndarray, order: np.ndarray, grid_w: int, n_tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile Gaussian lists, front to back: `tile_rects [N, 4]` (x0, y0, x1, y1), `order [N]` (indices sorted by
    depth) -> `offsets [n_tiles + 1]` int64, `ids [M]` int32."""
    counts = np.zeros(n_tiles + 1, np.int64)
    for g in range(tile_rects.shape[0]):
        for ty in range(tile_rects[g, 1], tile_rects[g, 3]):
            for tx in range(tile_rects[g, 0], tile_rects[g, 2]):
                counts[ty * grid_w + tx + 1] += 1
    offsets = np.cumsum(counts)
    cursor = offsets[:-1].copy()
    ids = np.empty(offsets[-1], np.int32)
    for k in range(order.shape[0]):
        g = order[k]
        for ty in range(tile_rects[g, 1], tile_rects[g, 3]):
            for tx in range(tile_rects[g, 0], tile_rects[g, 2]):
                t = ty * grid_w + tx
                ids[cursor[t]] = g
                cursor[t] += 1
    return offsets, ids


@njit(cache=True)
def balance_tiles(offsets: np.ndarray, n_workers: int, pixel_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """Assign tiles to workers, largest first to the least loaded (cost = Gaussians + `pixel_cost`).

    Returns `worker_offsets [n_workers + 1]`, `worker_tiles [n_tiles]`: worker w processes
    `worker_tiles[worker_offsets[w]:worker_offsets[w + 1]]`.
    """
    n_tiles = offsets.shape[0] - 1
    cost = (offsets[1:] - offsets[:-1]).astype(np.float64) + pixel_cost
    by_cost = np.argsort(-cost, kind="mergesort")
    load = np.zeros(n_workers)
    owner = np.empty(n_tiles, np.int64)
    for t in by_cost:
        w = np.argmin(load)
        owner[t] = w
        load[w] += cost[t]
    worker_offsets = np.zeros(n_workers + 1, np.int64)
    for t in range(n_tiles):
        worker_offsets[owner[t] + 1] += 1
    worker_offsets = np.cumsum(worker_offsets)
    cursor = worker_offsets[:-1].copy()
    worker_tiles = np.empty(n_tiles, np.int64)
    for t in range(n_tiles):
        worker_tiles[cursor[owner[t]]] = t
        cursor[owner[t]] += 1
    return worker_offsets, worker_tiles


@njit(cache=True, inline="always")
def _gather_tile(means2d, conics, opacities, colors, ids, start, length, geom, color):
    for k in range(length):
        g = ids[start + k]
        geom[k, _MX] = means2d[g, 0]
        geom[k, _MY] = means2d[g, 1]
        geom[k, _CA] = conics[g, 0]
        geom[k, _CB] = conics[g, 1]
        geom[k, _CC] = conics[g, 2]
        op = np.float64(opacities[g])
        geom[k, _OP] = op
        geom[k, _LOGMIN] = math.log(ALPHA_MIN / op) - SKIP_MARGIN if op > 0.0 else np.inf
        for ch in range(colors.shape[1]):
            color[k, ch] = colors[g, ch]


@njit(cache=True, inline="always")
def _alpha(mx, my, ca, cb, cc, op, log_min, x, y):
    """Alpha of a Gaussian at pixel centre (x, y) and exp(power); alpha 0 when skipped."""
    dx = x - mx
    dy = y - my
    power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
    if power > 0.0 or power < log_min:
        return 0.0, 0.0
    gauss = math.exp(power)
    alpha = min(ALPHA_MAX, op * gauss)
    if alpha < ALPHA_MIN:
        return 0.0, 0.0
    return alpha, gauss


@njit(cache=True, inline="always")
def _row_range(ca, cc, det, my, log_min, start, stop):
    """Rows [first, last] within [start, stop) whose pixel centres can reach power >= log_min (bounding rows of
    the ellipse -0.5 d^T conic d >= log_min); a degenerate conic gets every row."""
    if det <= 0.0 or ca <= 0.0:
        return start, stop - 1
    half = math.sqrt(-2.0 * log_min * ca / det) + _SPAN_MARGIN
    lo = max(float(start), my - 0.5 - half)
    hi = min(float(stop - 1), my - 0.5 + half)
    return int(math.ceil(lo)), int(math.floor(hi))


@njit(cache=True, inline="always")
def _column_range(ca, cb, cc, det, mx, dy, log_min, start, stop):
    """Pixels [first, last] of a row (offset dy from the mean) within [start, stop) whose centres can reach
    power >= log_min: the row's chord through the ellipse, widened by a margin; first > last when empty."""
    if det <= 0.0 or ca <= 0.0:
        return start, stop - 1
    disc = (cb * dy) ** 2 - ca * (cc * dy * dy + 2.0 * log_min)
    if disc < 0.0:
        return 0, -1
    root = math.sqrt(disc)
    lo = max(float(start), mx - 0.5 + (-cb * dy - root) / ca - _SPAN_MARGIN)
    hi = min(float(stop - 1), mx - 0.5 + (-cb * dy + root) / ca + _SPAN_MARGIN)
    return int(math.ceil(lo)), int(math.floor(hi))


@njit(parallel=True, cache=True)
def composite_forward(
    means2d, conics, opacities, colors, offsets, ids, worker_offsets, worker_tiles, width, height, tile_size, grid_w
):
    """Composite: returns colours `[H, W, C]`, final transmittance `[H, W]` and the number of list entries each
    pixel walked up to its last contributor `[H, W]` (int32, needed by the backward pass).

    Each tile walks its list front to back once, updating only the pixels inside each Gaussian's effective
    ellipse; every pixel still sees its Gaussians in depth order, so this equals the per-pixel loop of 3DGS.
    """
    channels = colors.shape[1]
    out_color = np.zeros((height, width, channels), colors.dtype)
    out_transmittance = np.ones((height, width), colors.dtype)
    out_count = np.zeros((height, width), np.int32)
    longest = 0
    for t in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[t + 1] - offsets[t])
    for w in prange(worker_offsets.shape[0] - 1):
        geom = np.empty((longest, 7))
        color = np.empty((longest, channels))
        transmittance = np.empty((tile_size, tile_size))
        acc = np.empty((tile_size, tile_size, channels))
        count = np.empty((tile_size, tile_size), np.int32)
        done = np.empty((tile_size, tile_size), np.bool_)
        for q in range(worker_offsets[w], worker_offsets[w + 1]):
            tile = worker_tiles[q]
            start = offsets[tile]
            length = offsets[tile + 1] - start
            if length == 0:
                continue
            _gather_tile(means2d, conics, opacities, colors, ids, start, length, geom, color)
            x_start = (tile % grid_w) * tile_size
            y_start = (tile // grid_w) * tile_size
            x_stop = min(x_start + tile_size, width)
            y_stop = min(y_start + tile_size, height)
            transmittance[:] = 1.0
            acc[:] = 0.0
            count[:] = 0
            done[:] = False
            active = (x_stop - x_start) * (y_stop - y_start)
            for k in range(length):
                if geom[k, _LOGMIN] >= 0.0:
                    continue  # opacity <= 1/255: never visible
                mx, my, ca, cb, cc = geom[k, _MX], geom[k, _MY], geom[k, _CA], geom[k, _CB], geom[k, _CC]
                op, log_min = geom[k, _OP], geom[k, _LOGMIN]
                det = ca * cc - cb * cb
                y0, y1 = _row_range(ca, cc, det, my, log_min, y_start, y_stop)
                for py in range(y0, y1 + 1):
                    iy = py - y_start
                    y = py + 0.5
                    x0, x1 = _column_range(ca, cb, cc, det, mx, y - my, log_min, x_start, x_stop)
                    for px in range(x0, x1 + 1):
                        ix = px - x_start
                        if done[iy, ix]:
                            continue
                        alpha, _ = _alpha(mx, my, ca, cb, cc, op, log_min, px + 0.5, y)
                        if alpha == 0.0:
                            continue
                        t_before = transmittance[iy, ix]
                        after = t_before * (1.0 - alpha)
                        if after < TRANSMITTANCE_MIN:
                            done[iy, ix] = True
                            active -= 1
                            continue
                        weight = alpha * t_before
                        for ch in range(channels):
                            acc[iy, ix, ch] += weight * color[k, ch]
                        transmittance[iy, ix] = after
                        count[iy, ix] = k + 1
                if active == 0:
                    break
            for py in range(y_start, y_stop):
                for px in range(x_start, x_stop):
                    iy, ix = py - y_start, px - x_start
                    for ch in range(channels):
                        out_color[py, px, ch] = acc[iy, ix, ch]
                    out_transmittance[py, px] = transmittance[iy, ix]
                    out_count[py, px] = count[iy, ix]
    return out_color, out_transmittance, out_count


@njit(parallel=True, cache=True)
def composite_backward(
    means2d,
    conics,
    opacities,
    colors,
    offsets,
    ids,
    worker_offsets,
    worker_tiles,
    width,
    height,
    tile_size,
    grid_w,
    out_transmittance,
    out_count,
    grad_color,
    grad_alpha,
):
    """Gradients of the loss w.r.t. each Gaussian, `[N, 6 + C]` float64: columns d/d(mean x, mean y, conic a, b,
    c, opacity, colours...), given `grad_color [H, W, C]` and `grad_alpha [H, W]` (alpha = 1 - transmittance).

    Each tile walks its list back to front from the last contributor of any of its pixels; every pixel recovers
    its transmittance before each Gaussian by division and carries the colour accumulated behind it.
    """
    n = means2d.shape[0]
    channels = colors.shape[1]
    n_workers = worker_offsets.shape[0] - 1
    columns = N_GEOM_GRADS + channels
    per_worker = np.zeros((n_workers, n, columns))
    longest = 0
    for t in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[t + 1] - offsets[t])
    for w in prange(n_workers):
        geom = np.empty((longest, 7))
        color = np.empty((longest, channels))
        transmittance = np.empty((tile_size, tile_size))
        final = np.empty((tile_size, tile_size))
        g_alpha_out = np.empty((tile_size, tile_size))
        count = np.zeros((tile_size, tile_size), np.int32)
        g_color = np.empty((tile_size, tile_size, channels))
        behind = np.empty((tile_size, tile_size, channels))
        grad = np.empty(columns)
        for q in range(worker_offsets[w], worker_offsets[w + 1]):
            tile = worker_tiles[q]
            start = offsets[tile]
            length = offsets[tile + 1] - start
            if length == 0:
                continue
            _gather_tile(means2d, conics, opacities, colors, ids, start, length, geom, color)
            x_start = (tile % grid_w) * tile_size
            y_start = (tile // grid_w) * tile_size
            x_stop = min(x_start + tile_size, width)
            y_stop = min(y_start + tile_size, height)
            last = 0
            for py in range(y_start, y_stop):
                for px in range(x_start, x_stop):
                    iy, ix = py - y_start, px - x_start
                    final[iy, ix] = out_transmittance[py, px]
                    transmittance[iy, ix] = final[iy, ix]
                    g_alpha_out[iy, ix] = grad_alpha[py, px]
                    count[iy, ix] = out_count[py, px]
                    last = max(last, out_count[py, px])
                    for ch in range(channels):
                        g_color[iy, ix, ch] = grad_color[py, px, ch]
                        behind[iy, ix, ch] = 0.0
            for k in range(last - 1, -1, -1):
                if geom[k, _LOGMIN] >= 0.0:
                    continue
                mx, my, ca, cb, cc = geom[k, _MX], geom[k, _MY], geom[k, _CA], geom[k, _CB], geom[k, _CC]
                op, log_min = geom[k, _OP], geom[k, _LOGMIN]
                det = ca * cc - cb * cb
                y0, y1 = _row_range(ca, cc, det, my, log_min, y_start, y_stop)
                g_mx = g_my = g_ca = g_cb = g_cc = g_op = 0.0
                grad[:] = 0.0
                for py in range(y0, y1 + 1):
                    iy = py - y_start
                    y = py + 0.5
                    x0, x1 = _column_range(ca, cb, cc, det, mx, y - my, log_min, x_start, x_stop)
                    for px in range(x0, x1 + 1):
                        ix = px - x_start
                        if k >= count[iy, ix]:
                            continue
                        x = px + 0.5
                        alpha, gauss = _alpha(mx, my, ca, cb, cc, op, log_min, x, y)
                        if alpha == 0.0:
                            continue
                        inv_one_minus = 1.0 / (1.0 - alpha)  # one division, reused (divisions are slow)
                        t_before = transmittance[iy, ix] * inv_one_minus
                        transmittance[iy, ix] = t_before
                        weight = alpha * t_before
                        g_a = g_alpha_out[iy, ix] * final[iy, ix] * inv_one_minus
                        for ch in range(channels):
                            c = color[k, ch]
                            grad[N_GEOM_GRADS + ch] += weight * g_color[iy, ix, ch]
                            g_a += g_color[iy, ix, ch] * (c * t_before - behind[iy, ix, ch] * inv_one_minus)
                            behind[iy, ix, ch] += c * weight
                        if op * gauss >= ALPHA_MAX:
                            continue  # alpha is clamped: no gradient to the Gaussian
                        g_power = g_a * alpha
                        dx = x - mx
                        dy = y - my
                        g_mx += g_power * (ca * dx + cb * dy)
                        g_my += g_power * (cb * dx + cc * dy)
                        g_ca -= 0.5 * g_power * dx * dx
                        g_cb -= g_power * dx * dy
                        g_cc -= 0.5 * g_power * dy * dy
                        g_op += g_a * gauss
                grad[0], grad[1], grad[2], grad[3], grad[4], grad[5] = g_mx, g_my, g_ca, g_cb, g_cc, g_op
                g = ids[start + k]
                for j in range(columns):
                    per_worker[w, g, j] += grad[j]
    grads = np.zeros((n, columns))
    for w in range(n_workers):
        grads += per_worker[w]
    return grads
