"""PatchMatch stereo in plain torch: the reference implementation and the path for CUDA (any device, any float).

Follows `rules` exactly, vectorised over the pixels of one checkerboard colour; the numba kernels in
`cpu_kernels` make the same choices from the same random numbers and are tested against this module. Pixels are
processed in chunks so memory stays bounded (`CHUNK` window samples per source at a time, on a GPU `GPU_CHUNK`:
fewer, larger launches).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mapforge.mvs.patchmatch import rules as R

CHUNK = 1 << 21
GPU_CHUNK = 1 << 25


@dataclass
class Problem:
    """The tensors of one reference view and its sources at one pyramid level (see `cpu_kernels` for shapes).

    `srcs` is a list of `[Hs, Ws]` images (sizes may differ), `src_depths` a list of `[Hs, Ws]` depth maps or
    None, `geo [S, 31]` and `kref [4]` in the compute dtype.
    """

    ref: torch.Tensor
    srcs: list[torch.Tensor]
    src_depths: list[torch.Tensor] | None
    geo: torch.Tensor
    kref: torch.Tensor


@dataclass
class Settings:
    """The scalar parameters of a sweep (`PatchMatchConfig` values at this level)."""

    window_radius: int
    window_step: int
    sigma_spatial: float
    sigma_color: float
    num_best_views: int
    num_scored_views: int
    depth_min: float
    depth_max: float
    geometric: bool
    geom_weight: float
    geom_max_cost: float
    perturbation: float = 1.0


@dataclass
class Windows:
    """Reference windows of `P` pixels: offsets `du, dv [P, N]`, normalised weights `[P, N]`, values `[P, N]`,
    weighted mean and variance `[P]`, pixel centres `u, v [P]` and rays `rx, ry [P]`."""

    du: torch.Tensor
    dv: torch.Tensor
    wts: torch.Tensor
    vals: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    rx: torch.Tensor
    ry: torch.Tensor


def windows(problem: Problem, rows: torch.Tensor, cols: torch.Tensor, s: Settings) -> Windows:
    """Bilateral windows of the pixels (rows, cols) `[P]`, offsets clamped to the image as in the kernels."""
    ref = problem.ref
    height, width = ref.shape
    dtype = problem.geo.dtype
    grid = torch.arange(-s.window_radius, s.window_radius + 1, s.window_step, device=ref.device)
    oy, ox = torch.meshgrid(grid, grid, indexing="ij")
    rr = (rows[:, None] + oy.reshape(1, -1)).clamp(0, height - 1)
    cc = (cols[:, None] + ox.reshape(1, -1)).clamp(0, width - 1)
    vals = ref[rr, cc].to(dtype)
    center = ref[rows, cols].to(dtype)[:, None]
    du, dv = (cc - cols[:, None]).to(dtype), (rr - rows[:, None]).to(dtype)
    w = torch.exp(-(du * du + dv * dv) / (2 * s.sigma_spatial**2) - (vals - center) ** 2 / (2 * s.sigma_color**2))
    w = w / w.sum(1, keepdim=True)
    mean = (w * vals).sum(1)
    var = (w * vals * vals).sum(1) - mean * mean
    u, v = cols.to(dtype) + 0.5, rows.to(dtype) + 0.5
    kref = problem.kref
    return Windows(du, dv, w, vals, mean, var, u, v, (u - kref[2]) / kref[0], (v - kref[3]) / kref[1])


def _take(win: Windows, index: torch.Tensor) -> Windows:
    return Windows(*(getattr(win, f)[index] for f in Windows.__dataclass_fields__))


def _bilinear(img: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples at array coordinates (already clamped to the image), as the kernels interpolate."""
    height, width = img.shape
    ix = sx.to(torch.int64).clamp(max=width - 2)
    iy = sy.to(torch.int64).clamp(max=height - 2)
    fx, fy = sx - ix, sy - iy
    flat = img.reshape(-1).to(sx.dtype)
    base = iy * width + ix
    a, b, c, d = flat[base], flat[base + 1], flat[base + width], flat[base + width + 1]
    top = a + fx * (b - a)
    bottom = c + fx * (d - c)
    return top + fy * (bottom - top)


