from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mapforge.errors import InputError
from mapforge.splat.rasterize import rasterize

BACKENDS = ["torch", "cpu"]


def random_scene(n: int, dtype: torch.dtype, seed: int, opacity_max: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([2.0, 1.6, 1.0], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.empty(n, 3, dtype=dtype).uniform_(math.log(0.01), math.log(0.15), generator=g))
    opacities = torch.rand(n, generator=g, dtype=dtype) * opacity_max
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    return [means, quats, scales, opacities, colors]


def camera(yaw: float, dtype: torch.dtype, width: int = 64, height: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """cam_from_world of a camera 3 units from the origin, rotated by `yaw` about the y axis, and its K."""
    c, s = math.cos(yaw), math.sin(yaw)
    rot = torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]], dtype=dtype)
    viewmat = torch.eye(4, dtype=dtype)
    viewmat[:3, :3] = rot
    viewmat[:3, 3] = torch.tensor([0.05, -0.03, 3.0], dtype=dtype)
    f = 1.1 * width
    K = torch.tensor([[f, 0.0, width / 2 + 0.3], [0.0, f * 1.02, height / 2 - 0.2], [0.0, 0.0, 1.0]], dtype=dtype)
    return viewmat, K


def render_and_grads(params, viewmat, K, width, height, backend, background=None):
    params = [p.detach().clone().requires_grad_() for p in params]
    image, alpha, depth, meta = rasterize(*params, viewmat, K, width, height, background=background, backend=backend)
    g = torch.Generator().manual_seed(7)
    weights = [torch.rand(t.shape, generator=g, dtype=torch.float64).to(t.dtype) for t in (image, alpha, depth)]
    loss = sum((w * t).sum() for w, t in zip(weights, (image, alpha, depth)))
    loss.backward()
    return [image.detach(), alpha.detach(), depth.detach()] + [p.grad for p in params] + [meta["means2d"].grad], meta


