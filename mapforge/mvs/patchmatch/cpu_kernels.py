"""Numba CPU kernels of PatchMatch stereo: one red-black half sweep, the cost of given planes, and the filter.

The rules are those of `rules` (read its docstring first) and of the torch reference; this module only makes them
fast. Pixels of one checkerboard colour are independent (their candidates come from pixels of the other colour),
so rows are split over threads with `prange` and the maps are updated in place. Arithmetic is float64, storage
float32.

Arguments shared by the kernels: `ref [H, W]` and `srcs [S, Hs, Ws]` float32 grey images (sources padded to a
common size), `src_size [S, 2]` int32 (width, height) of each source, `geo [S, 31]` from `rules.source_geometry`,
`kref` (fx, fy, cx, cy) of the reference, `depth [H, W]`, `normal [H, W, 3]` float32, `src_depths [S, Hs, Ws]`
float32 (read in the geometric pass only), `iparams` = (window_radius, window_step, num_best_views, geometric
0/1, num_scored_views) int64 and `fparams` = (sigma_spatial, sigma_color, perturbation, depth_min, depth_max,
geom_consistency_regularizer, geom_consistency_max_cost) float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from mapforge.mvs.patchmatch import rules as R


@njit(cache=True, fastmath=True)
def _window(ref, r, c, radius, step, inv_2ss, inv_2sc, du, dv, wts, vals):
    """Offsets, normalised bilateral weights and reference values of the window around (r, c) into `du, dv, wts,
    vals` (offsets clamped to the image, so a window at the border repeats its edge pixels); returns (count,
    weighted mean, weighted variance)."""
    height, width = ref.shape
    center = ref[r, c]
    n = 0
    wsum = 0.0
    s1 = 0.0
    s2 = 0.0
    for dy in range(-radius, radius + 1, step):
        rr = min(max(r + dy, 0), height - 1)
        for dx in range(-radius, radius + 1, step):
            cc = min(max(c + dx, 0), width - 1)
            value = ref[rr, cc]
            diff = value - center
            ox = cc - c
            oy = rr - r
            w = math.exp(-(ox * ox + oy * oy) * inv_2ss - diff * diff * inv_2sc)
            du[n] = ox
            dv[n] = oy
            wts[n] = w
            vals[n] = value
            wsum += w
            s1 += w * value
            s2 += w * value * value
            n += 1
    for k in range(n):
        wts[k] /= wsum
    mean = s1 / wsum
    return n, mean, s2 / wsum - mean * mean


@njit(cache=True, fastmath=True)
def _view_cost(s, u, v, q0, q1, q2, srcs, src_size, geo, n, du, dv, wts, vals, rmean, rvar):
    """1 - bilateral NCC of the window at (u, v) warped into source `s` by the plane q (`rules.source_geometry`),
    sample positions from the homography's second-order expansion around the window centre (`rules`)."""
    h00 = geo[s, 0] + geo[s, 9] * q0
    h01 = geo[s, 1] + geo[s, 9] * q1
    h02 = geo[s, 2] + geo[s, 9] * q2
    h10 = geo[s, 3] + geo[s, 10] * q0
    h11 = geo[s, 4] + geo[s, 10] * q1
    h12 = geo[s, 5] + geo[s, 10] * q2
    h20 = geo[s, 6] + geo[s, 11] * q0
    h21 = geo[s, 7] + geo[s, 11] * q1
    h22 = geo[s, 8] + geo[s, 11] * q2
    zc = h20 * u + h21 * v + h22
    if not zc > 0.0:
        return R.MAX_COST
    width = src_size[s, 0]
    height = src_size[s, 1]
    iz = 1.0 / zc
    xc = (h00 * u + h01 * v + h02) * iz
    yc = (h10 * u + h11 * v + h12) * iz
    if not (xc >= 0.0 and yc >= 0.0 and xc <= width and yc <= height):
        return R.MAX_COST
    eu = h20 * iz
    ev = h21 * iz
    # the window's corners bound eps = eu * du + ev * dv, which is affine over the window
    reach = abs(eu) * max(abs(du[0]), abs(du[n - 1])) + abs(ev) * max(abs(dv[0]), abs(dv[n - 1]))
    if not reach < R.MAX_DEPTH_CHANGE:
        return R.MAX_COST
    ax = (h00 - xc * h20) * iz
    bx = (h01 - xc * h21) * iz
    ay = (h10 - yc * h20) * iz
    by = (h11 - yc * h21) * iz
    xc -= 0.5
    yc -= 0.5
    # the footprint is within (|a| + |b|) * (1 + reach + reach^2) of the centre in each axis
    grow = 1.0 + reach + reach * reach
    ext_x = (abs(ax) * max(abs(du[0]), abs(du[n - 1])) + abs(bx) * max(abs(dv[0]), abs(dv[n - 1]))) * grow
    ext_y = (abs(ay) * max(abs(du[0]), abs(du[n - 1])) + abs(by) * max(abs(dv[0]), abs(dv[n - 1]))) * grow
    inside = xc - ext_x >= 0.0 and yc - ext_y >= 0.0 and xc + ext_x < width - 1.0 and yc + ext_y < height - 1.0
    s1, s2, sr = _samples(srcs[s], width, height, not inside, xc, yc, ax, bx, ay, by, eu, ev, n, du, dv, wts, vals)
    svar = s2 - s1 * s1
    if svar < R.MIN_VARIANCE or rvar < R.MIN_VARIANCE:
        return R.MAX_COST
    ncc = (sr - rmean * s1) / math.sqrt(rvar * svar)
    return min(max(1.0 - ncc, 0.0), R.MAX_COST)