def warp_positions(H: torch.Tensor, u: torch.Tensor, v: torch.Tensor, du: torch.Tensor, dv: torch.Tensor):
    """Where the window samples land in a source: homographies `H [P, C, 3, 3]`, window centres `u, v [P]` and
    offsets `du, dv [P, N]` -> array coordinates `sx, sy [P, C, N]` (pixel coordinate - 0.5, not clamped) and
    `valid [P, C]` (centre in front, |eps| below `MAX_DEPTH_CHANGE`); see `rules` for the expansion."""
    u, v = u[:, None], v[:, None]
    zc = H[..., 2, 0] * u + H[..., 2, 1] * v + H[..., 2, 2]
    iz = 1.0 / zc
    xc = (H[..., 0, 0] * u + H[..., 0, 1] * v + H[..., 0, 2]) * iz
    yc = (H[..., 1, 0] * u + H[..., 1, 1] * v + H[..., 1, 2]) * iz
    eu, ev = H[..., 2, 0] * iz, H[..., 2, 1] * iz
    span_u = torch.maximum(du[:, 0].abs(), du[:, -1].abs())[:, None]
    span_v = torch.maximum(dv[:, 0].abs(), dv[:, -1].abs())[:, None]
    valid = (zc > 0) & (eu.abs() * span_u + ev.abs() * span_v < R.MAX_DEPTH_CHANGE)
    ax, bx = (H[..., 0, 0] - xc * H[..., 2, 0]) * iz, (H[..., 0, 1] - xc * H[..., 2, 1]) * iz
    ay, by = (H[..., 1, 0] - yc * H[..., 2, 0]) * iz, (H[..., 1, 1] - yc * H[..., 2, 1]) * iz
    a, b = du[:, None, :], dv[:, None, :]
    e = eu[..., None] * a + ev[..., None] * b
    f = 1.0 - e + e * e
    sx = (xc - 0.5)[..., None] + (ax[..., None] * a + bx[..., None] * b) * f
    sy = (yc - 0.5)[..., None] + (ay[..., None] * a + by[..., None] * b) * f
    return sx, sy, valid, xc, yc


def _photometric(problem: Problem, win: Windows, q: torch.Tensor, s_index: int) -> torch.Tensor:
    """`[P, C]` photometric cost in source `s_index` of planes `q [P, C, 3]` (see `rules.source_geometry`)."""
    g = problem.geo[s_index]
    img = problem.srcs[s_index]
    height, width = img.shape
    H = g[0:9].reshape(3, 3) + g[9:12].view(3, 1) * q[:, :, None, :]  # [P, C, 3, 3]
    sx, sy, valid, xc, yc = warp_positions(H, win.u, win.v, win.du, win.dv)
    valid &= (xc >= 0) & (yc >= 0) & (xc <= width) & (yc <= height)
    sx = torch.where(valid[..., None], sx.clamp(0.0, width - 1.0), torch.zeros_like(sx))
    sy = torch.where(valid[..., None], sy.clamp(0.0, height - 1.0), torch.zeros_like(sy))
    value = _bilinear(img, sx, sy)
    w = win.wts[:, None, :]
    s1 = (w * value).sum(-1)
    s2 = (w * value * value).sum(-1)
    sr = (w * value * win.vals[:, None, :]).sum(-1)
    svar = s2 - s1 * s1
    rvar = win.var[:, None]
    ok = valid & (svar >= R.MIN_VARIANCE) & (rvar >= R.MIN_VARIANCE)
    ncc = (sr - win.mean[:, None] * s1) / torch.sqrt((rvar * svar).clamp_min(1e-30))
    cost = (1.0 - ncc).clamp(0.0, R.MAX_COST)
    return torch.where(ok, cost, torch.full_like(cost, R.MAX_COST))


