from __future__ import annotations

import math

import pytest
import torch

from mapforge.nerf.encodings import HashGridEncoding, PositionalEncoding, hash_grid_reference, spherical_harmonics


def test_positional_encoding_shapes_and_values():
    pos, dirs = PositionalEncoding(10), PositionalEncoding(4)
    assert pos.out_dim == 63 and dirs.out_dim == 27
    x = torch.tensor([[0.3, -1.2, 2.0]])
    out = pos(x)
    assert out.shape == (1, 63)
    torch.testing.assert_close(out[0, :3], x[0])
    # block k holds sin(2^k x) for the 3 coordinates, then cos(2^k x)
    for k in (0, 3, 9):
        block = out[0, 3 + 6 * k : 3 + 6 * (k + 1)]
        torch.testing.assert_close(block[:3], torch.sin(2.0**k * x[0]))
        torch.testing.assert_close(block[3:], torch.cos(2.0**k * x[0]))
    with_pi = PositionalEncoding(2, include_input=False, include_pi=True)(x)
    assert with_pi.shape == (1, 12)
    torch.testing.assert_close(with_pi[0, 6:9], torch.sin(2 * math.pi * x[0]))


def _small_grid(backend: str, dtype=torch.float32, num_levels: int = 4) -> HashGridEncoding:
    grid = HashGridEncoding(num_levels=num_levels, features_per_level=2, log2_hashmap_size=10, base_resolution=4,
                            finest_resolution=64, backend=backend)
    grid.table.data = torch.randn_like(grid.table, dtype=dtype)
    return grid


def test_hash_grid_levels():
    grid = HashGridEncoding()
    assert grid.resolutions[0] == 16 and grid.resolutions[-1] == 2048
    assert grid.growth_factor == pytest.approx(math.exp((math.log(2048) - math.log(16)) / 15))
    # coarse levels are dense (one row per vertex), fine ones hashed into 2^19 rows
    assert grid.dense[0] and not grid.dense[-1]
    assert grid.table.shape[0] == sum(min((r + 1) ** 3, 2**19) for r in grid.resolutions)


@pytest.mark.parametrize("backend, num_levels", [("numba", 4), ("numba", 5), ("torch", 4)])
def test_hash_grid_matches_reference(backend, num_levels):
    # 5 levels: the kernels' coarse/fine interleaving of levels over threads must still visit each level once
    grid = _small_grid(backend, num_levels=num_levels)
    x = torch.rand(500, 3)
    x[0] = 1.0  # the upper corner stays inside the last cell
    x[1] = 0.0
    out = grid(x)
    reference = hash_grid_reference(grid.table, x, grid)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), grid.table)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), grid.table)
    torch.testing.assert_close(grad, grad_ref, atol=1e-5, rtol=1e-5)


def test_hash_grid_interpolates_vertex_values():
    # at a vertex of a dense level the feature is that vertex's row exactly
    grid = _small_grid("numba")
    res = grid.resolutions[0]
    vertex = torch.tensor([[1, 2, 3]])
    out = grid(vertex.float() / res)
    row = (vertex[0, 0] * (res + 1) + vertex[0, 1]) * (res + 1) + vertex[0, 2]
    torch.testing.assert_close(out[0, :2], grid.table[row])


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_hash_grid_gradcheck(backend):
    # two levels: a dense 3^3-vertex one and a hashed one (9^3 vertices into 64 rows)
    grid = HashGridEncoding(num_levels=2, log2_hashmap_size=6, base_resolution=2, finest_resolution=8, backend=backend)
    assert grid.dense == [True, False]
    grid.table.data = torch.randn_like(grid.table, dtype=torch.float64)
    x = torch.rand(30, 3, dtype=torch.float64)
    table = grid.table.detach().clone().requires_grad_(True)
    from mapforge.nerf.encodings import _HashGridFunction

    assert torch.autograd.gradcheck(lambda t: _HashGridFunction.apply(t, x, grid), (table,), eps=1e-6, atol=1e-6)


def test_spherical_harmonics_orthonormal():
    # Fibonacci sphere quadrature: mean of Y_i Y_j times 4 pi is the identity
    n = 20000
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / n
    phi = math.pi * (1 + 5**0.5) * k
    r = torch.sqrt(1 - z * z)
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    basis = spherical_harmonics(dirs, 4)
    assert basis.shape == (n, 16)
    gram = basis.T @ basis * (4 * math.pi / n)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)
    assert spherical_harmonics(dirs[:5], 2).shape == (5, 4)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_hash_grid_empty_input(backend):
    grid = _small_grid(backend)
    out = grid(torch.zeros(0, 3))
    assert out.shape == (0, grid.out_dim)