@njit(cache=True, fastmath=True)
def _samples(img, width, height, clamp, xc, yc, ax, bx, ay, by, eu, ev, n, du, dv, wts, vals):
    """Weighted sums (w s, w s^2, w s r) of the window's bilinear samples; positions clamped to the image when
    `clamp` (its edge pixels repeat outwards), else known to lie inside."""
    wm1 = width - 1.0
    hm1 = height - 1.0
    s1 = 0.0
    s2 = 0.0
    sr = 0.0
    for k in range(n):
        a = du[k]
        b = dv[k]
        e = eu * a + ev * b
        f = 1.0 - e + e * e
        sx = xc + (ax * a + bx * b) * f
        sy = yc + (ay * a + by * b) * f
        if clamp:
            sx = min(max(sx, 0.0), wm1)
            sy = min(max(sy, 0.0), hm1)
        ix = min(int(sx), width - 2)
        iy = min(int(sy), height - 2)
        fx = sx - ix
        fy = sy - iy
        top = img[iy, ix] + fx * (img[iy, ix + 1] - img[iy, ix])
        bottom = img[iy + 1, ix] + fx * (img[iy + 1, ix + 1] - img[iy + 1, ix])
        value = top + fy * (bottom - top)
        w = wts[k]
        s1 += w * value
        s2 += w * value * value
        sr += w * value * vals[k]
    return s1, s2, sr


@njit(cache=True, fastmath=True)
def _geom_cost(s, u, v, depth, rx, ry, kref, geo, src_size, src_depths, max_cost):
    """Forward-backward reprojection error in pixels, capped at `max_cost`, of the point at `depth` on the ray
    (rx, ry, 1) through source `s`'s depth map (nearest pixel)."""
    x = depth * rx
    y = depth * ry
    xs = geo[s, 12] * x + geo[s, 13] * y + geo[s, 14] * depth + geo[s, 21]
    ys = geo[s, 15] * x + geo[s, 16] * y + geo[s, 17] * depth + geo[s, 22]
    zs = geo[s, 18] * x + geo[s, 19] * y + geo[s, 20] * depth + geo[s, 23]
    if not zs > 0.0:
        return max_cost
    us = geo[s, 24] * xs / zs + geo[s, 26]
    vs = geo[s, 25] * ys / zs + geo[s, 27]
    if not (us >= 0.0 and vs >= 0.0 and us < src_size[s, 0] and vs < src_size[s, 1]):
        return max_cost
    ds = src_depths[s, int(vs), int(us)]
    if not ds > 0.0:
        return max_cost
    # back into the source camera, then into the reference camera: x_ref = R^T (x_src - t)
    bx = ds * (us - geo[s, 26]) / geo[s, 24] - geo[s, 21]
    by = ds * (vs - geo[s, 27]) / geo[s, 25] - geo[s, 22]
    bz = ds - geo[s, 23]
    xr = geo[s, 12] * bx + geo[s, 15] * by + geo[s, 18] * bz
    yr = geo[s, 13] * bx + geo[s, 16] * by + geo[s, 19] * bz
    zr = geo[s, 14] * bx + geo[s, 17] * by + geo[s, 20] * bz
    if not zr > 0.0:
        return max_cost
    du = u - (kref[0] * xr / zr + kref[2])
    dv = v - (kref[1] * yr / zr + kref[3])
    return min(math.sqrt(du * du + dv * dv), max_cost)


