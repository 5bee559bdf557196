"""Autograd wrapper around the numba compositing kernels (CPU tensors, float32 or float64)."""

from __future__ import annotations

import numba
import numpy as np
import torch

from mapforge.splat.rasterize import cpu_kernels

# Relative cost of a tile's pixels against one Gaussian in its list, for balancing tiles over threads.
_PIXEL_COST = 4.0


class TileLists:
    """Front-to-back Gaussian lists per tile plus the assignment of tiles to threads."""

    def __init__(self, tile_rects: torch.Tensor, depths: torch.Tensor, width: int, height: int, tile_size: int):
        self.tile_size = tile_size
        self.grid_w = (width + tile_size - 1) // tile_size
        self.grid_h = (height + tile_size - 1) // tile_size
        visible = np.flatnonzero(tile_rects[:, 2].numpy() > tile_rects[:, 0].numpy())
        order = visible[np.argsort(depths.detach().numpy()[visible], kind="stable")]
        self.offsets, self.ids = cpu_kernels.bin_tiles(
            tile_rects.numpy(), order, self.grid_w, self.grid_w * self.grid_h
        )
        self.worker_offsets, self.worker_tiles = cpu_kernels.balance_tiles(
            self.offsets, numba.get_num_threads(), _PIXEL_COST
        )


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, tiles: TileLists, width: int, height: int):
        arrays = [t.detach().contiguous().numpy() for t in (means2d, conics, opacities, colors)]
        color, transmittance, count = cpu_kernels.composite_forward(
            *arrays, tiles.offsets, tiles.ids, tiles.worker_offsets, tiles.worker_tiles,
            width, height, tiles.tile_size, tiles.grid_w,
        )
        ctx.arrays, ctx.tiles, ctx.size = arrays, tiles, (width, height)
        ctx.transmittance, ctx.count = transmittance, count
        return torch.from_numpy(color), torch.from_numpy(1.0 - transmittance)

    @staticmethod
    def backward(ctx, grad_color, grad_alpha):
        tiles, (width, height) = ctx.tiles, ctx.size
        dtype = ctx.arrays[0].dtype
        torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
        grad_color = grad_color.to(torch_dtype).contiguous().numpy()
        grad_alpha = grad_alpha.to(torch_dtype).contiguous().numpy()
        grads = cpu_kernels.composite_backward(
            *ctx.arrays, tiles.offsets, tiles.ids, tiles.worker_offsets, tiles.worker_tiles,
            width, height, tiles.tile_size, tiles.grid_w, ctx.transmittance, ctx.count, grad_color, grad_alpha,
        )
        grads = torch.from_numpy(grads.astype(dtype, copy=False))
        g = cpu_kernels.N_GEOM_GRADS
        return grads[:, 0:2], grads[:, 2:5], grads[:, 5], grads[:, g:], None, None, None


def composite(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    tiles: TileLists,
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back compositing on the CPU: colours `[H, W, C]` (no background) and alpha `[H, W]`.

    Same inputs and rules as `torch_ref.composite`; gradients come from the hand-written numba backward pass.
    """
    return _Composite.apply(means2d, conics, opacities, colors, tiles, width, height)
