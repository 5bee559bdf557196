"""Volume rendering (NeRF eq. 3): per-ray dense samples, or packed samples of many rays in flat tensors."""

from __future__ import annotations

import math
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


def _ray_starts(ray_indices: torch.Tensor, num_rays: int) -> torch.Tensor:
    """First sample of every ray and one past the last sample, `[R + 1]`, of sorted `ray_indices [M]`."""
    counts = torch.bincount(ray_indices, minlength=num_rays)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _use_kernels(tensor: torch.Tensor, backend: str) -> bool:
    return backend == "numba" or (backend == "auto" and tensor.device.type == "cpu" and tensor.dtype == torch.float32)


def alive_samples(
    optical: torch.Tensor, ray_indices: torch.Tensor, num_rays: int, min_transmittance: float, backend: str = "auto"
) -> torch.Tensor:
    """`[M]` bool: the packed samples (optical thickness `density * delta`, `optical [M]`, sorted `ray_indices [M]`)
    in front of which the transmittance is still above `min_transmittance`: those a ray reaches before it is
    all but opaque. `backend` as `composite_packed`."""
    if _use_kernels(optical, backend):
        from mapforge.nerf import raymarch_cpu

        first = _ray_starts(ray_indices, num_rays)
        return torch.from_numpy(raymarch_cpu.alive_mask(optical.float().contiguous().numpy(), first.numpy(),
                                                        min_transmittance))
    return exclusive_segment_cumsum(optical, ray_indices, num_rays) <= -math.log(min_transmittance)


class _CompositeFunction(torch.autograd.Function):
    """`composite_packed` on CPU as two numba kernels (`raymarch_cpu`): forward and its hand-written backward."""

    @staticmethod
    def forward(ctx, density, rgb, deltas, t, first, background):  # type: ignore[override]
        from mapforge.nerf import raymarch_cpu

        arrays = [v.detach().float().contiguous().numpy() for v in (density, rgb, deltas, t)]
        first_np, background_np = first.numpy(), background.detach().float().contiguous().numpy()
        color, depth, opacity, weights, transmittance = raymarch_cpu.composite_forward(*arrays, first_np, background_np)
        outputs = [torch.from_numpy(v) for v in (color, depth, opacity, weights)]
        ctx.save_for_backward(*[torch.from_numpy(v) for v in arrays], outputs[3], torch.from_numpy(transmittance),
                              first, background)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, grad_color, grad_depth, grad_opacity, grad_weights):  # type: ignore[override]
        from mapforge.nerf import raymarch_cpu

        density, rgb, deltas, t, weights, transmittance, first, background = ctx.saved_tensors
        grads = [g.float().contiguous().numpy() for g in (grad_color, grad_depth, grad_opacity, grad_weights)]
        grad_density, grad_rgb = raymarch_cpu.composite_backward(
            *grads, density.numpy(), rgb.numpy(), deltas.numpy(), t.numpy(), weights.numpy(), transmittance.numpy(),
            first.numpy(), background.numpy(),
        )
        return torch.from_numpy(grad_density), torch.from_numpy(grad_rgb), None, None, None, None


def composite_packed(
    density: torch.Tensor,
    rgb: torch.Tensor,
    deltas: torch.Tensor,
    t: torch.Tensor,
    ray_indices: torch.Tensor,
    num_rays: int,
    background: torch.Tensor | None = None,
    backend: str = "auto",
) -> RenderOutput:
    """Volume rendering of packed samples: `density [M]`, `rgb [M, 3]`, `deltas [M]`, `t [M]` (distances of the
    sample points), `ray_indices [M]` sorted (samples of a ray contiguous, in order along it).

    Same quantities as `volume_render`; rays with no samples render the background with zero opacity.
    `backend`: "auto" (the fused numba kernels of `raymarch_cpu` for float32 CPU tensors, torch ops elsewhere),
    "numba" or "torch". Gradients reach `density` and `rgb` (not `deltas`, `t` or the background).
    """
    if _use_kernels(density, backend):
        first = _ray_starts(ray_indices, num_rays)
        bg = background if background is not None else density.new_zeros(3)
        color, depth, opacity, weights = _CompositeFunction.apply(density, rgb, deltas, t, first, bg)
        return RenderOutput(color, depth, opacity, weights)
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