@njit(cache=True, fastmath=True)
def _view_costs(d, nx, ny, nz, u, v, rx, ry, kref, srcs, src_size, geo, n, du, dv, wts, vals, rmean, rvar,
                iparams, fparams, src_depths, views, m, out):
    """Cost of the plane (d, n) at pixel centre (u, v), ray (rx, ry, 1), in each view `views[i]` into `out[i]`
    for i < m: photometric, plus the weighted geometric term when `iparams[3]`."""
    p = d * (nx * rx + ny * ry + nz)
    if not p < 0.0:
        for i in range(m):
            out[i] = R.MAX_COST
        return
    q0 = nx / (kref[0] * p)
    q1 = ny / (kref[1] * p)
    q2 = (nz - nx * kref[2] / kref[0] - ny * kref[3] / kref[1]) / p
    geometric = iparams[3] != 0
    for i in range(m):
        s = views[i]
        cost = _view_cost(s, u, v, q0, q1, q2, srcs, src_size, geo, n, du, dv, wts, vals, rmean, rvar)
        if geometric:
            cost += fparams[5] * _geom_cost(s, u, v, d, rx, ry, kref, geo, src_size, src_depths, fparams[6])
        out[i] = cost


@njit(cache=True, fastmath=True)
def _mean_of_smallest(values, count, k):
    """Mean of the `k` smallest of `values[:count]` (partially sorts them in place)."""
    k = min(k, count)
    total = 0.0
    for i in range(k):
        best = i
        for j in range(i + 1, count):
            if values[j] < values[best]:
                best = j
        values[i], values[best] = values[best], values[i]
        total += values[i]
    return total / k


@njit(cache=True, fastmath=True)
def _best_views(costs, count, m, views):
    """Indices of the `m` lowest of `costs[:count]` into `views[:m]`, lowest first, the lower index on ties."""
    for s in range(count):
        views[s] = s
    for i in range(min(m, count)):
        best = i
        for j in range(i + 1, count):
            if costs[views[j]] < costs[views[best]] or (costs[views[j]] == costs[views[best]] and views[j] < views[best]):
                best = j
        views[i], views[best] = views[best], views[i]


@njit(cache=True, fastmath=True)
def _rank_views(full, count, m, k, ranked, views, r, c):
    """Store the `m` best of the view costs `full[:count]` as pixel (r, c)'s scored views; returns the mean of the
    `k` lowest."""
    _best_views(full, count, m, ranked)
    total = 0.0
    for i in range(m):
        views[r, c, i] = ranked[i]
        if i < k:
            total += full[ranked[i]]
    return total / min(k, m)


@njit(cache=True, fastmath=True)
def _transfer_depth(depth, normal, rr, cc, rx, ry, kref, dmin, dmax):
    """Depth on the ray (rx, ry, 1) of the plane stored at pixel (rr, cc), or -1 when it is unusable."""
    nx = normal[rr, cc, 0]
    ny = normal[rr, cc, 1]
    nz = normal[rr, cc, 2]
    denom = nx * rx + ny * ry + nz
    if not denom < -R.MIN_COS_VIEW * math.sqrt(rx * rx + ry * ry + 1.0):
        return -1.0
    nrx = (cc + 0.5 - kref[2]) / kref[0]
    nry = (rr + 0.5 - kref[3]) / kref[1]
    d = depth[rr, cc] * (nx * nrx + ny * nry + nz) / denom
    if not (d >= dmin and d <= dmax):
        return -1.0
    return d


@njit(cache=True, fastmath=True)
def _random_normal(w1, w2, rx, ry):
    z = 2.0 * w1 - 1.0
    radius = math.sqrt(max(1.0 - z * z, 0.0))
    phi = 2.0 * math.pi * w2
    nx = radius * math.cos(phi)
    ny = radius * math.sin(phi)
    if nx * rx + ny * ry + z > 0.0:
        return -nx, -ny, -z
    return nx, ny, z


@njit(cache=True, fastmath=True)
def _perturbed_normal(nx, ny, nz, w4, w5, w6, pert, rx, ry):
    px = nx + pert * (2.0 * w4 - 1.0)
    py = ny + pert * (2.0 * w5 - 1.0)
    pz = nz + pert * (2.0 * w6 - 1.0)
    norm = math.sqrt(px * px + py * py + pz * pz)
    if not norm > 1e-12:
        return nx, ny, nz
    px /= norm
    py /= norm
    pz /= norm
    if not px * rx + py * ry + pz < -R.MIN_COS_VIEW * math.sqrt(rx * rx + ry * ry + 1.0):
        return nx, ny, nz
    return px, py, pz


