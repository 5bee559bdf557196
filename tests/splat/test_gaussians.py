"""Gaussian model: initialisation from points (kNN scales), boxes and files, export / import round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mapforge.errors import InputError
from mapforge.io.gaussians import read_splat, write_gaussian_ply, write_splat
from mapforge.io.ply import write_point_cloud
from mapforge.scene import Camera
from mapforge.splat.gaussians import Gaussians, load_initial
from mapforge.splat.sh import SH_C0


def test_from_points_scales_are_rms_distance_to_three_nearest_neighbours(rng) -> None:
    xyz = rng.normal(size=(50, 3))
    g = Gaussians.from_points(xyz, (rng.random((50, 3)) * 255).astype(np.uint8), sh_degree=2)
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    nearest = np.sort(d, axis=1)[:, 1:4]
    expected = np.sqrt(np.mean(nearest**2, axis=1))
    scales = g.scales.detach().numpy()
    np.testing.assert_allclose(scales, np.repeat(expected[:, None], 3, axis=1), rtol=1e-5)
    assert g.sh_degree == 2 and g.params["sh_rest"].shape == (50, 8, 3)
    np.testing.assert_allclose(g.opacities.detach().numpy(), 0.1, rtol=1e-6)
    np.testing.assert_array_equal(g.params["quats"].detach().numpy(), np.tile([1.0, 0, 0, 0], (50, 1)))


def test_from_points_colours_render_back_and_duplicates_get_a_floor() -> None:
    xyz = np.zeros((4, 3))
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]], np.uint8)
    g = Gaussians.from_points(xyz, rgb, sh_degree=0)
    colors = g.params["sh_dc"].detach()[:, 0] * SH_C0 + 0.5
    np.testing.assert_allclose(colors.numpy(), rgb / 255.0, atol=1e-6)
    assert torch.all(torch.isfinite(g.params["log_scales"]))
    with pytest.raises(InputError):
        Gaussians.from_points(np.zeros((0, 3)))


def test_random_in_box_stays_inside_and_is_seeded() -> None:
    low, high = np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 3.0])
    a = Gaussians.random_in_box(500, low, high, sh_degree=1, seed=3)
    b = Gaussians.random_in_box(500, low, high, sh_degree=1, seed=3)
    means = a.means.detach().numpy()
    assert len(a) == 500 and np.all(means >= low) and np.all(means <= high)
    torch.testing.assert_close(a.means, b.means)


def test_ply_round_trip_and_degree_padding(tmp_path, rng) -> None:
    g = Gaussians.from_points(rng.normal(size=(30, 3)), rng.random((30, 3)), sh_degree=3)
    with torch.no_grad():
        for p in g.params.values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    write_gaussian_ply(tmp_path / "g.ply", g.to_data())
    back = Gaussians.load(tmp_path / "g.ply")
    for name, p in g.params.items():
        torch.testing.assert_close(back.params[name], p.detach())
    low = Gaussians.load(tmp_path / "g.ply", sh_degree=1)
    assert low.sh_degree == 1
    torch.testing.assert_close(low.sh(), g.sh(1).detach())
    high = Gaussians.from_data(low.to_data(), sh_degree=3)
    assert high.sh_degree == 3 and torch.all(high.params["sh_rest"][:, 3:] == 0)
    assert torch.equal(load_initial(tmp_path / "g.ply").means, back.means)


def test_splat_export_keeps_positions_scales_and_dc_colour(tmp_path, rng) -> None:
    g = Gaussians.from_points(rng.normal(size=(20, 3)), rng.random((20, 3)) * 0.8 + 0.1, sh_degree=0, opacity=0.6)
    write_splat(tmp_path / "g.splat", g.to_data())
    back = Gaussians.from_data(read_splat(tmp_path / "g.splat"))
    order = np.argsort(back.means[:, 0].detach().numpy())
    ref = np.argsort(g.means[:, 0].detach().numpy())
    np.testing.assert_allclose(back.means.detach().numpy()[order], g.means.detach().numpy()[ref], atol=1e-6)
    np.testing.assert_allclose(back.scales.detach().numpy()[order], g.scales.detach().numpy()[ref], rtol=1e-5)
    np.testing.assert_allclose(back.opacities.detach().numpy()[order], 0.6, atol=1 / 255)
    colours = lambda m: (m.params["sh_dc"].detach()[:, 0] * SH_C0 + 0.5).numpy()  # noqa: E731
    np.testing.assert_allclose(colours(back)[order], colours(g)[ref], atol=1.5 / 255)


def test_load_initial_reads_point_clouds(tmp_path, rng) -> None:
    xyz = rng.normal(size=(10, 3))
    write_point_cloud(tmp_path / "p.ply", xyz, np.full((10, 3), 200, np.uint8))
    g = load_initial(tmp_path / "p.ply", sh_degree=1)
    np.testing.assert_allclose(g.means.detach().numpy(), xyz, atol=1e-6)
    with pytest.raises(InputError):
        load_initial(tmp_path / "missing.ply")


def test_render_of_a_single_gaussian_is_centred_and_rejects_distorted_cameras() -> None:
    g = Gaussians.from_points(np.array([[0.0, 0.0, 3.0]]), np.array([[1.0, 0.5, 0.0]]), sh_degree=1, opacity=0.9)
    with torch.no_grad():
        g.params["log_scales"].fill_(math.log(0.2))
    camera = Camera("PINHOLE", 32, 32, [30.0, 30.0, 16.0, 16.0])
    image, alpha, _, _ = g.render(camera, torch.eye(4))
    peak = np.unravel_index(int(alpha[..., 0].argmax()), (32, 32))
    assert peak in {(15, 15), (15, 16), (16, 15), (16, 16)}
    # Pixel (15, 15) has its centre half a pixel from the mean in x and y; sigma is 0.2 * 30 / 3 = 2 pixels plus
    # the rasterizer's 0.3 px^2 low-pass variance.
    weight = 0.9 * math.exp(-0.5 * 0.5 / (4.0 + 0.3))
    np.testing.assert_allclose(image[15, 15].detach().numpy(), [weight * a for a in (1.0, 0.5, 0.0)], atol=2e-3)
    with pytest.raises(InputError):
        g.render(Camera("SIMPLE_RADIAL", 32, 32, [30.0, 16.0, 16.0, 0.1]), torch.eye(4))


def test_load_initial_reads_splat_files(tmp_path, rng) -> None:
    g = Gaussians.from_points(rng.normal(size=(12, 3)), rng.random((12, 3)), sh_degree=0, opacity=0.7)
    write_splat(tmp_path / "g.splat", g.to_data())
    back = load_initial(tmp_path / "g.splat", sh_degree=2)
    assert len(back) == 12 and back.sh_degree == 2
    with pytest.raises(InputError):
        (tmp_path / "g.txt").write_text("x")
        load_initial(tmp_path / "g.txt")
