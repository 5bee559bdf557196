"""`rasterize`: render 3D Gaussians into one pinhole view, differentiably, with a choice of backend."""

from __future__ import annotations

from typing import Any

import torch

from mapforge.errors import InputError
from mapforge.splat.rasterize import torch_ref
from mapforge.splat.rasterize.projection import project_gaussians

BACKENDS = ("auto", "torch", "cpu")

# Denormal floats (tiny Gaussian tails, vanishing gradients) made CPU training iterations up to 20x slower.
torch.set_flush_denormal(True)


def _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, backend) -> None:
    n = means.shape[0] if means.ndim == 2 else -1
    expected = {"means": (means, (n, 3)), "quats": (quats, (n, 4)), "scales": (scales, (n, 3)), "opacities": (opacities, (n,))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise InputError(f"rasterize: {name} must have shape {list(shape)}, got {list(tensor.shape)}")
    if colors.ndim != 2 or colors.shape[0] != n or colors.shape[1] < 1:
        raise InputError(f"rasterize: colors must have shape [{n}, D], got {list(colors.shape)}")
    if tuple(viewmat.shape) != (4, 4) or tuple(K.shape) != (3, 3):
        raise InputError(f"rasterize: viewmat must be [4, 4] and K [3, 3], got {list(viewmat.shape)} and {list(K.shape)}")
    if width <= 0 or height <= 0:
        raise InputError(f"rasterize: image size must be positive, got {width}x{height}")
    if backend not in BACKENDS:
        raise InputError(f"rasterize: backend must be one of {BACKENDS}, got {backend!r}")
    dtypes = {t.dtype for t in (means, quats, scales, opacities, colors)}
    if len(dtypes) != 1 or dtypes.pop() not in (torch.float32, torch.float64):
        raise InputError("rasterize: Gaussian parameters must all be float32 or all float64")
    if backend == "cpu" and means.device.type != "cpu":
        raise InputError(f"rasterize: the 'cpu' backend needs CPU tensors, got {means.device}")


def rasterize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    background: torch.Tensor | None = None,
    backend: str = "auto",
    tile_size: int = 16,
    eps2d: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Render Gaussians into one view; differentiable w.r.t. every tensor input (viewmat and K included).

    Args:
        means: `[N, 3]` world positions.
        quats: `[N, 4]` rotations (w, x, y, z), normalised here.
        scales: `[N, 3]` standard deviations along the Gaussian's axes (already activated, e.g. exp(log_scales)).
        opacities: `[N]` in [0, 1] (already activated, e.g. sigmoid(logits)).
        colors: `[N, D]` per-Gaussian colours (or any features) for this view. For view-dependent colour evaluate
            spherical harmonics first: `mapforge.splat.sh.sh_to_color(sh, means, camera_center, degree)`.
        viewmat: `[4, 4]` cam_from_world, OpenCV axes (x right, y down, z forward).
        K: `[3, 3]` pinhole calibration; pixel (i, j) has its centre at (j + 0.5, i + 0.5) in the coordinates K
            projects into (COLMAP convention).
        width, height: image size in pixels.
        near, far: Gaussians whose centre depth is outside (near, far) are culled.
        background: `[D]` colour composited behind the Gaussians, or None for black.
        backend: "cpu" (numba kernels for projection and compositing with hand-written backward passes, CPU
            tensors; when viewmat or K require grad the projection runs in torch so they get gradients),
            "torch" (pure torch, any device; slow, the reference), or "auto" (cpu for CPU tensors, torch
            otherwise). Both follow the same rules and agree to float rounding.
        tile_size: side of the square screen tiles Gaussians are binned into (16 as in 3DGS).
        eps2d: variance in pixels^2 added to every 2D covariance (3DGS low-pass filter, 0.3).

    Returns:
        image `[H, W, D]`, alpha `[H, W, 1]`, depth `[H, W, 1]` (expected depth of the visible Gaussians:
        sum(w_i z_i) / sum(w_i) with compositing weights w_i; 0 where alpha is 0), and `meta` with
        "means2d" `[N, 2]` (pixels; `retain_grad()` is called on it when it requires grad, so after
        `backward()` `meta["means2d"].grad` holds the view-space positional gradient used for densification),
        "radii" `[N]` int32 (0 = culled), "depths" `[N]`, "conics" `[N, 3]`, "tile_rects" `[N, 4]`,
        "tile_offsets" `[T + 1]` and "tile_gaussian_ids" `[M]` (per-tile front-to-back lists),
        "tile_size", "tile_grid" (tiles in x, y), "n_intersections", "backend".
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, backend)
    if background is not None and tuple(background.shape) != (colors.shape[1],):
        raise InputError(f"rasterize: background must have shape [{colors.shape[1]}], got {list(background.shape)}")
    device, dtype = means.device, means.dtype
    if backend == "auto":
        backend = "cpu" if device.type == "cpu" else "torch"
    viewmat = viewmat.to(device=device, dtype=dtype)
    K = K.to(device=device, dtype=dtype)

    if backend == "cpu" and not (viewmat.requires_grad or K.requires_grad):
        from mapforge.splat.rasterize.cpu_projection import project_gaussians_cpu  # imports numba

        proj = project_gaussians_cpu(means, quats, scales, viewmat, K, width, height, near, far, eps2d, tile_size)
    else:
        proj = project_gaussians(means, quats, scales, viewmat, K, width, height, near, far, eps2d, tile_size)
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    # Depth is composited as one more channel and normalised afterwards.
    features = torch.cat([colors, proj.depths[:, None]], 1)
    grid_w = (width + tile_size - 1) // tile_size
    grid_h = (height + tile_size - 1) // tile_size
    if backend == "cpu":
        from mapforge.splat.rasterize import cpu_backend  # numba is imported only when this backend is used

        tiles = cpu_backend.TileLists(proj.tile_rects, proj.depths, width, height, tile_size)
        rendered, alpha = cpu_backend.composite(proj.means2d, proj.conics, opacities, features, tiles, width, height)
        offsets, ids = torch.from_numpy(tiles.offsets), torch.from_numpy(tiles.ids)
    else:
        offsets, ids = torch_ref.bin_tiles(proj.tile_rects, proj.depths, grid_w, grid_w * grid_h)
        rendered, alpha = torch_ref.composite(proj.means2d, proj.conics, opacities, features, offsets, ids, width, height, tile_size)

    alpha = alpha[..., None]
    image = rendered[..., :-1]
    if background is not None:
        image = image + (1.0 - alpha) * background.to(device=device, dtype=dtype)
    depth = torch.where(alpha > 0, rendered[..., -1:] / alpha.clamp_min(1e-10), torch.zeros_like(alpha))
    meta = {
        "means2d": proj.means2d,
        "radii": proj.radii,
        "depths": proj.depths,
        "conics": proj.conics,
        "tile_rects": proj.tile_rects,
        "tile_offsets": offsets,
        "tile_gaussian_ids": ids,
        "tile_size": tile_size,
        "tile_grid": (grid_w, grid_h),
        "n_intersections": int(ids.numel()),
        "backend": backend,
    }
    return image, alpha, depth, meta