@njit(cache=True, fastmath=True)
def _neighbour(cost, r, c, offsets, counts, g):
    """The pixel of region `g` around (r, c) with the lowest cost, or (-1, -1) when none is inside the image."""
    height, width = cost.shape
    pick_r = -1
    pick_c = -1
    pick_cost = np.inf
    for k in range(counts[g]):
        rr = r + offsets[g, k, 0]
        cc = c + offsets[g, k, 1]
        if rr >= 0 and rr < height and cc >= 0 and cc < width and cost[rr, cc] < pick_cost:
            pick_cost = cost[rr, cc]
            pick_r = rr
            pick_c = cc
    return pick_r, pick_c


@njit(cache=True, fastmath=True)
def _seen_before(seen, count, d, nx, ny, nz):
    """Whether the plane (d, n) is one of the first `count` planes in `seen` (rows d, nx, ny, nz): the same normal
    and a depth within `rules.SAME_DEPTH` (relative)."""
    for i in range(count):
        if nx == seen[i, 1] and ny == seen[i, 2] and nz == seen[i, 3] and abs(d - seen[i, 0]) <= R.SAME_DEPTH * seen[i, 0]:
            return True
    return False


@njit(cache=True, fastmath=True)
def _score(d, nx, ny, nz, u, v, rx, ry, kref, srcs, src_size, geo, n, du, dv, wts, vals, rmean, rvar, iparams, fparams,
           src_depths, scored, m, sub):
    """A candidate's cost: the mean of its `num_best_views` lowest costs in the pixel's scored views."""
    _view_costs(d, nx, ny, nz, u, v, rx, ry, kref, srcs, src_size, geo, n, du, dv, wts, vals, rmean, rvar, iparams,
                fparams, src_depths, scored, m, sub)
    return _mean_of_smallest(sub, m, iparams[2])


@njit(cache=True, fastmath=True)
def _propagate(r, c, u, v, rx, ry, depth, normal, cost, offsets, counts, seen, best, bd, bnx, bny, bnz, kref, srcs,
               src_size, geo, n, du, dv, wts, vals, rmean, rvar, iparams, fparams, src_depths, scored, m, sub):
    """The best of the pixel's plane and the 8 regions' planes (repeats skipped): (cost, d, nx, ny, nz)."""
    dmin, dmax = fparams[3], fparams[4]
    seen[0, 0], seen[0, 1], seen[0, 2], seen[0, 3] = bd, bnx, bny, bnz
    num_seen = 1
    for g in range(offsets.shape[0]):
        pick_r, pick_c = _neighbour(cost, r, c, offsets, counts, g)
        if pick_r < 0:
            continue
        d = _transfer_depth(depth, normal, pick_r, pick_c, rx, ry, kref, dmin, dmax)
        if d < 0.0:
            continue
        nx, ny, nz = normal[pick_r, pick_c, 0], normal[pick_r, pick_c, 1], normal[pick_r, pick_c, 2]
        if _seen_before(seen, num_seen, d, nx, ny, nz):
            continue
        seen[num_seen, 0], seen[num_seen, 1], seen[num_seen, 2], seen[num_seen, 3] = d, nx, ny, nz
        num_seen += 1
        candidate = _score(d, nx, ny, nz, u, v, rx, ry, kref, srcs, src_size, geo, n, du, dv, wts, vals, rmean, rvar,
                           iparams, fparams, src_depths, scored, m, sub)
        if candidate < best:
            best, bd, bnx, bny, bnz = candidate, d, nx, ny, nz
    return best, bd, bnx, bny, bnz