def _geometric(problem: Problem, win: Windows, depth: torch.Tensor, s_index: int, max_cost: float) -> torch.Tensor:
    """`[P, C]` forward-backward reprojection error through source `s_index`'s depth map, capped."""
    g = problem.geo[s_index]
    src_depth = problem.src_depths[s_index]
    height, width = src_depth.shape
    Rm, t, k = g[12:21].reshape(3, 3), g[21:24], g[24:28]
    point = torch.stack([depth * win.rx[:, None], depth * win.ry[:, None], depth], -1)  # [P, C, 3]
    xs = point @ Rm.T + t
    zs = xs[..., 2]
    us = k[0] * xs[..., 0] / zs + k[2]
    vs = k[1] * xs[..., 1] / zs + k[3]
    inside = (zs > 0) & (us >= 0) & (vs >= 0) & (us < width) & (vs < height)
    col = torch.where(inside, us, torch.zeros_like(us)).to(torch.int64)
    row = torch.where(inside, vs, torch.zeros_like(vs)).to(torch.int64)
    ds = src_depth[row, col].to(depth.dtype)
    inside &= ds > 0
    back = torch.stack([ds * (us - k[2]) / k[0], ds * (vs - k[3]) / k[1], ds], -1) - t
    xr = back @ Rm  # R^T applied to row vectors
    inside &= xr[..., 2] > 0
    kref = problem.kref
    du = win.u[:, None] - (kref[0] * xr[..., 0] / xr[..., 2] + kref[2])
    dv = win.v[:, None] - (kref[1] * xr[..., 1] / xr[..., 2] + kref[3])
    error = torch.sqrt(du * du + dv * dv).clamp(max=max_cost)
    return torch.where(inside, error, torch.full_like(error, max_cost))


def view_costs(problem: Problem, win: Windows, depth: torch.Tensor, normal: torch.Tensor, s: Settings) -> torch.Tensor:
    """`[P, C, S]` cost of the planes (depth `[P, C]`, normal `[P, C, 3]`) in every source view."""
    kref = problem.kref
    p = depth * (normal[..., 0] * win.rx[:, None] + normal[..., 1] * win.ry[:, None] + normal[..., 2])
    usable = p < 0
    p = torch.where(usable, p, -torch.ones_like(p))
    q = torch.stack(
        [
            normal[..., 0] / (kref[0] * p),
            normal[..., 1] / (kref[1] * p),
            (normal[..., 2] - normal[..., 0] * kref[2] / kref[0] - normal[..., 1] * kref[3] / kref[1]) / p,
        ],
        -1,
    )
    costs = []
    for s_index in range(len(problem.srcs)):
        cost = _photometric(problem, win, q, s_index)
        if s.geometric:
            cost = cost + s.geom_weight * _geometric(problem, win, depth, s_index, s.geom_max_cost)
        costs.append(cost)
    costs = torch.stack(costs, -1)
    return torch.where(usable[..., None], costs, torch.full_like(costs, R.MAX_COST))


