"""PatchMatch stereo: the numba kernels against the torch reference, and depth against the exact scene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mapforge.errors import InputError
from mapforge.mvs.patchmatch import rules
from mapforge.mvs.patchmatch.api import DepthNormal, PatchMatchConfig, patch_match
from mapforge.mvs.patchmatch.torch_ref import warp_positions
from tests.mvs.scenes import exact_normals, orbit, relative_errors, view

REF = 3
NEIGHBOURS = (1, -1, 2, -2)


def _views(width: int, height: int, device: str = "cpu", depth: bool = False):
    data = orbit(width, height)
    ref = view(data, REF, device, depth)
    sources = [view(data, (REF + k) % len(data), device, depth) for k in NEIGHBOURS]
    truth = data.load_depth(REF)
    return data, ref, sources, (0.8 * float(truth.min()), 1.25 * float(truth.max())), truth


def _exact_init(data, device: str = "cpu") -> DepthNormal:
    depth = torch.from_numpy(data.load_depth(REF)).to(device)
    return DepthNormal(depth, torch.from_numpy(exact_normals(data, REF)).to(device), torch.zeros(0))


@pytest.mark.parametrize("geometric", [False, True])
def test_numba_kernels_make_the_torch_reference_choices(geometric: bool, device: str) -> None:
    """Bit for bit on the CPU; on a GPU (float64 there too) the same choices up to a few float ties."""
    data, ref, sources, depth_range, _ = _views(48, 36, depth=geometric)
    config = PatchMatchConfig(num_levels=1, iterations=(2,), geom_iterations=2, filter_min_num_consistent=1)
    init = None
    if geometric:
        init = _exact_init(data)
        init.depth *= 1.0 + 0.05 * torch.from_numpy(np.random.default_rng(1).standard_normal(init.depth.shape)).float()
    fast = patch_match(ref, sources, depth_range, config, init=init, geometric=geometric, backend="cpu")
    _, ref, sources, _, _ = _views(48, 36, device, depth=geometric)
    if init is not None:
        init = DepthNormal(init.depth.to(device), init.normal.to(device), init.cost)
    reference = patch_match(ref, sources, depth_range, config, init=init, geometric=geometric, backend="torch",
                            dtype=torch.float64)
    same = np.isclose(fast.depth.numpy(), reference.depth.cpu().numpy(), rtol=1e-5, atol=0)
    if device == "cpu":
        assert same.all()
        np.testing.assert_allclose(fast.normal.numpy(), reference.normal.numpy(), atol=1e-5)
        np.testing.assert_allclose(fast.cost.numpy(), reference.cost.numpy(), atol=1e-5)
        assert np.array_equal(fast.consistent.numpy(), reference.consistent.numpy())
    else:
        assert same.mean() > 0.98
    assert 0 < (fast.depth > 0).float().mean() < 1


def test_window_warp_is_the_homography_to_a_thousandth_of_a_pixel() -> None:
    rng = np.random.default_rng(0)
    H = torch.eye(3, dtype=torch.float64).repeat(64, 1, 1, 1)  # [P=64, C=1, 3, 3]
    H = H + torch.from_numpy(rng.normal(0, 0.02, (64, 1, 3, 3)))
    H[..., 2, 0:2] = torch.from_numpy(rng.normal(0, 4e-4, (64, 1, 2)))  # |eps| up to about 0.01 per pixel
    H[..., 0:2, 2] = torch.from_numpy(rng.uniform(-50, 50, (64, 1, 2)))
    u = torch.from_numpy(rng.uniform(50, 600, 64))
    v = torch.from_numpy(rng.uniform(50, 400, 64))
    grid = torch.arange(-5.0, 6.0, 2.0, dtype=torch.float64)
    dy, dx = torch.meshgrid(grid, grid, indexing="ij")
    du, dv = dx.reshape(1, -1).repeat(64, 1), dy.reshape(1, -1).repeat(64, 1)
    sx, sy, valid, _, _ = warp_positions(H, u, v, du, dv)
    x, y = (u[:, None] + du)[:, None], (v[:, None] + dv)[:, None]
    z = H[..., 2, 0:1] * x + H[..., 2, 1:2] * y + H[..., 2, 2:3]
    exact_x = (H[..., 0, 0:1] * x + H[..., 0, 1:2] * y + H[..., 0, 2:3]) / z - 0.5
    exact_y = (H[..., 1, 0:1] * x + H[..., 1, 1:2] * y + H[..., 1, 2:3]) / z - 0.5
    assert valid.all()
    assert (sx - exact_x).abs().max() < 1e-3 and (sy - exact_y).abs().max() < 1e-3


def test_the_true_plane_costs_less_than_a_wrong_one() -> None:
    data, ref, sources, depth_range, truth = _views(160, 120)
    init = _exact_init(data)
    config = PatchMatchConfig(num_levels=1, iterations=(0,))
    right = patch_match(ref, sources, depth_range, config, init=init, filter=False)
    init.depth *= 1.03
    wrong = patch_match(ref, sources, depth_range, config, init=init, filter=False)
    # pixels whose true plane matches at all (the rest are occluded, textureless or outside the sources)
    matched = right.cost < 0.5
    assert matched.float().mean() > 0.4
    assert (right.cost < wrong.cost)[matched].float().mean() > 0.9


def test_photometric_depth_matches_the_scene(device: str) -> None:
    _, ref, sources, depth_range, truth = _views(160, 120, device)
    backend = "cpu" if device == "cpu" else "torch"
    result = patch_match(ref, sources, depth_range, PatchMatchConfig(min_level_size=80), filter=False, backend=backend)
    errors = relative_errors(result.depth.cpu().numpy(), truth)
    # 160x120 is small for 11x11 windows; at 640x480 the median error is about 0.1%
    assert np.median(errors) < 0.012
    assert np.mean(errors < 0.01) > 0.45


def test_geometric_pass_keeps_only_consistent_depth() -> None:
    data, ref, sources, depth_range, truth = _views(160, 120, depth=True)
    photometric = patch_match(ref, sources, depth_range, PatchMatchConfig(min_level_size=80), filter=False)
    result = patch_match(ref, sources, depth_range, PatchMatchConfig(), init=photometric, geometric=True)
    kept = result.depth.numpy() > 0
    errors = relative_errors(result.depth.numpy(), truth)
    assert 0.5 < kept.mean() < 1.0
    assert np.mean(errors < 0.01) > 0.85
    assert np.all(result.consistent.numpy()[kept] >= 2)
    assert np.all(result.normal.numpy()[~kept] == 0)


def test_normals_face_the_camera_and_are_unit() -> None:
    _, ref, sources, depth_range, _ = _views(64, 48)
    result = patch_match(ref, sources, depth_range, PatchMatchConfig(num_levels=1, iterations=(1,)), filter=False)
    normal = result.normal.numpy()
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-5)
    K = ref.K
    cols, rows = np.meshgrid(np.arange(64) + 0.5, np.arange(48) + 0.5)
    rays = np.stack([(cols - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], np.ones_like(cols)], -1)
    assert np.all((normal * rays).sum(-1) < 0)


def test_same_seed_same_maps() -> None:
    _, ref, sources, depth_range, _ = _views(48, 36)
    config = PatchMatchConfig(num_levels=1, iterations=(1,))
    first = patch_match(ref, sources, depth_range, config, seed=5, filter=False)
    again = patch_match(ref, sources, depth_range, config, seed=5, filter=False)
    other = patch_match(ref, sources, depth_range, config, seed=6, filter=False)
    assert torch.equal(first.depth, again.depth)
    assert not torch.equal(first.depth, other.depth)


def test_region_offsets_reach_the_other_colour() -> None:
    for g in range(8):
        offsets = rules.REGION_OFFSETS[g, : rules.REGION_COUNTS[g]]
        assert np.all((offsets.sum(1) % 2) != 0)
        assert len({tuple(o) for o in offsets}) == len(offsets)


@pytest.mark.parametrize(
    ("depth_range", "message"), [((2.0, 1.0), "depth range"), ((0.0, 1.0), "depth range"), ((1.0, math.inf), "depth range")]
)
def test_bad_depth_range_is_an_input_error(depth_range, message: str) -> None:
    _, ref, sources, _, _ = _views(48, 36)
    with pytest.raises(InputError, match=message):
        patch_match(ref, sources, depth_range)


def test_bad_arguments_are_input_errors() -> None:
    _, ref, sources, depth_range, _ = _views(48, 36)
    with pytest.raises(InputError, match="source"):
        patch_match(ref, [], depth_range)
    with pytest.raises(InputError, match="backend"):
        patch_match(ref, sources, depth_range, backend="gpu")
    with pytest.raises(InputError, match="geometric"):
        patch_match(ref, sources, depth_range, geometric=True)
    with pytest.raises(InputError, match="num_scored_views"):
        PatchMatchConfig(num_best_views=5, num_scored_views=4)
