"""Input encodings: NeRF's positional encoding, instant-ngp's multiresolution hash grid, spherical harmonics."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """`x -> [x, sin(2^0 pi x), cos(2^0 pi x), ..., sin(2^(L-1) pi x), cos(2^(L-1) pi x)]` per coordinate.

    NeRF (Mildenhall et al. 2020, eq. 4) with `num_frequencies` = L: 10 for positions, 4 for directions, the
    identity input included as in the paper's code. Like that code, the frequency is `2^k` without the `pi`
    factor when `include_pi=False` (its default) — the paper writes `2^k pi`; both are offered.
    """

    def __init__(self, num_frequencies: int, include_input: bool = True, include_pi: bool = False, in_dim: int = 3):
        super().__init__()
        self.num_frequencies = num_frequencies
        self.include_input = include_input
        self.in_dim = in_dim
        scale = math.pi if include_pi else 1.0
        self.register_buffer("frequencies", scale * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (2 * self.num_frequencies + int(self.include_input))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x: [..., in_dim]` -> `[..., out_dim]`, ordered [x, sin(f0 x), cos(f0 x), sin(f1 x), ...]."""
        scaled = x[..., None, :] * self.frequencies[:, None]  # [..., L, D]
        parts = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=-2).flatten(-3)  # [..., L*2*D]
        return torch.cat([x, parts], dim=-1) if self.include_input else parts


# Spatial hash primes of Müller et al. 2022 (instant-ngp, eq. 4); the first is 1 for cache coherence.
HASH_PRIMES = (1, 2654435761, 805459861)


