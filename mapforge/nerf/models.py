"""Renderable models: the original NeRF (coarse + fine networks) and the fast hash-grid model with its
occupancy grid. Both render a batch of rays into a `RenderOutput` and give their training loss."""

from __future__ import annotations

import torch
from torch import nn

from mapforge.nerf.fields import FastField, NeRFField, truncated_exp
from mapforge.nerf.encodings import spherical_harmonics
from mapforge.nerf.occupancy import OccupancyGrid, PackedSamples
from mapforge.nerf.rendering import (
    RenderOutput,
    alive_samples,
    composite_packed,
    deltas_from_distances,
    exclusive_segment_cumsum,
    segment_sum,
    volume_render,
)
from mapforge.nerf.sampling import sample_pdf, stratified_samples


class NeRFModel(nn.Module):
    """Hierarchical NeRF (Mildenhall et al. 2020, sec. 5.2): `num_coarse` stratified samples through the coarse
    network, `num_fine` more drawn by inverse-transform sampling from the coarse weights, and the fine network
    evaluated on all `num_coarse + num_fine` sorted samples. Paper values: 64 and 128."""

    def __init__(self, num_coarse: int = 64, num_fine: int = 128, **field_args):
        super().__init__()
        self.num_coarse = num_coarse
        self.num_fine = num_fine
        self.coarse = NeRFField(**field_args)
        self.fine = NeRFField(**field_args) if num_fine > 0 else None

    def _render(self, field: NeRFField, origins, directions, t, background) -> RenderOutput:
        points = origins[:, None, :] + t[..., None] * directions[:, None, :]
        unit = nn.functional.normalize(directions, dim=-1)
        dirs = unit[:, None, :].expand_as(points)
        density, rgb = field(points.reshape(-1, 3), dirs.reshape(-1, 3))
        # Distances are in units of the direction vectors (not unit length for NDC rays): scale to metric length.
        deltas = deltas_from_distances(t) * directions.norm(dim=-1, keepdim=True)
        return volume_render(density.view(t.shape), rgb.view(*t.shape, 3), deltas, t, background)

    def render_rays(
        self,
        origins: torch.Tensor,
        directions: torch.Tensor,
        near: torch.Tensor,
        far: torch.Tensor,
        background: torch.Tensor | None = None,
        perturb: bool = False,
    ) -> dict[str, RenderOutput]:
        """Render rays `[R, 3]` between `near [R]` and `far [R]` -> {"coarse": ..., "fine": ...} (fine when
        `num_fine > 0`)."""
        t_coarse = stratified_samples(near, far, self.num_coarse, perturb)
        coarse = self._render(self.coarse, origins, directions, t_coarse, background)
        out = {"coarse": coarse}
        if self.fine is not None:
            mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
            t_fine = sample_pdf(mids, coarse.weights[:, 1:-1].detach(), self.num_fine, deterministic=not perturb)
            t_all = torch.sort(torch.cat([t_coarse, t_fine], -1), -1).values
            out["fine"] = self._render(self.fine, origins, directions, t_all, background)
        return out

    @staticmethod
    def final(outputs: dict[str, RenderOutput]) -> RenderOutput:
        return outputs.get("fine", outputs["coarse"])

    def density(self, positions: torch.Tensor) -> torch.Tensor:
        """Density `[N]` of the final (fine, else coarse) network at `positions [N, 3]`."""
        return (self.fine if self.fine is not None else self.coarse).density_at(positions)

    def color(self, positions: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Colour `[N, 3]` seen along unit `directions [N, 3]` at `positions [N, 3]` (final network)."""
        return (self.fine if self.fine is not None else self.coarse)(positions, directions)[1]

    @staticmethod
    def loss(outputs: dict[str, RenderOutput], target: torch.Tensor) -> torch.Tensor:
        """The paper's loss: squared error of the coarse and of the fine colours, summed."""
        return sum(torch.mean((o.rgb - target) ** 2) for o in outputs.values())


class FastNeRFModel(nn.Module):
    """instant-ngp-style model: a `FastField` plus an `OccupancyGrid` over the same box; rays are marched with
    a fixed step of `box diagonal / render_steps` (instant-ngp: 1024 steps across the unit cube's diagonal)
    and only samples in occupied cells are evaluated, packed and composited per ray.

    When rendering views (`early_stop`), a ray stops once its transmittance falls below `min_transmittance`
    (instant-ngp's 1e-4), samples are taken in windows of `first_window` then doubling, and colours are computed
    only where a sample's weight reaches `min_weight`. In training, with `train_min_transmittance` > 0, the
    densities of all marched samples are first evaluated without gradients and only the samples in front of
    the point where a ray's transmittance drops below it go through the network with gradients (instant-ngp's
    sample compaction); 0 evaluates every marched sample with gradients."""

    min_transmittance = 1e-4
    min_weight = 1e-5
    first_window = 8  # lego renders: 8 took 22% less time than 32 (rays past a surface are opaque within a few samples)

    def __init__(self, aabb: torch.Tensor, grid_resolution: int = 128, render_steps: int = 1024,
                 train_min_transmittance: float = 1e-4, **field_args):
        super().__init__()
        self.train_min_transmittance = train_min_transmittance
        self.field = FastField(aabb, **field_args)
        self.grid = OccupancyGrid(self.field.aabb, grid_resolution)
        diagonal = float((self.field.aabb[1] - self.field.aabb[0]).norm())
        self.step_size = diagonal / render_steps

    def to(self, *args, **kwargs):  # the grid is not a module: move it with the field
        super().to(*args, **kwargs)
        device = self.field.aabb.device
        self.grid.aabb = self.grid.aabb.to(device)
        self.grid.density = self.grid.density.to(device)
        self.grid.occupied = self.grid.occupied.to(device)
        return self

    def density(self, positions: torch.Tensor) -> torch.Tensor:
        """Density `[N]` at `positions [N, 3]` (zero outside the box)."""
        return self.field.density(positions)

    def color(self, positions: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Colour `[N, 3]` seen along unit `directions [N, 3]` at `positions [N, 3]`."""
        return self.field(positions, directions)[1]

    def update_grid(self, fraction: float, threshold: float = 0.01) -> None:
        self.grid.update(self.field.density, self.step_size, fraction=fraction, threshold=threshold)

    def render_rays(
        self,
        origins: torch.Tensor,
        directions: torch.Tensor,
        near: torch.Tensor,
        far: torch.Tensor,
        background: torch.Tensor | None = None,
        perturb: bool = False,
        early_stop: bool | None = None,
    ) -> dict[str, RenderOutput]:
        """Render rays `[R, 3]` (unit directions) between `near [R]` and `far [R]` -> {"fine": ...}; also sets
        `self.last_num_samples` (packed samples whose density was evaluated) and, in training,
        `self.last_num_trained` (those evaluated with gradients).

        `early_stop` (default: when gradients are off, i.e. when rendering views) composites each ray front to
        back in growing windows of samples and stops once its transmittance is below `min_transmittance`, and
        evaluates colours only of samples weighing at least `min_weight` (their skipped weight still counts
        towards the opacity); `weights` is then empty. Without it every marched sample is evaluated.
        """
        samples = self.grid.march(origins, directions, self.step_size, near, far, perturb=perturb)
        # All samples of a ray share its direction: encode directions once per ray.
        encoded = spherical_harmonics(directions, 4)
        if early_stop is None:
            early_stop = not torch.is_grad_enabled()
        if early_stop:
            return {"fine": self._render_early_stop(origins, directions, samples, encoded, background)}
        ray_indices, t, deltas = samples.ray_indices, samples.midpoints, samples.deltas
        points = origins[ray_indices] + t[:, None] * directions[ray_indices]
        self.last_num_samples = len(samples)
        hashed = None
        if self.train_min_transmittance > 0 and len(samples):
            with torch.no_grad():
                unit, inside = self.field.normalise(points)
                hashed = self.field.encoding(unit)
                density = truncated_exp(self.field.density_mlp(hashed)[:, 0]) * inside
                alive = alive_samples(density * deltas, ray_indices, origins.shape[0], self.train_min_transmittance)
                index = torch.nonzero(alive).squeeze(1)
            ray_indices, t, deltas, points, hashed = (v[index] for v in (ray_indices, t, deltas, points, hashed))
        self.last_num_trained = len(ray_indices)
        density, features = self.field.geometry(points, hashed)
        rgb = self.field.colour(features, encoded[ray_indices])
        out = composite_packed(density, rgb, deltas, t, ray_indices, origins.shape[0], background)
        return {"fine": out}

    @torch.no_grad()
    def _render_early_stop(
        self, origins: torch.Tensor, directions: torch.Tensor, samples: PackedSamples, encoded: torch.Tensor,
        background: torch.Tensor | None,
    ) -> RenderOutput:
        num_rays = origins.shape[0]
        ray_indices = samples.ray_indices
        counts = torch.bincount(ray_indices, minlength=num_rays)
        rank = torch.arange(len(samples), device=origins.device) - (torch.cumsum(counts, 0) - counts)[ray_indices]
        transmittance = origins.new_ones(num_rays)
        color = origins.new_zeros(num_rays, 3)
        depth = origins.new_zeros(num_rays)
        evaluated = 0
        start, window = 0, self.first_window
        longest = int(counts.max()) if num_rays and len(samples) else 0
        while start < longest:
            alive = transmittance > self.min_transmittance
            index = torch.nonzero((rank >= start) & (rank < start + window) & alive[ray_indices]).squeeze(1)
            start, window = start + window, 2 * window
            if not index.numel():
                continue
            rays = ray_indices[index]
            t = samples.midpoints[index]
            density, features = self.field.geometry(origins[rays] + t[:, None] * directions[rays])
            evaluated += index.numel()
            optical = density * samples.deltas[index]
            weights = transmittance[rays] * torch.exp(-exclusive_segment_cumsum(optical, rays, num_rays)) * (1 - torch.exp(-optical))
            keep = weights >= self.min_weight
            rgb = self.field.colour(features[keep], encoded[rays[keep]])
            color += segment_sum(weights[keep, None] * rgb, rays[keep], num_rays)
            depth += segment_sum(weights * t, rays, num_rays)
            transmittance = transmittance * torch.exp(-segment_sum(optical, rays, num_rays))
        self.last_num_samples = evaluated
        opacity = 1.0 - transmittance
        if background is not None:
            color = color + transmittance[:, None] * background
        return RenderOutput(color, depth, opacity, origins.new_zeros(0))

    @staticmethod
    def final(outputs: dict[str, RenderOutput]) -> RenderOutput:
        return outputs["fine"]

    @staticmethod
    def loss(outputs: dict[str, RenderOutput], target: torch.Tensor) -> torch.Tensor:
        return torch.mean((outputs["fine"].rgb - target) ** 2)
