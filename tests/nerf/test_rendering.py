from __future__ import annotations

import math

import pytest
import torch

from mapforge.nerf.rendering import composite_packed, volume_render


def _uniform_ray(sigma: float, length: float, n: int, start: float = 0.0):
    delta = length / n
    t = start + (torch.arange(n, dtype=torch.float64) + 0.5) * delta
    return t[None], torch.full((1, n), delta, dtype=torch.float64), torch.full((1, n), sigma, dtype=torch.float64)


def test_constant_density_opacity_and_depth():
    sigma, length = 1.3, 2.0
    t, deltas, density = _uniform_ray(sigma, length, 2000)
    rgb = torch.full((1, 2000, 3), 0.25, dtype=torch.float64)
    out = volume_render(density, rgb, deltas, t)
    # the product of per-interval transmittances telescopes: exact for any sampling
    torch.testing.assert_close(out.opacity, torch.tensor([1 - math.exp(-sigma * length)], dtype=torch.float64))
    torch.testing.assert_close(out.rgb, 0.25 * out.opacity[:, None].expand(1, 3))
    # E[t] of the absorbed light: integral of t sigma exp(-sigma t) over [0, L]
    expected = (1 - math.exp(-sigma * length) * (1 + sigma * length)) / sigma
    torch.testing.assert_close(out.depth, torch.tensor([expected], dtype=torch.float64), atol=1e-6, rtol=0)
    # transmittance in front of every sample
    transmittance = out.weights / (1 - torch.exp(-density * deltas))
    torch.testing.assert_close(transmittance[0], torch.exp(-sigma * (t[0] - deltas[0] / 2)))


def test_slab_over_background():
    # empty space, then a slab of density 3 over [1, 1.5] coloured red, then empty space; white background
    n = 300
    t = (torch.arange(n, dtype=torch.float64) + 0.5) * (3.0 / n)
    deltas = torch.full((n,), 3.0 / n, dtype=torch.float64)
    inside = (t > 1.0) & (t < 1.5)
    density = torch.where(inside, 3.0, 0.0).double()
    rgb = torch.zeros(n, 3, dtype=torch.float64)
    rgb[:, 0] = 1.0
    out = volume_render(density[None], rgb[None], deltas[None], t[None], background=torch.ones(3, dtype=torch.float64))
    alpha = 1 - math.exp(-3.0 * 0.5)
    torch.testing.assert_close(out.opacity, torch.tensor([alpha], dtype=torch.float64))
    torch.testing.assert_close(out.rgb[0], torch.tensor([1.0, 1 - alpha, 1 - alpha], dtype=torch.float64))
    expected_depth = alpha * 1.0 + (1 - math.exp(-1.5) * (1 + 1.5)) / 3.0  # un-normalised: sum of weight * t
    torch.testing.assert_close(out.depth[0], torch.tensor(expected_depth, dtype=torch.float64), atol=1e-3, rtol=0)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_packed_matches_dense(backend):
    generator = torch.Generator().manual_seed(0)
    rays, samples = 5, 16
    density = torch.rand(rays, samples, generator=generator) * 4
    rgb = torch.rand(rays, samples, 3, generator=generator)
    t = torch.sort(torch.rand(rays, samples, generator=generator) * 4, -1).values
    deltas = torch.rand(rays, samples, generator=generator) * 0.2
    # ray 2 has no samples at all, ray 4 only its first 7: zero density elsewhere is the same as no sample
    keep = torch.ones(rays, samples, dtype=torch.bool)
    keep[2] = False
    keep[4, 7:] = False
    density = density * keep
    background = torch.tensor([0.2, 0.4, 0.6])
    dense = volume_render(density, rgb, deltas, t, background)
    rows, cols = torch.nonzero(keep, as_tuple=True)
    packed = composite_packed(density[rows, cols], rgb[rows, cols], deltas[rows, cols], t[rows, cols], rows, rays, background,
                              backend=backend)
    torch.testing.assert_close(packed.rgb, dense.rgb)
    torch.testing.assert_close(packed.depth, dense.depth)
    torch.testing.assert_close(packed.opacity, dense.opacity)
    torch.testing.assert_close(packed.weights, dense.weights[rows, cols])
    torch.testing.assert_close(packed.rgb[2], background)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_packed_gradients_match_dense(backend):
    generator = torch.Generator().manual_seed(1)
    density = (torch.rand(3, 8, generator=generator) * 3).requires_grad_(True)
    rgb = torch.rand(3, 8, 3, generator=generator).requires_grad_(True)
    t = torch.linspace(0, 1, 8).expand(3, 8)
    deltas = torch.full((3, 8), 1 / 8)
    dense = volume_render(density, rgb, deltas, t)
    grads_dense = torch.autograd.grad(dense.rgb.sum() + dense.depth.sum(), (density, rgb))
    rows = torch.arange(3).repeat_interleave(8)
    packed = composite_packed(density.reshape(-1), rgb.reshape(-1, 3), deltas.reshape(-1), t.reshape(-1), rows, 3,
                              backend=backend)
    grads_packed = torch.autograd.grad(packed.rgb.sum() + packed.depth.sum(), (density, rgb))
    for a, b in zip(grads_dense, grads_packed):
        torch.testing.assert_close(a, b)


def test_packed_kernel_gradients_of_every_output():
    # The numba backward against autograd through the torch ops, for a loss on colour (over a background), depth,
    # opacity and the weights at once; rays of 0, 1 and several samples.
    generator = torch.Generator().manual_seed(2)
    rays = torch.tensor([0, 0, 0, 0, 2, 3, 3, 3, 3, 3, 3])
    m = rays.shape[0]
    density = (torch.rand(m, generator=generator) * 5).requires_grad_(True)
    rgb = torch.rand(m, 3, generator=generator).requires_grad_(True)
    deltas = torch.rand(m, generator=generator) * 0.3
    t = torch.cumsum(deltas, 0)
    background = torch.tensor([1.0, 0.5, 0.0])
    coefficients = [torch.randn(4, 3, generator=generator), torch.randn(4, generator=generator),
                    torch.randn(4, generator=generator), torch.randn(m, generator=generator)]
    grads = []
    for backend in ("numba", "torch"):
        out = composite_packed(density, rgb, deltas, t, rays, 4, background, backend=backend)
        loss = sum((c * v).sum() for c, v in zip(coefficients, (out.rgb, out.depth, out.opacity, out.weights)))
        grads.append(torch.autograd.grad(loss, (density, rgb)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
