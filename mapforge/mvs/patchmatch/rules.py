"""The rules of mapforge's PatchMatch stereo, shared by the torch reference and the numba kernels.

A hypothesis is a plane in the reference camera's frame, stored per pixel as a z-depth `d` and a unit normal `n`
facing the camera (`n . ray < 0`, as COLMAP's). Pixel (r, c) has its centre at (u, v) = (c + 0.5, r + 0.5) and
its ray is `ray = K_ref^-1 (u, v, 1)` (z = 1), so its 3D point is `d * ray`.

Cost of a hypothesis in one source view (COLMAP's photo-consistency): 1 - NCC of the window of radius
`window_radius` sampled every `window_step` pixels, bilaterally weighted by the reference image (spatial sigma
`sigma_spatial` pixels, colour sigma `sigma_color` on [0, 1] intensities), warped into the source by the plane's
homography and sampled bilinearly (sample positions clamped to the image). The homography is applied exactly at
the window centre and expanded to second order around it for the other samples: with `eps` the relative change of
the homogeneous coordinate over an offset, the offset's position is `centre + linear(offset) (1 - eps + eps^2)`,
which needs no division per sample and is within 1e-3 pixels of the exact warp for |eps| < 0.1. The cost is
`MAX_COST` when the window's centre falls outside the source image or behind it, when |eps| reaches
`MAX_DEPTH_CHANGE` inside the window (a plane seen nearly edge-on), or when either window's variance is below
`MIN_VARIANCE`. The geometric pass adds `geom_consistency_regularizer` times the forward-backward reprojection
error through the source's depth map (nearest pixel), capped at `geom_consistency_max_cost` (COLMAP's term).

Aggregated cost: the mean of the `num_best_views` smallest per-view costs (Gipuma's rule, robust to occlusion).
Each pixel keeps the `num_scored_views` sources where its plane scores best (ties: the lower source index), found
by scoring the plane in every source when a level or pass starts and whenever the pixel takes a new plane;
candidates are scored in those views only (where their best views lie too once neighbours agree, and most of the
speed of a CPU sweep), and the pixel's cost is its plane's in those views.

One half sweep updates the pixels of one checkerboard colour ((r + c) % 2 == colour) from the other colour
(Galliani et al. 2015; ACMH's adaptive checkerboard, Xu and Tao 2019): in each of 8 regions around the pixel
(`REGION_OFFSETS`) the neighbour whose current cost is lowest offers its plane; the plane's depth on this pixel's
ray is a candidate when it lies inside the depth range, unless it is a plane already tried at this pixel (the
pixel's own or an earlier region's: the same normal and a depth within `SAME_DEPTH`), which is skipped (neighbours
that agree hand over the same plane, so after the first sweeps most candidates are repeats). Then random refinement
tries, in order, (perturbed depth,
best normal), (best depth, perturbed normal), (both perturbed) and a fresh random plane (`refinement_candidates`).
A candidate replaces the best so far only when its cost is strictly lower, so the earliest wins ties.

Random numbers come from the caller, 7 uniforms `w0..w6` per pixel (`NUM_RANDOM`), so both backends make the
same choices from the same numbers:
- random plane: inverse depth uniform in the range, `1 / d = 1 / d_max + w0 (1 / d_min - 1 / d_max)`; normal
  uniform on the sphere, `z = 2 w1 - 1`, azimuth `2 pi w2`, flipped to face the camera;
- perturbed depth `d (1 + p (2 w3 - 1))` clamped to the range, perturbed normal `n + p (2 w4 - 1, 2 w5 - 1,
  2 w6 - 1)` normalised, kept as `n` when it would face away from the camera (`p` is the sweep's perturbation).
"""

from __future__ import annotations

import numpy as np

MAX_COST = 2.0
# COLMAP's kMinVar: below it a window is treated as textureless.
MIN_VARIANCE = 1e-5
NUM_RANDOM = 7
# Largest relative change of the homogeneous coordinate across a window that is still matched.
MAX_DEPTH_CHANGE = 0.5
# Two planes with the same normal and depths this close (relative) at a pixel are the same candidate.
SAME_DEPTH = 1e-6
# A neighbour's plane is not transferred when it is seen this close to edge-on from the pixel (|n . ray| / |ray|).
MIN_COS_VIEW = 1e-3


def _region_offsets() -> tuple[np.ndarray, np.ndarray]:
    """ACMH's 8 regions as `(offsets [8, 11, 2] int32 (dr, dc), counts [8])`: 4 V-shaped near regions of 7 pixels
    (up, down, left, right) and 4 far strips of 11 pixels at odd distances 3..23. Every offset has odd dr + dc,
    so it lands on the other colour."""
    up_near = [(-1, 0)] + [(-k - 1, s * k) for k in (1, 2, 3) for s in (-1, 1)]
    up_far = [(-d, 0) for d in range(3, 24, 2)]
    regions = []
    for near in (True, False):
        base = up_near if near else up_far
        regions += [base, [(-dr, dc) for dr, dc in base], [(dc, dr) for dr, dc in base], [(dc, -dr) for dr, dc in base]]
    offsets = np.zeros((8, 11, 2), np.int32)
    counts = np.zeros(8, np.int32)
    for g, region in enumerate(regions):
        offsets[g, : len(region)] = region
        counts[g] = len(region)
    return offsets, counts


REGION_OFFSETS, REGION_COUNTS = _region_offsets()
# Columns of the per-source geometry table `geo [S, GEO_COLUMNS]` (see `source_geometry`).
GEO_COLUMNS = 31


def source_geometry(K_ref: np.ndarray, K_src: np.ndarray, src_from_ref_R: np.ndarray, src_from_ref_t: np.ndarray) -> np.ndarray:
    """The per-source table both backends read, float64 `[S, 31]`.

    Columns: 0-8 `A = K_src R K_ref^-1` and 9-11 `b = K_src t` (row-major; the plane (n, d) at pixel (u, v)
    maps reference pixels to source pixels by `H = A + b q^T`, `q = K_ref^-T n / (d n . ray)`), 12-20 `R` and
    21-23 `t` (src_from_ref), 24-27 the source's fx, fy, cx, cy, 28-30 the source's centre in the reference
    frame (`-R^T t`).
    """
    K_src = np.asarray(K_src, np.float64).reshape(-1, 3, 3)
    rotations = np.asarray(src_from_ref_R, np.float64).reshape(-1, 3, 3)
    translations = np.asarray(src_from_ref_t, np.float64).reshape(-1, 3)
    K_ref_inv = np.linalg.inv(np.asarray(K_ref, np.float64))
    geo = np.zeros((len(K_src), GEO_COLUMNS))
    geo[:, 0:9] = (K_src @ rotations @ K_ref_inv).reshape(-1, 9)
    geo[:, 9:12] = np.einsum("sij,sj->si", K_src, translations)
    geo[:, 12:21] = rotations.reshape(-1, 9)
    geo[:, 21:24] = translations
    geo[:, 24:28] = np.stack([K_src[:, 0, 0], K_src[:, 1, 1], K_src[:, 0, 2], K_src[:, 1, 2]], 1)
    geo[:, 28:31] = -np.einsum("sji,sj->si", rotations, translations)
    return geo
