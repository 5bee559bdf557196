"""Readable pure-torch tile compositing (any device; autograd provides the backward pass).

It applies the rules of the reference 3DGS CUDA rasterizer literally, so it is the ground truth the fast CPU
kernels are tested against: Gaussians are binned into tiles, sorted front to back per tile, and composited with
alpha = min(0.99, opacity * exp(-0.5 d^T conic d)); contributions with alpha < 1/255 are skipped and a pixel stops
before the Gaussian that would bring its transmittance below 1e-4.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4
# exp() of very negative powers produces denormals, which are extremely slow on CPUs; such alphas are skipped.
POWER_MIN = -80.0
# Elements of the [tiles, gaussians, pixels] tensors per chunk: bounds memory (chunks are recomputed in backward).
CHUNK_ELEMENTS = 1 << 22


def bin_tiles(tile_rects: torch.Tensor, depths: torch.Tensor, grid_w: int, n_tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile lists sorted front to back: `(offsets [n_tiles + 1], gaussian_ids [M])`, tile t owning
    `gaussian_ids[offsets[t]:offsets[t + 1]]`. Equal depths keep index order (stable sort)."""
    device = depths.device
    order = torch.sort(depths.detach(), stable=True).indices
    rects = tile_rects[order].long()
    widths = (rects[:, 2] - rects[:, 0]).clamp_min(0)
    counts = widths * (rects[:, 3] - rects[:, 1]).clamp_min(0)
    total = int(counts.sum())
    gaussian = torch.repeat_interleave(order, counts)
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    local = torch.arange(total, device=device) - first
    w = torch.repeat_interleave(widths, counts)
    tx = torch.repeat_interleave(rects[:, 0], counts) + local % w.clamp_min(1)
    ty = torch.repeat_interleave(rects[:, 1], counts) + local // w.clamp_min(1)
    tiles = ty * grid_w + tx
    tiles_sorted, perm = torch.sort(tiles, stable=True)
    offsets = torch.zeros(n_tiles + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(torch.bincount(tiles_sorted, minlength=n_tiles), 0)
    return offsets, gaussian[perm]


def _composite_chunk(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    ids: torch.Tensor,
    pixels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite padded tile lists `ids [T, L]` (-1 = padding) at pixel centres `pixels [T, P, 2]`.

    Returns colours `[T, P, C]` and alpha `[T, P]`.
    """
    present = ids >= 0
    g = ids.clamp_min(0)
    d = pixels[:, None, :, :] - means2d[g][:, :, None, :]  # [T, L, P, 2]
    conic = conics[g][:, :, None, :]
    power = -0.5 * (conic[..., 0] * d[..., 0] ** 2 + conic[..., 2] * d[..., 1] ** 2) - conic[..., 1] * d[..., 0] * d[..., 1]
    raw = opacities[g][:, :, None] * torch.exp(torch.clamp_min(power, POWER_MIN))
    alpha = torch.clamp_max(raw, ALPHA_MAX)
    keep = present[:, :, None] & (power <= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    after = torch.cumprod(1.0 - alpha, dim=1)  # transmittance after each Gaussian, [T, L, P]
    before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], dim=1)
    # A pixel stops before the first Gaussian that would bring it below the minimum transmittance.
    weights = alpha * before * (after >= TRANSMITTANCE_MIN)
    color = torch.einsum("tlp,tlc->tpc", weights, colors[g])
    return color, weights.sum(1)


def composite(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    offsets: torch.Tensor,
    gaussian_ids: torch.Tensor,
    width: int,
    height: int,
    tile_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back compositing of binned 2D Gaussians: colours `[H, W, C]` (no background) and alpha `[H, W]`.

    `means2d [N, 2]`, `conics [N, 3]`, `opacities [N]`, `colors [N, C]`; `offsets`/`gaussian_ids` from `bin_tiles`.
    """
    device, dtype = means2d.device, means2d.dtype
    grid_w = (width + tile_size - 1) // tile_size
    n_tiles = offsets.numel() - 1
    channels = colors.shape[1]
    counts = (offsets[1:] - offsets[:-1]).tolist()
    local = torch.arange(tile_size * tile_size, device=device)
    local_x, local_y = local % tile_size, local // tile_size

    out_index, out_color, out_alpha = [], [], []
    start = 0
    while start < n_tiles:
        if counts[start] == 0:
            start += 1
            continue
        stop, longest = start, 0
        while stop < n_tiles and counts[stop] > 0 and max(longest, counts[stop]) * (stop - start + 1) * local.numel() <= max(
            CHUNK_ELEMENTS, counts[start] * local.numel()
        ):
            longest = max(longest, counts[stop])
            stop += 1
        tiles = torch.arange(start, stop, device=device)
        slot = torch.arange(longest, device=device)
        first = offsets[start:stop, None]
        length = offsets[start + 1 : stop + 1, None] - first
        ids = torch.where(slot < length, gaussian_ids[(first + slot).clamp_max(gaussian_ids.numel() - 1)], -1)
        px = (tiles % grid_w)[:, None] * tile_size + local_x  # [T, P]
        py = (tiles // grid_w)[:, None] * tile_size + local_y
        pixels = torch.stack([px, py], -1).to(dtype) + 0.5
        if torch.is_grad_enabled() and any(t.requires_grad for t in (means2d, conics, opacities, colors)):
            color, alpha = checkpoint(_composite_chunk, means2d, conics, opacities, colors, ids, pixels, use_reentrant=False)
        else:
            color, alpha = _composite_chunk(means2d, conics, opacities, colors, ids, pixels)
        inside = (px < width) & (py < height)
        out_index.append((py * width + px)[inside])
        out_color.append(color[inside])
        out_alpha.append(alpha[inside])
        start = stop

    image = torch.zeros(height * width, channels, device=device, dtype=dtype)
    alpha = torch.zeros(height * width, device=device, dtype=dtype)
    if out_index:
        index = torch.cat(out_index)
        image = image.index_put((index,), torch.cat(out_color))
        alpha = alpha.index_put((index,), torch.cat(out_alpha))
    return image.reshape(height, width, channels), alpha.reshape(height, width)
