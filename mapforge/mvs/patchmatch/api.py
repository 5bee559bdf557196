"""`patch_match`: a depth and a normal per pixel of one reference view, from its source views.

Coarse to fine: the photometric pass starts from random planes on the coarsest level of an image pyramid, runs
red-black sweeps there, and carries each plane up to the next level (the same 3D plane, read on the finer rays)
until the full resolution. The geometric pass starts from given maps (the photometric ones) at full resolution and
adds COLMAP's geometric-consistency term against the sources' depth maps. Both passes end, when asked, with
COLMAP's filter. The sweeps themselves are `torch_ref` (any device, the reference) or the numba `cpu_kernels`
(CPU tensors), chosen by `backend`; both follow `rules` and make the same choices from the same random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mapforge.errors import InputError, check_settings
from mapforge.geometry.transforms import Rigid3
from mapforge.mvs.patchmatch import rules, torch_ref
from mapforge.mvs.patchmatch.torch_ref import Problem, Settings

BACKENDS = ("auto", "torch", "cpu")


@dataclass
class PatchMatchConfig:
    """PatchMatch stereo settings. COLMAP's `PatchMatchOptions` are the reference where they exist.

    Attributes:
        window_radius: half size of the matching window (COLMAP 5).
        window_step: sample every n-th row and column of the window (COLMAP 1; 2 as in Gipuma and ACMH, which
            keeps the window's extent and costs a third of the samples).
        sigma_spatial: spatial sigma of the bilateral weights in pixels; None = `window_radius` (COLMAP).
        sigma_color: colour sigma of the bilateral weights on [0, 1] grey values (COLMAP 0.2).
        num_best_views: the cost of a plane is the mean of its this many best view costs (Gipuma's top-k; 2: on
            the built-in scene at 640x480 with 10 sources, 2 of 3 scored views match 3 of 4 in accuracy at 2/3 of
            the time).
        num_scored_views: candidates are scored in the views where the pixel's plane scores best (3; see
            `rules`).
        num_levels: pyramid levels of the photometric pass, each half the size of the next (3: 1/4, 1/2, 1).
        min_level_size: the coarsest level's longer side is kept at least this large (pixels).
        iterations: sweeps (each over both colours) per level, coarsest first; the last entry repeats for
            further levels (COLMAP runs 5 at one level; coarse levels are cheap, the full one is not: (5, 3, 1)
            is as accurate as (5, 3, 2) on the built-in scene within 0.6% of pixels, at 70% of the time).
        geom_iterations: sweeps of the geometric pass at full resolution (COLMAP runs 5; from the photometric maps
            one is enough: on the built-in scene 2 change the fused F-score by 0.0006 at 1.8 times the time).
        perturbation: refinement perturbation of the first sweep from random planes, halved every sweep (COLMAP
            starts at 1 and halves per iteration).
        level_perturbation: the same at finer levels and in the geometric pass, whose planes are already close.
        geom_consistency_regularizer, geom_consistency_max_cost: weight and cap (pixels) of the geometric term
            (COLMAP 0.3 and 3).
        filter_min_ncc, filter_min_triangulation_angle, filter_min_num_consistent,
        filter_geom_consistency_max_cost: COLMAP's filter (0.1, 3 degrees, 2 views, 1 pixel): a pixel keeps its
            depth when at least `filter_min_num_consistent` sources agree with it.
    """

    window_radius: int = 5
    window_step: int = 2
    sigma_spatial: float | None = None
    sigma_color: float = 0.2
    num_best_views: int = 2
    num_scored_views: int = 3
    num_levels: int = 3
    min_level_size: int = 160
    iterations: tuple[int, ...] = (5, 3, 1)
    geom_iterations: int = 1
    perturbation: float = 1.0
    level_perturbation: float = 0.125
    geom_consistency_regularizer: float = 0.3
    geom_consistency_max_cost: float = 3.0
    filter_min_ncc: float = 0.1
    filter_min_triangulation_angle: float = 3.0
    filter_min_num_consistent: int = 2
    filter_geom_consistency_max_cost: float = 1.0

    def __post_init__(self) -> None:
        self.iterations = tuple(int(i) for i in self.iterations)
        checks = {
            "window_radius": self.window_radius >= 1,
            "window_step": 1 <= self.window_step <= self.window_radius,
            "sigma_color": self.sigma_color > 0,
            "num_best_views": self.num_best_views >= 1,
            "num_scored_views": self.num_scored_views >= self.num_best_views,
            "num_levels": self.num_levels >= 1,
            "iterations": len(self.iterations) >= 1 and all(i >= 0 for i in self.iterations),
            "geom_iterations": self.geom_iterations >= 0,
            "filter_min_num_consistent": self.filter_min_num_consistent >= 0,
        }
        if self.sigma_spatial is not None:
            checks["sigma_spatial"] = self.sigma_spatial > 0
        check_settings("PatchMatch", checks)


@dataclass
class StereoView:
    """One view: `image [H, W]` float32 grey in [0, 1] (torch, on the compute device), pinhole `K [3, 3]`,
    `cam_from_world`, and for the geometric pass its `depth [H, W]` map (0 = none)."""

    image: torch.Tensor
    K: np.ndarray
    cam_from_world: Rigid3
    depth: torch.Tensor | None = None


@dataclass
class DepthNormal:
    """Maps of one view: `depth [H, W]` float32 z-depth (0 where filtered), `normal [H, W, 3]` float32 unit normals
    in the camera frame facing the camera (0 where filtered), `cost [H, W]` the aggregated cost, and
    `consistent [H, W]` int32 the number of agreeing sources (None when not filtered)."""

    depth: torch.Tensor
    normal: torch.Tensor
    cost: torch.Tensor
    consistent: torch.Tensor | None = None


@dataclass
class _Level:
    problem: Problem
    arrays: object | None  # cpu_backend.Arrays for the numba backend
    K: np.ndarray
    shape: tuple[int, int]


@dataclass
class _Run:
    config: PatchMatchConfig
    backend: str
    dtype: torch.dtype
    generator: torch.Generator
    depth_range: tuple[float, float]
    progress: Callable[[], None] | None = None
    sweeps: int = field(default=0)


def _settings(run: _Run, geometric: bool, perturbation: float = 1.0) -> Settings:
    c = run.config
    return Settings(
        window_radius=c.window_radius, window_step=c.window_step, sigma_spatial=float(c.sigma_spatial or c.window_radius),
        sigma_color=c.sigma_color, num_best_views=c.num_best_views, num_scored_views=c.num_scored_views,
        depth_min=run.depth_range[0], depth_max=run.depth_range[1], geometric=geometric,
        geom_weight=c.geom_consistency_regularizer, geom_max_cost=c.geom_consistency_max_cost, perturbation=perturbation,
    )  # fmt: skip


def _resized(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape) == shape:
        return image
    return F.interpolate(image[None, None], size=shape, mode="area")[0, 0]


def _scaled_K(K: np.ndarray, from_shape: tuple[int, int], to_shape: tuple[int, int]) -> np.ndarray:
    sy, sx = to_shape[0] / from_shape[0], to_shape[1] / from_shape[1]
    return np.diag([sx, sy, 1.0]) @ np.asarray(K, np.float64)


def _level(ref: StereoView, sources: list[StereoView], scale: float, run: _Run, geometric: bool) -> _Level:
    """The problem at `scale` of the reference's size (sources scaled by the same factor)."""
    full = tuple(ref.image.shape)
    shape = (max(8, round(full[0] * scale)), max(8, round(full[1] * scale)))
    device = ref.image.device
    K_ref = _scaled_K(ref.K, full, shape)
    src_imgs, K_src, rotations, translations, depths = [], [], [], [], []
    for src in sources:
        src_full = tuple(src.image.shape)
        src_shape = (max(8, round(src_full[0] * scale)), max(8, round(src_full[1] * scale)))
        src_imgs.append(_resized(src.image, src_shape).contiguous())
        K_src.append(_scaled_K(src.K, src_full, src_shape))
        relative = src.cam_from_world * ref.cam_from_world.inverse()
        rotations.append(relative.rotation)
        translations.append(relative.translation)
        if geometric:
            depths.append(src.depth)
    geo = rules.source_geometry(K_ref, np.stack(K_src), np.stack(rotations), np.stack(translations))
    kref = np.array([K_ref[0, 0], K_ref[1, 1], K_ref[0, 2], K_ref[1, 2]])
    geo_dtype = torch.float64 if run.backend == "cpu" else run.dtype
    problem = Problem(
        ref=_resized(ref.image, shape).contiguous(), srcs=src_imgs, src_depths=depths if geometric else None,
        geo=torch.as_tensor(geo, dtype=geo_dtype, device=device), kref=torch.as_tensor(kref, dtype=geo_dtype, device=device),
    )  # fmt: skip
    arrays = None
    if run.backend == "cpu":
        from mapforge.mvs.patchmatch.cpu_backend import Arrays  # numba is imported only when this backend is used

        arrays = Arrays(problem)
    return _Level(problem, arrays, K_ref, shape)