# float32 tolerances cover rounding: the CPU kernels compute in float64 internally, the torch reference in
# float32, and a pixel whose transmittance lands within rounding of the 1e-4 cut-off may keep one more Gaussian.
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 5e-5)])
def test_backends_agree_forward_and_backward(dtype: torch.dtype, tol: float) -> None:
    names = ["image", "alpha", "depth", "means", "quats", "scales", "opacities", "colors", "means2d"]
    for view in range(3):
        params = random_scene(300, dtype, seed=view)
        viewmat, K = camera(0.4 * view - 0.4, dtype)
        ref, meta_ref = render_and_grads(params, viewmat, K, 64, 48, "torch", torch.tensor([0.1, 0.2, 0.3]))
        fast, meta_fast = render_and_grads(params, viewmat, K, 64, 48, "cpu", torch.tensor([0.1, 0.2, 0.3]))
        assert meta_ref["n_intersections"] == meta_fast["n_intersections"] > 300
        assert torch.equal(meta_ref["tile_gaussian_ids"].long(), meta_fast["tile_gaussian_ids"].long())
        for name, a, b in zip(names, ref, fast):
            assert torch.isfinite(b).all(), name
            scale = max(1.0, a.abs().max().item())  # depth and gradients reach ~100: compare relative to size
            limit = 1e-5 if name in ("image", "alpha") else tol * scale
            assert (a - b).abs().max().item() <= limit, f"{name} differs in view {view}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_finite_differences(backend: str) -> None:
    # A single 16x16 tile, moderate opacities and a small step, so no threshold is crossed by the perturbation.
    params = random_scene(6, torch.float64, seed=3, opacity_max=0.8)
    params[2] = params[2] * 2.0
    viewmat, K = camera(0.2, torch.float64, 14, 12)
    background = torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64)

    def render(*p):
        image, alpha, depth, _ = rasterize(*p, viewmat, K, 14, 12, background=background, backend=backend)
        return image, alpha, depth

    inputs = tuple(p.clone().requires_grad_() for p in params)
    assert render(*inputs)[1].max() > 0.5  # the Gaussians are in view
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_viewmat_gradient_through_cpu_backend() -> None:
    params = random_scene(50, torch.float64, seed=5)
    viewmat, K = camera(0.1, torch.float64)
    grads = {}
    for backend in BACKENDS:
        v = viewmat.clone().requires_grad_()
        image, *_ = rasterize(*params, v, K, 64, 48, backend=backend)
        image.sum().backward()
        grads[backend] = v.grad
    assert grads["cpu"].abs().max() > 0
    assert torch.allclose(grads["cpu"], grads["torch"], atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_isotropic_gaussian_has_the_analytic_shape(backend: str) -> None:
    # On the optical axis, so the projected covariance is exactly (f sigma / z)^2 I + eps2d I.
    width, height, f, z, sigma, opacity = 40, 30, 50.0, 2.0, 0.06, 0.8
    cx, cy = 20.5, 14.5  # the centre of pixel (row 14, column 20)
    K = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    viewmat = torch.eye(4, dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0, z]], dtype=torch.float64)
    image, alpha, depth, meta = rasterize(
        means,
        torch.tensor([[0.3, -0.5, 0.2, 0.9]], dtype=torch.float64),  # irrelevant for an isotropic Gaussian
        torch.full((1, 3), sigma, dtype=torch.float64),
        torch.tensor([opacity], dtype=torch.float64),
        torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64),
        viewmat,
        K,
        width,
        height,
        backend=backend,
    )
    variance = (f * sigma / z) ** 2 + 0.3
    rows, cols = np.mgrid[0:height, 0:width]
    d2 = (cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2
    expected = np.minimum(0.99, opacity * np.exp(-0.5 * d2 / variance))
    expected[expected < 1 / 255] = 0.0
    radius = math.ceil(3 * math.sqrt(variance + math.sqrt(0.1)))  # 3DGS pads the larger eigenvalue's root term
    expected[np.abs(cols + 0.5 - cx) > radius + 16] = 0.0  # far outside its tiles nothing is drawn anyway
    got = alpha[..., 0].numpy()
    assert np.unravel_index(np.argmax(got), got.shape) == (14, 20)
    assert got[14, 20] == pytest.approx(opacity, rel=1e-12)
    assert np.allclose(got, expected, atol=1e-12)
    assert np.allclose(image[..., 1].numpy(), 0.5 * expected, atol=1e-12)
    assert np.allclose(depth[..., 0].numpy()[got > 0], z)
    assert meta["radii"].tolist() == [radius]
    assert torch.allclose(meta["means2d"], torch.tensor([[cx, cy]], dtype=torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_culled_gaussians_render_nothing_and_get_zero_gradients(backend: str) -> None:
    dtype = torch.float32
    viewmat, K = camera(0.0, dtype)
    means = torch.tensor([[0.0, 0.0, -5.0], [0.0, 0.0, -3.0 + 0.005], [40.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    params = [means, torch.randn(4, 4), torch.full((4, 3), 0.1), torch.full((4,), 0.9), torch.rand(4, 3)]
    params = [p.to(dtype).requires_grad_() for p in params]
    background = torch.tensor([0.2, 0.4, 0.6])
    image, alpha, depth, meta = rasterize(*params, viewmat, K, 64, 48, background=background, backend=backend)
    # behind the camera, inside the near plane, far outside the image; only the last one is visible
    assert meta["radii"].tolist()[:3] == [0, 0, 0] and meta["radii"][3] > 0
    (image.sum() + alpha.sum() + depth.sum()).backward()
    for p in params:
        assert torch.isfinite(p.grad).all()
        assert torch.count_nonzero(p.grad[:3]) == 0
        assert torch.count_nonzero(p.grad[3]) > 0
    assert torch.allclose(image[0, 0], background) and alpha[0, 0, 0] == 0 and depth[0, 0, 0] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_gaussians_give_the_background(backend: str) -> None:
    viewmat, K = camera(0.0, torch.float32)
    empty = [torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3)]
    background = torch.tensor([0.2, 0.4, 0.6], requires_grad=True)
    image, alpha, depth, meta = rasterize(*empty, viewmat, K, 20, 10, background=background, backend=backend)
    assert image.shape == (10, 20, 3) and alpha.shape == depth.shape == (10, 20, 1)
    assert torch.allclose(image, background.expand(10, 20, 3)) and alpha.abs().sum() == 0 and depth.abs().sum() == 0
    assert meta["n_intersections"] == 0
    image.sum().backward()
    assert torch.allclose(background.grad, torch.full((3,), 200.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_background_is_composited_behind(backend: str) -> None:
    params = random_scene(100, torch.float64, seed=11)
    viewmat, K = camera(0.3, torch.float64)
    black, alpha, _, _ = rasterize(*params, viewmat, K, 64, 48, backend=backend)
    background = torch.tensor([0.9, 0.1, 0.4], dtype=torch.float64)
    over, alpha2, _, _ = rasterize(*params, viewmat, K, 64, 48, background=background, backend=backend)
    assert torch.equal(alpha, alpha2)
    assert 0 <= alpha.min() < 0.5 < alpha.max() <= 1
    assert torch.allclose(over, black + (1 - alpha) * background, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opaque_stack_stops_at_minimum_transmittance(backend: str) -> None:
    # 30 nearly opaque Gaussians on one line of sight: the centre pixel stops compositing once transmittance
    # would drop below 1e-4, so the Gaussians behind get no gradient from it.
    n = 30
    means = torch.zeros(n, 3, dtype=torch.float64)
    means[:, 2] = torch.linspace(-0.5, 0.5, n, dtype=torch.float64)
    params = [
        means,
        torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).repeat(n, 1),
        torch.full((n, 3), 0.2, dtype=torch.float64),
        torch.full((n,), 0.95, dtype=torch.float64),
        torch.rand(n, 3, dtype=torch.float64),
    ]
    params = [p.requires_grad_() for p in params]
    viewmat, K = camera(0.0, torch.float64)
    image, alpha, _, meta = rasterize(*params, viewmat, K, 64, 48, backend=backend)
    col, row = meta["means2d"][0].detach().floor().long().tolist()
    (image[row, col].sum() + alpha[row, col].sum()).backward()
    # Each alpha is a little below 0.95 off the exact centre: three keep transmittance >= 1e-4, a fourth not.
    assert 1 - 2e-4 < alpha[row, col, 0].item() < 1 - 1e-4
    assert torch.count_nonzero(params[4].grad.abs().sum(1)) == 3
    assert params[4].grad[:3].abs().sum() > 0


def test_means2d_gradient_is_exposed_for_densification() -> None:
    params = [p.requires_grad_() for p in random_scene(200, torch.float32, seed=2)]
    viewmat, K = camera(0.0, torch.float32)
    image, _, _, meta = rasterize(*params, viewmat, K, 64, 48)
    assert meta["backend"] == "cpu"
    image.mean().backward()
    grad = meta["means2d"].grad
    visible = meta["radii"] > 0
    assert grad.shape == (200, 2) and torch.count_nonzero(grad[visible].norm(dim=1)) > 0.9 * visible.sum()
    assert torch.count_nonzero(grad[~visible]) == 0


def test_bad_inputs_raise_input_error() -> None:
    params = random_scene(5, torch.float32, seed=0)
    viewmat, K = camera(0.0, torch.float32)
    with pytest.raises(InputError, match="quats"):
        rasterize(params[0], params[1][:, :3], *params[2:], viewmat, K, 64, 48)
    with pytest.raises(InputError, match="backend"):
        rasterize(*params, viewmat, K, 64, 48, backend="cuda")
    with pytest.raises(InputError, match="float32 or all float64"):
        rasterize(params[0].double(), *params[1:], viewmat, K, 64, 48)
    with pytest.raises(InputError, match="size"):
        rasterize(*params, viewmat, K, 0, 48)
