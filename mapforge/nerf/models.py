"""Renderable models: the original NeRF (coarse + fine networks) and the fast hash-grid model with its
occupancy grid. Both render a batch of rays into a `RenderOutput` and give their training loss."""

from __future__ import annotations

import torch
from torch import nn

from mapforge.nerf.fields import FastField, NeRFField
from mapforge.nerf.occupancy import OccupancyGrid
from mapforge.nerf.rendering import RenderOutput, composite_packed, deltas_from_distances, volume_render
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

    @staticmethod
    def loss(outputs: dict[str, RenderOutput], target: torch.Tensor) -> torch.Tensor:
        """The paper's loss: squared error of the coarse and of the fine colours, summed."""
        return sum(torch.mean((o.rgb - target) ** 2) for o in outputs.values())


class FastNeRFModel(nn.Module):
    """instant-ngp-style model: a `FastField` plus an `OccupancyGrid` over the same box; rays are marched with
    a fixed step of `box diagonal / render_steps` (instant-ngp: 1024 steps across the unit cube's diagonal)
    and only samples in occupied cells are evaluated, packed and composited per ray."""

    def __init__(self, aabb: torch.Tensor, grid_resolution: int = 128, render_steps: int = 1024, **field_args):
        super().__init__()
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
    ) -> dict[str, RenderOutput]:
        """Render rays `[R, 3]` (unit directions) between `near [R]` and `far [R]` -> {"fine": ...}; also sets
        `self.last_num_samples` (packed samples evaluated)."""
        samples = self.grid.march(origins, directions, self.step_size, near, far, perturb=perturb)
        self.last_num_samples = len(samples)
        ray_dirs = directions[samples.ray_indices]
        t = samples.midpoints
        points = origins[samples.ray_indices] + t[:, None] * ray_dirs
        density, rgb = self.field(points, ray_dirs)
        out = composite_packed(density, rgb, samples.deltas, t, samples.ray_indices, origins.shape[0], background)
        return {"fine": out}

    @staticmethod
    def final(outputs: dict[str, RenderOutput]) -> RenderOutput:
        return outputs["fine"]

    @staticmethod
    def loss(outputs: dict[str, RenderOutput], target: torch.Tensor) -> torch.Tensor:
        return torch.mean((outputs["fine"].rgb - target) ** 2)
