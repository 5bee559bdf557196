"""Sample distances along rays: NeRF's stratified sampling and its inverse-transform (hierarchical) sampling."""

from __future__ import annotations

import torch


def stratified_samples(
    near: torch.Tensor, far: torch.Tensor, num_samples: int, perturb: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Distances `[R, S]` between `near [R]` and `far [R]` (NeRF eq. 2).

    Without `perturb` the samples are `S` evenly spaced points from near to far inclusive; with it, each is drawn
    uniformly in its bin, the bins being bounded by the midpoints of those even points (as the paper's code).
    """
    steps = torch.linspace(0.0, 1.0, num_samples, device=near.device, dtype=near.dtype)
    t = near[:, None] * (1.0 - steps) + far[:, None] * steps
    if not perturb:
        return t
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    upper = torch.cat([mids, t[:, -1:]], -1)
    lower = torch.cat([t[:, :1], mids], -1)
    u = torch.rand(t.shape, device=t.device, dtype=t.dtype, generator=generator)
    return lower + (upper - lower) * u


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    num_samples: int,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Inverse-transform sampling of the piecewise-constant pdf `weights [R, B]` on bin edges `bins [R, B+1]`.

    Returns sorted distances `[R, num_samples]`. `deterministic` uses evenly spaced CDF values (NeRF's
    evaluation mode) instead of uniform random ones. A small constant is added to the weights (as in NeRF) so
    that all-zero weights give a uniform pdf rather than a division by zero.
    """
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # [R, B+1]
    cdf[:, -1] = 1.0
    if deterministic:
        u = torch.linspace(0.0, 1.0, num_samples, device=bins.device, dtype=bins.dtype).expand(cdf.shape[0], num_samples)
    else:
        u = torch.rand(cdf.shape[0], num_samples, device=bins.device, dtype=bins.dtype, generator=generator)
        u = torch.sort(u, -1).values  # the inverse CDF is monotone, so sorted u gives sorted distances
    u = u.contiguous()
    above = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[1] - 1)
    below = above - 1
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    span = cdf_hi - cdf_lo
    frac = torch.where(span > 1e-12, (u - cdf_lo) / span.clamp_min(1e-12), torch.zeros_like(u))
    return bin_lo + frac * (bin_hi - bin_lo)