def _level_indices(
    x: torch.Tensor, resolution: int, table_size: int, dense: bool, offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows `[N, 8]` (int64, `offset` added) and trilinear weights `[N, 8]` of the 8 cell corners of `x`.

    Corner c = (cx, cy, cz) is at position 4 cx + 2 cy + cz. Each axis contributes independently (a sum for
    dense indexing, an XOR for the hash), so the 8 corners are formed by broadcasting per-axis `[N, 2]` terms.
    """
    scaled = x * resolution
    base = torch.floor(scaled).clamp_(0, resolution - 1)  # points on the upper face stay in the last cell
    frac = scaled - base
    base = base.long()
    lo_hi = torch.stack([base, base + 1], dim=1)  # [N, 2, 3]
    if dense:
        side = resolution + 1
        terms = lo_hi * torch.tensor([side * side, side, 1], device=x.device)
        index = terms[:, :, None, None, 0] + terms[:, None, :, None, 1] + terms[:, None, None, :, 2]
    else:
        terms = lo_hi * torch.tensor(HASH_PRIMES, device=x.device)
        index = (terms[:, :, None, None, 0] ^ terms[:, None, :, None, 1] ^ terms[:, None, None, :, 2]) & (table_size - 1)
    w = torch.stack([1.0 - frac, frac], dim=1)  # [N, 2, 3]
    weight = w[:, :, None, None, 0] * w[:, None, :, None, 1] * w[:, None, None, :, 2]
    return index.reshape(-1, 8) + offset, weight.reshape(-1, 8)


def hash_grid_reference(table: torch.Tensor, x: torch.Tensor, grid: HashGridEncoding) -> torch.Tensor:
    """The encoding in plain torch ops differentiated by autograd, `[N, levels * F]`: the reference that the
    kernels and the hand-written backward are checked against."""
    out = []
    for level in range(grid.num_levels):
        index, weight = _level_indices(x, grid.resolutions[level], grid.hashmap_size, grid.dense[level], grid.offsets[level])
        rows = table[index.reshape(-1)].view(x.shape[0], 8, grid.features_per_level)
        out.append((weight[..., None] * rows).sum(1))
    return torch.cat(out, -1)


class _HashGridFunction(torch.autograd.Function):
    """Hash-grid lookup with a hand-written backward. On CPU both directions run fused numba kernels
    (`hashgrid_cpu`); elsewhere the corner indices are built with torch ops and the backward is one
    `index_add_` per level rather than autograd's generic indexing backward (which sorts the indices)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, x: torch.Tensor, grid: HashGridEncoding,  # type: ignore[override]
                features: torch.Tensor | None = None) -> torch.Tensor:
        ctx.grid = grid
        ctx.table_shape = table.shape
        n = x.shape[0]
        if grid.use_cpu_kernels(x):
            from mapforge.nerf import hashgrid_cpu

            points = x.detach().contiguous()
            ctx.save_for_backward(points)
            if features is not None:
                return features.detach().clone()
            out = hashgrid_cpu.hashgrid_forward(points.numpy(), table.detach().contiguous().numpy(), *grid.kernel_args())
            return torch.from_numpy(out).view(n, grid.out_dim)
        out = table.new_empty(n, grid.num_levels, grid.features_per_level)
        all_index, all_weight = [], []
        for level in range(grid.num_levels):
            index, weight = _level_indices(x, grid.resolutions[level], grid.hashmap_size, grid.dense[level], grid.offsets[level])
            rows = table.index_select(0, index.reshape(-1)).view(n, 8, grid.features_per_level)
            out[:, level] = (weight[..., None] * rows).sum(1)
            all_index.append(index)
            all_weight.append(weight)
        ctx.save_for_backward(torch.stack(all_index, 1), torch.stack(all_weight, 1))  # [N, L, 8]
        return out.view(n, grid.out_dim)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grid = ctx.grid
        n = grad_out.shape[0]
        grad_out = grad_out.reshape(n, grid.num_levels, grid.features_per_level)
        if grid.use_cpu_kernels(grad_out):
            from mapforge.nerf import hashgrid_cpu

            (points,) = ctx.saved_tensors
            grad = hashgrid_cpu.hashgrid_backward(
                points.numpy(), grad_out.contiguous().numpy(), ctx.table_shape[0], *grid.kernel_args()
            )
            return torch.from_numpy(grad), None, None, None
        index, weight = ctx.saved_tensors
        contributions = (weight[..., None] * grad_out[:, :, None, :]).reshape(-1, grad_out.shape[-1])
        grad_table = grad_out.new_zeros(ctx.table_shape)
        grad_table.index_add_(0, index.reshape(-1), contributions)
        return grad_table, None, None, None


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding (Müller et al. 2022, sec. 3) of points in the unit cube.

    Level l has resolution `floor(base_resolution * b^l)` with `b = exp((ln finest - ln base) / (levels - 1))`;
    a level whose `(res + 1)^3` vertices fit in `hashmap_size` rows is indexed densely (one row per vertex), the
    others through the paper's XOR hash of the integer corner coordinates. Features of the 8 cell corners are
    blended trilinearly. Defaults are the paper's (L=16, F=2, T=2^19, N_min=16, table init U(-1e-4, 1e-4));
    `finest_resolution` 2048 is its value for NeRF scenes. Input points get no gradient.
    `backend`: "auto" (numba kernels on CPU, torch ops elsewhere), "numba" or "torch".
    """

    def __init__(
        self,
        num_levels: int = 16,
        features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        finest_resolution: int = 2048,
        backend: str = "auto",
    ):
        super().__init__()
        if backend not in ("auto", "numba", "torch"):
            raise ValueError(f"hash grid backend must be auto, numba or torch, got {backend!r}")
        self.backend = backend
        self.num_levels = num_levels
        self.features_per_level = features_per_level
        self.hashmap_size = 2**log2_hashmap_size
        growth = math.exp((math.log(finest_resolution) - math.log(base_resolution)) / max(num_levels - 1, 1))
        self.growth_factor = growth
        self.resolutions = [int(math.floor(base_resolution * growth**level)) for level in range(num_levels)]
        self.dense, self.offsets = [], []
        rows = 0
        for res in self.resolutions:
            vertices = (res + 1) ** 3
            self.dense.append(vertices <= self.hashmap_size)
            self.offsets.append(rows)
            rows += min(vertices, self.hashmap_size)
        self.table = nn.Parameter(torch.empty(rows, features_per_level).uniform_(-1e-4, 1e-4))
        self._kernel_args = (
            np.asarray(self.resolutions, dtype=np.int64),
            np.asarray(self.offsets, dtype=np.int64),
            np.asarray(self.dense, dtype=np.bool_),
            self.hashmap_size,
        )

    def use_cpu_kernels(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == "cpu" and self.backend != "torch"

    def kernel_args(self) -> tuple:
        """Level layout as the CPU kernels take it: (resolutions, offsets, dense, hashmap_size)."""
        return self._kernel_args

    @property
    def out_dim(self) -> int:
        return self.num_levels * self.features_per_level

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """`x: [N, 3]` in [0, 1] -> features `[N, levels * features_per_level]` (level-major).

        `features`, the encoding of `x` computed earlier without gradients, saves the lookups on CPU: it is
        returned (as a copy) with the table's gradient attached."""
        x = x.detach().clamp(0.0, 1.0).to(self.table.dtype)
        return _HashGridFunction.apply(self.table, x, self, features)


def spherical_harmonics(directions: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real spherical-harmonic basis of unit `directions: [N, 3]` -> `[N, degree^2]` (bands 0..degree-1).

    Degree 4 (16 coefficients) is instant-ngp's direction encoding. Orthonormal on the sphere.
    """
    if not 1 <= degree <= 4:
        raise ValueError(f"spherical harmonics degree must be 1..4, got {degree}")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575756 * zz - 0.31539156525252,
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.5900435899266435 * y * (yy - 3 * xx),
            2.890611442640554 * x * y * z,
            0.4570457994644658 * y * (1 - 5 * zz),
            0.3731763325901154 * z * (5 * zz - 3),
            0.4570457994644658 * x * (1 - 5 * zz),
            1.445305721320277 * z * (xx - yy),
            0.5900435899266435 * x * (3 * yy - xx),
        ]
    return torch.stack(out, -1)
