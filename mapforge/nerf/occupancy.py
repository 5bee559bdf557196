"""Occupancy grid and ray marching that only keeps samples in occupied cells (instant-ngp, Müller et al. 2022)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mapforge.nerf.rays import ray_aabb_intersect


@dataclass
class PackedSamples:
    """Samples of many rays in flat tensors, ordered by ray then by distance.

    `ray_indices [M]` (int64, sorted), interval `starts [M]` and `ends [M]` along the ray; the sample point is the
    interval's midpoint.
    """

    ray_indices: torch.Tensor
    starts: torch.Tensor
    ends: torch.Tensor

    @property
    def midpoints(self) -> torch.Tensor:
        return 0.5 * (self.starts + self.ends)

    @property
    def deltas(self) -> torch.Tensor:
        return self.ends - self.starts

    def __len__(self) -> int:
        return int(self.ray_indices.shape[0])


class OccupancyGrid:
    """A `resolution^3` grid over `aabb [2, 3]` of EMA densities and the occupancy bits derived from them.

    `update` evaluates the density at one random point in each of a set of cells and sets the cell's value to
    `max(decay * old, new)` (every cell decays each update, as instant-ngp); a cell is occupied when its value
    times `step_size` (an opacity-like optical thickness) exceeds `threshold`, or exceeds the mean over the grid
    if that is lower. Before the first update every cell is occupied.
    """

    def __init__(self, aabb: torch.Tensor, resolution: int = 128, device: torch.device | str = "cpu"):
        self.aabb = torch.as_tensor(aabb, dtype=torch.float32, device=device).reshape(2, 3)
        self.resolution = resolution
        cells = resolution**3
        self.density = torch.zeros(cells, device=device)
        self.occupied = torch.ones(cells, dtype=torch.bool, device=device)
        self.updated = False

    @property
    def cell_size(self) -> torch.Tensor:
        return (self.aabb[1] - self.aabb[0]) / self.resolution

    def state_dict(self) -> dict:
        return {"aabb": self.aabb, "resolution": self.resolution, "density": self.density, "occupied": self.occupied,
                "updated": self.updated}

    def load_state_dict(self, state: dict) -> None:
        self.aabb = state["aabb"].to(self.aabb.device)
        self.resolution = int(state["resolution"])
        self.density = state["density"].to(self.aabb.device)
        self.occupied = state["occupied"].to(self.aabb.device)
        self.updated = bool(state["updated"])

    def cell_index(self, points: torch.Tensor) -> torch.Tensor:
        """Linear cell index `[N]` of `points [N, 3]` (clamped into the grid)."""
        cell = ((points - self.aabb[0]) / self.cell_size).long().clamp_(0, self.resolution - 1)
        return (cell[:, 0] * self.resolution + cell[:, 1]) * self.resolution + cell[:, 2]

    def query(self, points: torch.Tensor) -> torch.Tensor:
        """Occupancy `[N]` bool of `points [N, 3]`; points outside the box are empty."""
        inside = ((points >= self.aabb[0]) & (points <= self.aabb[1])).all(-1)
        return self.occupied[self.cell_index(points)] & inside

    @torch.no_grad()
    def update(
        self,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        step_size: float,
        fraction: float = 1.0,
        decay: float = 0.95,
        threshold: float = 0.01,
        chunk: int = 1 << 18,
        generator: torch.Generator | None = None,
    ) -> None:
        """Re-evaluate `fraction` of the cells (all of them on the first update), half drawn uniformly and half
        among the occupied ones (instant-ngp's split), with `density_fn(points [N, 3]) -> [N]`."""
        device = self.density.device
        cells = self.density.shape[0]
        if not self.updated or fraction >= 1.0:
            index = torch.arange(cells, device=device)
        else:
            count = max(1, int(cells * fraction / 2))
            uniform = torch.randint(cells, (count,), device=device, generator=generator)
            occupied = torch.nonzero(self.occupied).squeeze(1)
            if occupied.numel():
                pick = torch.randint(occupied.numel(), (count,), device=device, generator=generator)
                index = torch.cat([uniform, occupied[pick]])
            else:
                index = uniform
        res = self.resolution
        coords = torch.stack([index // (res * res), (index // res) % res, index % res], -1).float()
        jitter = torch.rand(coords.shape, device=device, generator=generator)
        points = self.aabb[0] + (coords + jitter) * self.cell_size
        new = torch.cat([density_fn(points[i : i + chunk]).float() for i in range(0, len(points), chunk)])
        if self.updated:
            self.density *= decay
            self.density.scatter_reduce_(0, index, new, reduce="amax")
        else:
            self.density.index_copy_(0, index, new)
        self.updated = True
        mean_density = self.density.mean().item()
        self.occupied = self.density > min(threshold / step_size, mean_density)

    @torch.no_grad()
    def march(
        self,
        origins: torch.Tensor,
        directions: torch.Tensor,
        step_size: float,
        near: float | torch.Tensor = 0.0,
        far: float | torch.Tensor = 1e10,
        perturb: bool = False,
        max_candidates: int = 1 << 23,
        generator: torch.Generator | None = None,
        backend: str = "auto",
    ) -> PackedSamples:
        """Fixed-step marching of rays `[R, 3]` (unit directions) through the box, keeping the intervals whose
        midpoints fall in occupied cells.

        Each ray steps from `max(near, box entry)` to `min(far, box exit)` in steps of `step_size` (with
        `perturb`, all of a ray's steps are shifted by one random fraction of a step, as instant-ngp does); the last
        interval is clipped at the exit. `backend`: "auto" (the numba kernel of `raymarch_cpu` on CPU, torch ops
        elsewhere), "numba" or "torch"; with torch ops, rays are processed in groups so that at most
        `max_candidates` candidate steps exist at once.
        """
        device = origins.device
        num_rays = origins.shape[0]
        t_enter, t_exit = ray_aabb_intersect(origins, directions, self.aabb)
        t_min = torch.maximum(t_enter, torch.as_tensor(near, dtype=origins.dtype, device=device))
        t_max = torch.minimum(t_exit, torch.as_tensor(far, dtype=origins.dtype, device=device))
        t_min = torch.broadcast_to(t_min, (num_rays,))
        t_max = torch.broadcast_to(t_max, (num_rays,))
        hit = t_max > t_min
        if perturb:
            t_min = t_min + torch.rand(num_rays, device=device, generator=generator) * step_size
        steps = torch.where(hit, torch.ceil((t_max - t_min) / step_size), torch.zeros_like(t_min)).clamp_min(0).long()
        if backend == "numba" or (backend == "auto" and device.type == "cpu"):
            from mapforge.nerf import raymarch_cpu

            arrays = [v.detach().float().contiguous().numpy() for v in (origins, directions, t_min, t_max)]
            aabb = self.aabb.cpu().numpy()
            ray_indices, starts, ends = raymarch_cpu.march(
                *arrays, steps.contiguous().numpy(), step_size, aabb[0], self.cell_size.cpu().numpy(), aabb[1],
                self.resolution, self.occupied.contiguous().numpy(),
            )
            return PackedSamples(torch.from_numpy(ray_indices), torch.from_numpy(starts), torch.from_numpy(ends))
        parts_i, parts_s, parts_e = [], [], []
        start = 0
        while start < num_rays:
            longest = int(steps[start:].max().item()) if start < num_rays else 0
            if longest == 0:
                break
            group = max(1, min(num_rays - start, max_candidates // longest))
            sl = slice(start, start + group)
            k = torch.arange(int(steps[sl].max().item()), device=device)
            starts = t_min[sl, None] + k * step_size  # [G, K]
            ends = torch.minimum(starts + step_size, t_max[sl, None])
            valid = k < steps[sl, None]
            mid = 0.5 * (starts + ends)
            points = origins[sl, None, :] + mid[..., None] * directions[sl, None, :]
            valid &= self.query(points.reshape(-1, 3)).view_as(valid)
            rows, cols = torch.nonzero(valid, as_tuple=True)
            parts_i.append(rows + start)
            parts_s.append(starts[rows, cols])
            parts_e.append(ends[rows, cols])
            start += group
        if not parts_i:
            empty = origins.new_zeros(0)
            return PackedSamples(torch.zeros(0, dtype=torch.long, device=device), empty, empty)
        return PackedSamples(torch.cat(parts_i), torch.cat(parts_s), torch.cat(parts_e))