def _rays(level: _Level, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = level.shape
    fx, fy, cx, cy = level.K[0, 0], level.K[1, 1], level.K[0, 2], level.K[1, 2]
    rx = (torch.arange(width, dtype=dtype, device=device) + 0.5 - cx) / fx
    ry = (torch.arange(height, dtype=dtype, device=device) + 0.5 - cy) / fy
    return rx[None, :].expand(height, width), ry[:, None].expand(height, width)


def _random_start(level: _Level, run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    device = level.problem.ref.device
    rnd = torch.rand((*level.shape, rules.NUM_RANDOM), generator=run.generator).to(device)
    rx, ry = _rays(level, run.dtype, device)
    depth, normal = torch_ref.random_planes(rnd, rx, ry, *run.depth_range)
    return depth.float().contiguous(), normal.float().contiguous()


def _carry_up(depth: torch.Tensor, normal: torch.Tensor, coarse: _Level, fine: _Level, run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    """Each fine pixel takes the plane of the coarse pixel it lies in, read on its own ray."""
    device = depth.device
    dtype = run.dtype
    (ch, cw), (fh, fw) = coarse.shape, fine.shape
    rows = ((torch.arange(fh, device=device, dtype=dtype) + 0.5) * ch / fh).long().clamp(max=ch - 1)
    cols = ((torch.arange(fw, device=device, dtype=dtype) + 0.5) * cw / fw).long().clamp(max=cw - 1)
    d = depth.to(dtype)[rows[:, None], cols[None, :]]
    n = normal.to(dtype)[rows[:, None], cols[None, :]]
    crx, cry = _rays(coarse, dtype, device)
    frx, fry = _rays(fine, dtype, device)
    offset = d * (n[..., 0] * crx[rows[:, None], cols[None, :]] + n[..., 1] * cry[rows[:, None], cols[None, :]] + n[..., 2])
    denom = n[..., 0] * frx + n[..., 1] * fry + n[..., 2]
    transferred = offset / torch.where(denom < 0, denom, -torch.ones_like(denom))
    low, high = run.depth_range
    ok = (denom < 0) & (transferred >= low) & (transferred <= high)
    return torch.where(ok, transferred, d).float().contiguous(), n.float().contiguous()


def _plane_costs(level: _Level, depth, normal, s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost `[H, W]` and scored views `[H, W, M]` of every pixel's plane."""
    if level.arrays is not None:
        from mapforge.mvs.patchmatch import cpu_backend

        cost, views = cpu_backend.plane_costs(level.arrays, depth, normal, s)
    else:
        cost, views = torch_ref.plane_costs(level.problem, depth, normal, s)
    return cost.float().contiguous(), views.contiguous()


def _sweeps(level: _Level, depth, normal, cost, views, run: _Run, count: int, start: float, geometric: bool) -> None:
    for iteration in range(count):
        for colour in (0, 1):
            s = _settings(run, geometric, start * 0.5 ** (iteration + colour / 2))
            rnd = torch.rand((*level.shape, rules.NUM_RANDOM), generator=run.generator).to(depth.device)
            if level.arrays is not None:
                from mapforge.mvs.patchmatch import cpu_backend

                cpu_backend.sweep(colour, level.arrays, depth, normal, cost, views, rnd, s)
            else:
                torch_ref.sweep(colour, level.problem, depth, normal, cost, views, rnd, s)
        if run.progress is not None:
            run.progress()


def _filtered(level: _Level, depth, normal, cost, run: _Run, geometric: bool) -> DepthNormal:
    c = run.config
    s = _settings(run, geometric)
    args = (c.filter_min_ncc, math.radians(c.filter_min_triangulation_angle), c.filter_geom_consistency_max_cost)
    if level.arrays is not None:
        from mapforge.mvs.patchmatch import cpu_backend

        consistent = cpu_backend.consistent_views(level.arrays, depth, normal, s, *args)
    else:
        consistent = torch_ref.consistent_views(level.problem, depth, normal, s, *args)
    keep = consistent >= c.filter_min_num_consistent
    return DepthNormal(depth * keep, normal * keep[..., None], cost, consistent)


def _check(ref: StereoView, sources: list[StereoView], depth_range, backend: str, geometric: bool, init) -> None:
    if backend not in BACKENDS:
        raise InputError(f"patch_match: backend must be one of {BACKENDS}, got {backend!r}")
    if not sources:
        raise InputError("patch_match: a reference view needs at least one source view")
    low, high = depth_range
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise InputError(f"patch_match: empty or invalid depth range [{low}, {high}]")
    if ref.image.ndim != 2 or min(ref.image.shape) < 8:
        raise InputError(f"patch_match: the reference image must be [H, W] with sides >= 8, got {list(ref.image.shape)}")
    if backend == "cpu" and ref.image.device.type != "cpu":
        raise InputError(f"patch_match: the 'cpu' backend needs CPU tensors, got {ref.image.device}")
    if geometric and (init is None or any(src.depth is None for src in sources)):
        raise InputError("patch_match: the geometric pass needs initial maps and a depth map for every source")


def patch_match(
    ref: StereoView,
    sources: list[StereoView],
    depth_range: tuple[float, float],
    config: PatchMatchConfig | None = None,
    init: DepthNormal | None = None,
    geometric: bool = False,
    filter: bool = True,
    backend: str = "auto",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[], None] | None = None,
) -> DepthNormal:
    """Depth and normal maps of `ref` from `sources`.

    Args:
        ref, sources: the views (images on the compute device; sources need `depth` when `geometric`).
        depth_range: (min, max) z-depth of the scene in the reference view; random planes are drawn inside it
            and propagated planes leave it never.
        config: `PatchMatchConfig` (defaults follow COLMAP).
        init: start maps at full resolution (required for the geometric pass); None starts from random planes
            on the coarsest pyramid level.
        geometric: add COLMAP's geometric-consistency term against the sources' depth maps.
        filter: end with COLMAP's filter (depth and normal 0 where too few sources agree).
        backend: "cpu" (numba kernels, CPU tensors), "torch" (the reference, any device), "auto" (cpu on CPU).
        seed: seeds the random planes and perturbations; results are deterministic for a given seed.
        dtype: the torch backend's arithmetic (float32 by default; the numba kernels always use float64).
        progress: called after every sweep (both colours).

    Returns:
        `DepthNormal` at the reference image's resolution.
    """
    config = config or PatchMatchConfig()
    _check(ref, sources, depth_range, backend, geometric, init)
    if backend == "auto":
        backend = "cpu" if ref.image.device.type == "cpu" else "torch"
    generator = torch.Generator().manual_seed(int(seed))
    run = _Run(config, backend, dtype, generator, (float(depth_range[0]), float(depth_range[1])), progress)
    if init is not None:
        level = _level(ref, sources, 1.0, run, geometric)
        depth, normal = init.depth.float().clone().contiguous(), init.normal.float().clone().contiguous()
        start, schedule, levels = config.level_perturbation, [config.geom_iterations if geometric else config.iterations[-1]], [level]
    else:
        count = num_levels(tuple(ref.image.shape), config)
        levels = [_level(ref, sources, 0.5 ** (count - 1 - k), run, geometric) for k in range(count)]
        schedule = [config.iterations[min(k, len(config.iterations) - 1)] for k in range(count)]
        depth, normal = _random_start(levels[0], run)
        start = config.perturbation
    for k, level in enumerate(levels):
        if k > 0:
            depth, normal = _carry_up(depth, normal, levels[k - 1], level, run)
            start = config.level_perturbation
        cost, views = _plane_costs(level, depth, normal, _settings(run, geometric))
        _sweeps(level, depth, normal, cost, views, run, schedule[k], start, geometric)
    if filter:
        return _filtered(levels[-1], depth, normal, cost, run, geometric)
    return DepthNormal(depth, normal, cost)


def num_levels(shape: tuple[int, int], config: PatchMatchConfig) -> int:
    """Pyramid levels for an image of `shape` (H, W): `config.num_levels`, fewer when the coarsest would be
    smaller than `config.min_level_size` on its longer side."""
    longest = max(shape)
    count = 1
    while count < config.num_levels and longest * 0.5**count >= config.min_level_size:
        count += 1
    return count


def num_sweeps(shape: tuple[int, int], config: PatchMatchConfig, geometric: bool) -> int:
    """How many times `patch_match` calls `progress` for an image of `shape`."""
    if geometric:
        return config.geom_iterations
    return sum(config.iterations[min(k, len(config.iterations) - 1)] for k in range(num_levels(shape, config)))