@njit(cache=True, fastmath=True)
def _refine(w, best, bd, bnx, bny, bnz, u, v, rx, ry, kref, srcs, src_size, geo, n, du, dv, wts, vals, rmean, rvar,
            iparams, fparams, src_depths, scored, m, sub):
    """The best of `best` and the 4 refinement candidates around it from the uniforms `w [7]`, in the rules' order."""
    pert, dmin, dmax = fparams[2], fparams[3], fparams[4]
    d_prt = min(max(bd * (1.0 + pert * (2.0 * w[3] - 1.0)), dmin), dmax)
    pnx, pny, pnz = _perturbed_normal(bnx, bny, bnz, w[4], w[5], w[6], pert, rx, ry)
    rnx, rny, rnz = _random_normal(w[1], w[2], rx, ry)
    d_rnd = 1.0 / (1.0 / dmax + w[0] * (1.0 / dmin - 1.0 / dmax))
    new, nd, nnx, nny, nnz = best, bd, bnx, bny, bnz
    for t in range(4):
        d = d_rnd if t == 3 else (bd if t == 1 else d_prt)
        if t == 0:
            nx, ny, nz = bnx, bny, bnz
        elif t == 3:
            nx, ny, nz = rnx, rny, rnz
        else:
            nx, ny, nz = pnx, pny, pnz
        candidate = _score(d, nx, ny, nz, u, v, rx, ry, kref, srcs, src_size, geo, n, du, dv, wts, vals, rmean, rvar,
                           iparams, fparams, src_depths, scored, m, sub)
        if candidate < new:
            new, nd, nnx, nny, nnz = candidate, d, nx, ny, nz
    return new, nd, nnx, nny, nnz


@njit(cache=True, fastmath=True, parallel=True)
def sweep(colour, ref, srcs, src_size, geo, kref, depth, normal, cost, views, rnd, offsets, counts, iparams, fparams,
          src_depths):
    """One half sweep in place over the pixels of `colour`, as `rules` describes: `rnd [H, W, 7]` uniforms,
    `views [H, W, M]` int32 each pixel's scored views (updated with its plane)."""
    height, width = ref.shape
    radius, step = iparams[0], iparams[1]
    num_sources = geo.shape[0]
    m = min(iparams[4], num_sources)
    inv_2ss = 1.0 / (2.0 * fparams[0] * fparams[0])
    inv_2sc = 1.0 / (2.0 * fparams[1] * fparams[1])
    side = (2 * radius) // step + 1
    for r in prange(height):
        du = np.empty(side * side)
        dv = np.empty(side * side)
        wts = np.empty(side * side)
        vals = np.empty(side * side)
        all_views = np.arange(num_sources)
        ranked = np.empty(num_sources, np.int64)
        scored = np.empty(m, np.int64)
        full = np.empty(num_sources)
        sub = np.empty(num_sources)
        seen = np.empty((offsets.shape[0] + 1, 4))
        for c in range((r + colour) % 2, width, 2):
            u = c + 0.5
            v = r + 0.5
            rx = (u - kref[2]) / kref[0]
            ry = (v - kref[3]) / kref[1]
            n, rmean, rvar = _window(ref, r, c, radius, step, inv_2ss, inv_2sc, du, dv, wts, vals)
            for i in range(m):
                scored[i] = views[r, c, i]
            best, bd, bnx, bny, bnz = _propagate(
                r, c, u, v, rx, ry, depth, normal, cost, offsets, counts, seen, np.float64(cost[r, c]),
                np.float64(depth[r, c]), np.float64(normal[r, c, 0]), np.float64(normal[r, c, 1]),
                np.float64(normal[r, c, 2]), kref, srcs, src_size, geo, n, du, dv, wts, vals,
                rmean, rvar, iparams, fparams, src_depths, scored, m, sub,
            )  # fmt: skip
            best, bd, bnx, bny, bnz = _refine(
                rnd[r, c], best, bd, bnx, bny, bnz, u, v, rx, ry, kref, srcs, src_size, geo, n, du, dv, wts, vals,
                rmean, rvar, iparams, fparams, src_depths, scored, m, sub,
            )  # fmt: skip
            if bd == depth[r, c] and bnx == normal[r, c, 0] and bny == normal[r, c, 1] and bnz == normal[r, c, 2]:
                continue
            # a new plane: stored, then scored (as stored) in every view for its best views and their cost
            depth[r, c] = bd
            normal[r, c, 0], normal[r, c, 1], normal[r, c, 2] = bnx, bny, bnz
            _view_costs(depth[r, c], normal[r, c, 0], normal[r, c, 1], normal[r, c, 2], u, v, rx, ry, kref, srcs,
                        src_size, geo, n, du, dv, wts, vals, rmean, rvar, iparams, fparams, src_depths, all_views,
                        num_sources, full)
            cost[r, c] = _rank_views(full, num_sources, m, iparams[2], ranked, views, r, c)


