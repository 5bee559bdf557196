from __future__ import annotations

import pytest
import torch

from mapforge.nerf.occupancy import OccupancyGrid
from mapforge.nerf.rays import ray_aabb_intersect
from mapforge.nerf.rendering import composite_packed, volume_render

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def _rays(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1) * 3
    targets = (torch.rand(n, 3, generator=generator) - 0.5) * 1.2
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    return origins, directions


def test_ray_aabb_intersection():
    origins = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    directions = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    enter, exit_ = ray_aabb_intersect(origins, directions, AABB)
    torch.testing.assert_close(enter[[0, 2]], torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(exit_[[0, 2]], torch.tensor([4.0, 1.0]))
    assert enter[1] > exit_[1]


def _blocky_density(resolution: int):
    """A density constant on each grid cell: 5 on a few boxes of cells, 0 elsewhere."""

    def density(points: torch.Tensor) -> torch.Tensor:
        cell = ((points - AABB[0]) / (2.0 / resolution)).floor()
        in_a = ((cell >= 2) & (cell <= 5)).all(-1)
        in_b = (cell[:, 0] >= 9) & (cell[:, 0] <= 11) & (cell[:, 1] <= 3)
        return torch.where(in_a | in_b, 5.0, 0.0)

    return density


def _dense_march(origins, directions, step):
    enter, exit_ = ray_aabb_intersect(origins, directions, AABB)
    enter = enter.clamp_min(0)
    k = torch.arange(int(((exit_ - enter).max() / step).ceil()))
    starts = enter[:, None] + k * step
    ends = torch.minimum(starts + step, exit_[:, None])
    valid = starts < exit_[:, None]
    return starts, ends, valid


def test_packed_marching_equals_dense_rendering():
    generator = torch.Generator().manual_seed(0)
    resolution, step = 16, 0.02
    density_fn = _blocky_density(resolution)
    grid = OccupancyGrid(AABB, resolution)
    grid.update(density_fn, step)
    assert 0 < grid.occupied.float().mean() < 0.2
    origins, directions = _rays(64, generator)

    def color_fn(points):
        return torch.sigmoid(points * 3)

    starts, ends, valid = _dense_march(origins, directions, step)
    mid = 0.5 * (starts + ends)
    points = origins[:, None] + mid[..., None] * directions[:, None]
    density = density_fn(points.reshape(-1, 3)).view(mid.shape) * valid
    dense = volume_render(density, color_fn(points), (ends - starts) * valid, mid, torch.ones(3))

    for g in (OccupancyGrid(AABB, resolution), grid):  # all cells occupied (never updated), then the skipping grid
        samples = g.march(origins, directions, step)
        p = origins[samples.ray_indices] + samples.midpoints[:, None] * directions[samples.ray_indices]
        packed = composite_packed(density_fn(p), color_fn(p), samples.deltas, samples.midpoints, samples.ray_indices,
                                  64, torch.ones(3))
        torch.testing.assert_close(packed.rgb, dense.rgb, atol=1e-5, rtol=0)
        torch.testing.assert_close(packed.depth, dense.depth, atol=1e-4, rtol=0)
        torch.testing.assert_close(packed.opacity, dense.opacity, atol=1e-5, rtol=0)
    full = OccupancyGrid(AABB, resolution).march(origins, directions, step)
    assert len(full) == int(valid.sum())
    assert len(samples) < 0.5 * len(full)  # the grid skipped the empty space
    assert (samples.ray_indices[1:] >= samples.ray_indices[:-1]).all()


def test_march_in_groups_and_with_jitter():
    generator = torch.Generator().manual_seed(1)
    origins, directions = _rays(50, generator)
    grid = OccupancyGrid(AABB, 8)
    whole = grid.march(origins, directions, 0.05)
    grouped = grid.march(origins, directions, 0.05, max_candidates=300)
    torch.testing.assert_close(whole.starts, grouped.starts)
    torch.testing.assert_close(whole.ray_indices, grouped.ray_indices)
    jittered = grid.march(origins, directions, 0.05, perturb=True, near=2.5, generator=generator)
    enter, exit_ = ray_aabb_intersect(origins, directions, AABB)
    assert (jittered.starts >= torch.maximum(enter, torch.tensor(2.5))[jittered.ray_indices] - 1e-5).all()
    assert (jittered.ends <= exit_[jittered.ray_indices] + 1e-5).all()


@pytest.mark.parametrize("resolution", [16, 18])
def test_march_kernel_matches_torch(resolution):
    # 18 cells a side: the kernel's coarse blocks of 4 cells do not tile the grid; the last rays run along axes
    generator = torch.Generator().manual_seed(2)
    origins, directions = _rays(200, generator)
    origins[-3:] = torch.tensor([[-3.0, -0.6, -0.55], [0.7, -3.0, -0.7], [-0.65, -0.6, 3.0]])
    directions[-3:] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    grid = OccupancyGrid(AABB, resolution)
    grid.update(_blocky_density(resolution), 0.02)
    near = torch.rand(200, generator=generator) * 2.5
    marched = [grid.march(origins, directions, 0.013, near=near, perturb=True,
                          generator=torch.Generator().manual_seed(4), backend=backend) for backend in ("numba", "torch")]
    assert len(marched[0]) > 1000
    for name in ("ray_indices", "starts", "ends"):
        torch.testing.assert_close(getattr(marched[0], name), getattr(marched[1], name), atol=0, rtol=0)


def test_grid_update_decays_and_thresholds():
    grid = OccupancyGrid(AABB, 4)
    grid.update(lambda p: torch.full((p.shape[0],), 10.0), step_size=0.01)
    assert grid.occupied.all()
    grid.update(lambda p: torch.zeros(p.shape[0]), step_size=0.01)
    torch.testing.assert_close(grid.density, torch.full((64,), 9.5))
    for _ in range(120):
        grid.update(lambda p: torch.zeros(p.shape[0]), step_size=0.01)
    assert not grid.occupied.any()
