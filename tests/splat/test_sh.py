from __future__ import annotations

import math

import pytest
import torch

from mapforge.splat.sh import SH_C0, SH_C1, eval_sh, num_sh_bases, rgb_to_sh0, sh0_to_rgb, sh_to_color


def test_degree_zero_is_constant_and_round_trips() -> None:
    rgb = torch.rand(5, 3, dtype=torch.float64)
    sh = rgb_to_sh0(rgb)[:, None, :]
    dirs = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(eval_sh(sh, dirs, 0) + 0.5, rgb)
    assert torch.allclose(sh0_to_rgb(sh[:, 0]), rgb)


def test_degree_one_follows_3dgs_signs() -> None:
    sh = torch.zeros(1, 4, 1, dtype=torch.float64)
    sh[0, :, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    x, y, z = 0.6, -0.48, 0.64  # unit vector
    value = eval_sh(sh, torch.tensor([[x, y, z]], dtype=torch.float64) * 7.0, 1)  # direction is normalised
    expected = SH_C0 * 1.0 - SH_C1 * y * 2.0 + SH_C1 * z * 3.0 - SH_C1 * x * 4.0
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_higher_bands_are_orthonormal_on_the_sphere() -> None:
    # Monte-Carlo check: with unit coefficients on one basis function, the mean of its square over the sphere is
    # 1 / (4 pi) for an orthonormal real SH basis.
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(100_000, 3, generator=g, dtype=torch.float64)
    for degree, index in [(2, 4), (2, 6), (3, 9), (3, 12), (3, 15)]:
        sh = torch.zeros(1, num_sh_bases(degree), 1, dtype=torch.float64)
        sh[0, index, 0] = 1.0
        value = eval_sh(sh.expand(len(dirs), -1, -1), dirs, degree)[:, 0]
        assert (value**2).mean().item() * 4 * math.pi == pytest.approx(1.0, abs=0.04)


def test_sh_to_color_clamps_and_uses_fewer_bands() -> None:
    sh = torch.randn(6, 16, 3, dtype=torch.float64, requires_grad=True)
    means = torch.randn(6, 3, dtype=torch.float64)
    color = sh_to_color(sh, means, torch.zeros(3, dtype=torch.float64), 2)
    assert color.shape == (6, 3) and (color >= 0).all()
    color.sum().backward()
    assert torch.count_nonzero(sh.grad[:, 9:]) == 0  # degree-3 coefficients unused at degree 2
    with pytest.raises(ValueError):
        eval_sh(torch.zeros(1, 4, 3), torch.ones(1, 3), 2)