@njit(cache=True, fastmath=True, parallel=True)
def plane_costs(ref, srcs, src_size, geo, kref, depth, normal, iparams, fparams, src_depths):
    """Every pixel's current plane scored in every view: its cost `[H, W]` float32 (the mean of its
    `num_best_views` lowest view costs) and its `num_scored_views` best views `[H, W, M]` int32."""
    height, width = ref.shape
    radius, step = iparams[0], iparams[1]
    num_sources = geo.shape[0]
    inv_2ss = 1.0 / (2.0 * fparams[0] * fparams[0])
    inv_2sc = 1.0 / (2.0 * fparams[1] * fparams[1])
    side = (2 * radius) // step + 1
    m = min(iparams[4], num_sources)
    out = np.empty((height, width), np.float32)
    views = np.empty((height, width, m), np.int32)
    for r in prange(height):
        du = np.empty(side * side)
        dv = np.empty(side * side)
        wts = np.empty(side * side)
        vals = np.empty(side * side)
        all_views = np.arange(num_sources)
        ranked = np.empty(num_sources, np.int64)
        full = np.empty(num_sources)
        for c in range(width):
            u = c + 0.5
            v = r + 0.5
            rx = (u - kref[2]) / kref[0]
            ry = (v - kref[3]) / kref[1]
            n, rmean, rvar = _window(ref, r, c, radius, step, inv_2ss, inv_2sc, du, dv, wts, vals)
            _view_costs(depth[r, c], normal[r, c, 0], normal[r, c, 1], normal[r, c, 2], u, v, rx, ry, kref, srcs,
                        src_size, geo, n, du, dv, wts, vals, rmean, rvar, iparams, fparams, src_depths, all_views,
                        num_sources, full)
            out[r, c] = _rank_views(full, num_sources, m, iparams[2], ranked, views, r, c)
    return out, views


@njit(cache=True, fastmath=True, parallel=True)
def consistent_views(ref, srcs, src_size, geo, kref, depth, normal, iparams, fparams, src_depths, filter_params):
    """Per pixel, the number `[H, W]` int32 of source views that agree with its plane (COLMAP's filter).

    `filter_params` = (min_ncc, min_triangulation_angle in radians, geom_max_cost in pixels). A view agrees when
    the triangulation angle at the point is at least the minimum, the normal faces the source camera, the NCC is
    at least `min_ncc` and, in the geometric pass, the forward-backward reprojection error is at most
    `geom_max_cost`. Pixels without a depth get 0.
    """
    height, width = ref.shape
    radius, step = iparams[0], iparams[1]
    inv_2ss = 1.0 / (2.0 * fparams[0] * fparams[0])
    inv_2sc = 1.0 / (2.0 * fparams[1] * fparams[1])
    side = (2 * radius) // step + 1
    cos_min_angle = math.cos(filter_params[1])
    geometric = iparams[3] != 0
    out = np.zeros((height, width), np.int32)
    for r in prange(height):
        du = np.empty(side * side)
        dv = np.empty(side * side)
        wts = np.empty(side * side)
        vals = np.empty(side * side)
        for c in range(width):
            d = depth[r, c]
            nx, ny, nz = normal[r, c, 0], normal[r, c, 1], normal[r, c, 2]
            u = c + 0.5
            v = r + 0.5
            rx = (u - kref[2]) / kref[0]
            ry = (v - kref[3]) / kref[1]
            p = d * (nx * rx + ny * ry + nz)
            if not (d > 0.0 and p < 0.0):
                continue
            n, rmean, rvar = _window(ref, r, c, radius, step, inv_2ss, inv_2sc, du, dv, wts, vals)
            q0 = nx / (kref[0] * p)
            q1 = ny / (kref[1] * p)
            q2 = (nz - nx * kref[2] / kref[0] - ny * kref[3] / kref[1]) / p
            x, y, z = d * rx, d * ry, d
            count = 0
            for s in range(geo.shape[0]):
                ox, oy, oz = geo[s, 28] - x, geo[s, 29] - y, geo[s, 30] - z
                cos_angle = -(ox * x + oy * y + oz * z) / (math.sqrt(ox * ox + oy * oy + oz * oz) * math.sqrt(x * x + y * y + z * z))
                if cos_angle > cos_min_angle or ox * nx + oy * ny + oz * nz <= 0.0:
                    continue
                photo = _view_cost(s, u, v, q0, q1, q2, srcs, src_size, geo, n, du, dv, wts, vals, rmean, rvar)
                if 1.0 - photo < filter_params[0]:
                    continue
                if geometric and _geom_cost(s, u, v, d, rx, ry, kref, geo, src_size, src_depths, fparams[6]) > filter_params[2]:
                    continue
                count += 1
            out[r, c] = count
    return out
