"""Volume rendering (NeRF eq. 3): per-ray dense samples, or packed samples of many rays in flat tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RenderOutput:
    """Per-ray results: `rgb [R, 3]`, `depth [R]` (expected distance along the ray), `opacity [R]` (accumulated
    alpha) and per-sample `weights` (`[R, S]` dense or `[M]` packed)."""

    rgb: torch.Tensor
    depth: torch.Tensor
    opacity: torch.Tensor
    weights: torch.Tensor


def deltas_from_distances(t: torch.Tensor, last: float = 1e10) -> torch.Tensor:
    """Distances between consecutive samples `t [R, S]` -> `[R, S]`, the last interval `last` (NeRF uses 1e10,
    so whatever is left of the ray is absorbed by its last sample)."""
    return torch.cat([t[:, 1:] - t[:, :-1], torch.full_like(t[:, :1], last)], -1)


def volume_render(
    density: torch.Tensor,
    rgb: torch.Tensor,
    deltas: torch.Tensor,
    t: torch.Tensor,
    background: torch.Tensor | None = None,
) -> RenderOutput:
    """Composite `density [R, S]`, `rgb [R, S, 3]` with interval lengths `deltas [R, S]` at distances `t [R, S]`.

    `alpha_i = 1 - exp(-sigma_i delta_i)`, transmittance `T_i = prod_{j<i} (1 - alpha_j)`, weight `T_i alpha_i`.
    With `background [3]` the colour is composited over it: `rgb + (1 - opacity) * background`.
    """
    optical = density * deltas
    alpha = 1.0 - torch.exp(-optical)
    transmittance = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(optical[:, :1]), optical[:, :-1]], -1), -1))
    weights = transmittance * alpha
    opacity = weights.sum(-1)
    color = (weights[..., None] * rgb).sum(-2)
    if background is not None:
        color = color + (1.0 - opacity)[:, None] * background
    return RenderOutput(color, (weights * t).sum(-1), opacity, weights)


def exclusive_segment_cumsum(values: torch.Tensor, ray_indices: torch.Tensor, num_rays: int) -> torch.Tensor:
    """Per-segment exclusive prefix sums of `values [M]` grouped by sorted `ray_indices [M]`.

    Computed as one global cumulative sum (in float64, so long batches keep precision) minus its value at each
    segment's start.
    """
    total = torch.cumsum(values.double(), 0)
    exclusive = total - values.double()
    counts = torch.bincount(ray_indices, minlength=num_rays)
    starts = torch.cumsum(counts, 0) - counts  # first sample of each ray
    start_value = exclusive[starts.clamp(max=max(values.shape[0] - 1, 0))] if values.numel() else exclusive
    return (exclusive - start_value[ray_indices]).to(values.dtype)


def segment_sum(values: torch.Tensor, ray_indices: torch.Tensor, num_rays: int) -> torch.Tensor:
    """Sum `values [M, ...]` into `[num_rays, ...]` by `ray_indices [M]`."""
    out = values.new_zeros((num_rays,) + values.shape[1:])
    return out.index_add(0, ray_indices, values)


def composite_packed(
    density: torch.Tensor,
    rgb: torch.Tensor,
    deltas: torch.Tensor,
    t: torch.Tensor,
    ray_indices: torch.Tensor,
    num_rays: int,
    background: torch.Tensor | None = None,
) -> RenderOutput:
    """Volume rendering of packed samples: `density [M]`, `rgb [M, 3]`, `deltas [M]`, `t [M]` (distances of the
    sample points), `ray_indices [M]` sorted (samples of a ray contiguous, in order along it).

    Same quantities as `volume_render`; rays with no samples render the background with zero opacity.
    """
    optical = density * deltas
    alpha = 1.0 - torch.exp(-optical)
    transmittance = torch.exp(-exclusive_segment_cumsum(optical, ray_indices, num_rays))
    weights = transmittance * alpha
    opacity = segment_sum(weights, ray_indices, num_rays)
    color = segment_sum(weights[:, None] * rgb, ray_indices, num_rays)
    depth = segment_sum(weights * t, ray_indices, num_rays)
    if background is not None:
        color = color + (1.0 - opacity)[:, None] * background
    return RenderOutput(color, depth, opacity, weights)