def _chunks(count: int, per_item: int, device: torch.device):
    step = max(1, (CHUNK if device.type == "cpu" else GPU_CHUNK) // max(per_item, 1))
    for start in range(0, count, step):
        yield slice(start, min(start + step, count))


def _mean_of_smallest(costs: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, costs.shape[-1])
    return costs.sort(-1).values[..., :k].mean(-1)


def _ranked(costs: torch.Tensor, s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, from view costs `[P, S]`: the mean of the `num_best_views` lowest and the `num_scored_views`
    best views `[P, M]` (lowest first, the lower index on ties)."""
    m = min(s.num_scored_views, costs.shape[1])
    views = costs.sort(dim=-1, stable=True).indices[:, :m]
    return _mean_of_smallest(costs.gather(1, views), s.num_best_views), views


def plane_costs(problem: Problem, depth: torch.Tensor, normal: torch.Tensor, s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel's plane scored in every view: its cost `[H, W]` and its scored views `[H, W, M]` int32."""
    height, width = depth.shape
    rows, cols = torch.meshgrid(torch.arange(height, device=depth.device), torch.arange(width, device=depth.device), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    m = min(s.num_scored_views, len(problem.srcs))
    out = torch.empty(height * width, dtype=depth.dtype, device=depth.device)
    views = torch.empty((height * width, m), dtype=torch.int32, device=depth.device)
    n = len(torch.arange(-s.window_radius, s.window_radius + 1, s.window_step)) ** 2
    for part in _chunks(len(rows), n, depth.device):
        win = windows(problem, rows[part], cols[part], s)
        d = depth[rows[part], cols[part]].to(problem.geo.dtype)[:, None]
        nrm = normal[rows[part], cols[part]].to(problem.geo.dtype)[:, None]
        cost, best = _ranked(view_costs(problem, win, d, nrm, s)[:, 0], s)
        out[part], views[part] = cost.to(depth.dtype), best.to(torch.int32)
    return out.reshape(height, width), views.reshape(height, width, m)

def _region_candidates(depth, normal, cost, rows, cols, win: Windows, problem: Problem, s: Settings):
    """The 8 propagation candidates `(depth [P, 8], normal [P, 8, 3], usable [P, 8])` of pixels (rows, cols)."""
    height, width = cost.shape
    offsets = torch.as_tensor(R.REGION_OFFSETS, device=cost.device, dtype=torch.int64)  # [8, 11, 2]
    counts = torch.as_tensor(R.REGION_COUNTS, device=cost.device, dtype=torch.int64)
    rr = rows[:, None, None] + offsets[None, :, :, 0]  # [P, 8, 11]
    cc = cols[:, None, None] + offsets[None, :, :, 1]
    inside = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
    inside &= torch.arange(offsets.shape[1], device=cost.device)[None, None, :] < counts[None, :, None]
    rr_c, cc_c = rr.clamp(0, height - 1), cc.clamp(0, width - 1)
    ncost = torch.where(inside, cost[rr_c, cc_c].to(problem.geo.dtype), torch.full_like(rr_c, float("inf"), dtype=problem.geo.dtype))
    pick = ncost.argmin(-1, keepdim=True)
    found = torch.isfinite(ncost.gather(-1, pick)[..., 0])
    pr, pc = rr_c.gather(-1, pick)[..., 0], cc_c.gather(-1, pick)[..., 0]
    dtype = problem.geo.dtype
    n = normal[pr, pc].to(dtype)  # [P, 8, 3]
    kref = problem.kref
    nrx = (pc.to(dtype) + 0.5 - kref[2]) / kref[0]
    nry = (pr.to(dtype) + 0.5 - kref[3]) / kref[1]
    denom = n[..., 0] * win.rx[:, None] + n[..., 1] * win.ry[:, None] + n[..., 2]
    ray_norm = torch.sqrt(win.rx * win.rx + win.ry * win.ry + 1.0)[:, None]
    facing = denom < -R.MIN_COS_VIEW * ray_norm
    safe = torch.where(facing, denom, -torch.ones_like(denom))
    d = depth[pr, pc].to(dtype) * (n[..., 0] * nrx + n[..., 1] * nry + n[..., 2]) / safe
    usable = found & facing & (d >= s.depth_min) & (d <= s.depth_max)
    return d, n, usable


def random_planes(rnd: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, depth_min: float, depth_max: float):
    """Random planes `(depth [...], normal [..., 3])` from uniforms `rnd [..., >= 3]` on rays (rx, ry, 1)."""
    rnd = rnd.to(rx.dtype)
    depth = 1.0 / (1.0 / depth_max + rnd[..., 0] * (1.0 / depth_min - 1.0 / depth_max))
    z = 2.0 * rnd[..., 1] - 1.0
    radius = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    phi = 2.0 * torch.pi * rnd[..., 2]
    normal = torch.stack([radius * torch.cos(phi), radius * torch.sin(phi), z], -1)
    away = normal[..., 0] * rx + normal[..., 1] * ry + normal[..., 2] > 0
    return depth, torch.where(away[..., None], -normal, normal)


def _drop_repeats(cur_d, cur_n, cand_d, cand_n, usable) -> torch.Tensor:
    """`usable [P, 8]` without the candidates that repeat a plane tried before them (see `rules`), in the kernels'
    order: the pixel's own plane first, then each region's that was tried."""
    seen = [(cur_d, cur_n, torch.ones_like(usable[:, 0]))]
    usable = usable.clone()
    for g in range(cand_d.shape[1]):
        d, n = cand_d[:, g], cand_n[:, g]
        repeat = torch.zeros_like(usable[:, g])
        for seen_d, seen_n, tried in seen:
            repeat |= tried & (n == seen_n).all(-1) & ((d - seen_d).abs() <= R.SAME_DEPTH * seen_d)
        usable[:, g] &= ~repeat
        seen.append((d, n, usable[:, g]))
    return usable


def _refinement_candidates(best_d, best_n, rnd, win: Windows, s: Settings):
    """The 4 refinement candidates `(depth [P, 4], normal [P, 4, 3])` around the best planes, from `rnd [P, 7]`."""
    dtype = best_d.dtype
    rnd = rnd.to(dtype)
    d_prt = (best_d * (1.0 + s.perturbation * (2.0 * rnd[:, 3] - 1.0))).clamp(s.depth_min, s.depth_max)
    ray = torch.stack([win.rx, win.ry, torch.ones_like(win.rx)], -1)
    ray_norm = ray.norm(dim=-1)
    moved = best_n + s.perturbation * (2.0 * rnd[:, 4:7] - 1.0)
    norm = moved.norm(dim=-1, keepdim=True)
    moved = moved / norm.clamp_min(1e-300)
    keep = (norm[:, 0] > 1e-12) & ((moved * ray).sum(-1) < -R.MIN_COS_VIEW * ray_norm)
    n_prt = torch.where(keep[:, None], moved, best_n)
    d_rnd, n_rnd = random_planes(rnd, win.rx, win.ry, s.depth_min, s.depth_max)
    depths = torch.stack([d_prt, best_d, d_prt, d_rnd], 1)
    normals = torch.stack([best_n, n_prt, n_prt, n_rnd], 1)
    return depths, normals


def _pick(best, best_d, best_n, cand_cost, cand_d, cand_n):
    """The first plane of lowest cost among the current best and the candidates (the kernels' strict `<`)."""
    costs = torch.cat([best[:, None], cand_cost], 1)
    choice = costs.argmin(1)
    depths = torch.cat([best_d[:, None], cand_d], 1)
    normals = torch.cat([best_n[:, None], cand_n], 1)
    index = torch.arange(len(choice), device=choice.device)
    return costs[index, choice], depths[index, choice], normals[index, choice]


def _scored(costs: torch.Tensor, views: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the `k` lowest costs `[P, C, S]` among each pixel's scored views `[P, M]`: `[P, C]`."""
    chosen = costs.gather(2, views[:, None, :].expand(-1, costs.shape[1], -1))
    return _mean_of_smallest(chosen, k)


def sweep(colour: int, problem: Problem, depth, normal, cost, views, rnd: torch.Tensor, s: Settings) -> None:
    """One half sweep in place over the pixels of `colour` (`rnd [H, W, 7]`, `views [H, W, M]`); see `rules`."""
    height, width = cost.shape
    grid_r, grid_c = torch.meshgrid(torch.arange(height, device=cost.device), torch.arange(width, device=cost.device), indexing="ij")
    mask = ((grid_r + grid_c) % 2) == colour
    rows, cols = grid_r[mask], grid_c[mask]
    n = len(torch.arange(-s.window_radius, s.window_radius + 1, s.window_step)) ** 2
    dtype = problem.geo.dtype
    updates = []
    for part in _chunks(len(rows), n * 12, cost.device):
        r, c = rows[part], cols[part]
        win = windows(problem, r, c, s)
        start_d, start_n = depth[r, c].to(dtype), normal[r, c].to(dtype)
        scored = views[r, c].long()
        best = cost[r, c].to(dtype)
        cand_d, cand_n, usable = _region_candidates(depth, normal, cost, r, c, win, problem, s)
        usable = _drop_repeats(start_d, start_n, cand_d, cand_n, usable)
        cand_cost = _scored(view_costs(problem, win, cand_d, cand_n, s), scored, s.num_best_views)
        cand_cost = torch.where(usable, cand_cost, torch.full_like(cand_cost, float("inf")))
        best, best_d, best_n = _pick(best, start_d, start_n, cand_cost, cand_d, cand_n)
        ref_d, ref_n = _refinement_candidates(best_d, best_n, rnd[r, c], win, s)
        ref_cost = _scored(view_costs(problem, win, ref_d, ref_n, s), scored, s.num_best_views)
        best, best_d, best_n = _pick(best, best_d, best_n, ref_cost, ref_d, ref_n)
        # a new plane: stored, then scored (as stored) in every view for its best views and their cost
        changed = (best_d != start_d) | (best_n != start_n).any(-1)
        best_d = best_d.to(depth.dtype).to(dtype)
        best_n = best_n.to(normal.dtype).to(dtype)
        if changed.any():
            index = changed.nonzero()[:, 0]
            sub = _take(win, index)
            new_cost, new_views = _ranked(view_costs(problem, sub, best_d[index, None], best_n[index, None], s)[:, 0], s)
            best = best.clone()
            best[index] = new_cost
            scored = scored.clone()
            scored[index] = new_views
        updates.append((r, c, best, best_d, best_n, scored))
    for r, c, best, best_d, best_n, scored in updates:
        depth[r, c] = best_d.to(depth.dtype)
        normal[r, c] = best_n.to(normal.dtype)
        cost[r, c] = best.to(cost.dtype)
        views[r, c] = scored.to(views.dtype)


def consistent_views(problem: Problem, depth, normal, s: Settings, min_ncc: float, min_angle: float, geom_max: float) -> torch.Tensor:
    """Per pixel, the number `[H, W]` int32 of sources that agree with its plane (as `cpu_kernels.consistent_views`)."""
    height, width = depth.shape
    dtype = problem.geo.dtype
    rows, cols = torch.meshgrid(torch.arange(height, device=depth.device), torch.arange(width, device=depth.device), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    out = torch.zeros(height * width, dtype=torch.int32, device=depth.device)
    n = len(torch.arange(-s.window_radius, s.window_radius + 1, s.window_step)) ** 2
    photo_only = Settings(**{**s.__dict__, "geometric": False})
    for part in _chunks(len(rows), n, depth.device):
        r, c = rows[part], cols[part]
        win = windows(problem, r, c, s)
        d = depth[r, c].to(dtype)
        nrm = normal[r, c].to(dtype)
        point = torch.stack([d * win.rx, d * win.ry, d], -1)  # [P, 3]
        to_src = problem.geo[:, 28:31][None] - point[:, None]  # [P, S, 3]
        cos_angle = -(to_src * point[:, None]).sum(-1) / (to_src.norm(dim=-1) * point.norm(dim=-1)[:, None])
        agree = (cos_angle <= torch.cos(torch.tensor(min_angle, dtype=dtype))) & ((to_src * nrm[:, None]).sum(-1) > 0)
        photo = view_costs(problem, win, d[:, None], nrm[:, None], photo_only)[:, 0]
        agree &= 1.0 - photo >= min_ncc
        if s.geometric:
            geo = torch.stack([_geometric(problem, win, d[:, None], k, s.geom_max_cost)[:, 0] for k in range(len(problem.srcs))], -1)
            agree &= geo <= geom_max
        has_plane = (d > 0) & (d * (nrm[:, 0] * win.rx + nrm[:, 1] * win.ry + nrm[:, 2]) < 0)
        out[part] = torch.where(has_plane, agree.sum(-1), torch.zeros_like(agree.sum(-1))).to(torch.int32)
    return out.reshape(height, width)
