from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mapforge.errors import InputError
from mapforge.metrics.image import SSIM_C1, SSIM_C2, _blur, psnr, ssim, ssim_map


def noisy_pair(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    a = rng.random(shape)
    return a, np.clip(a + sigma * rng.standard_normal(shape), 0, 1)


def autograd_ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The textbook formula left to autograd, to check the hand-written backward against."""
    c = x.shape[1]
    mu_x, mu_y, e_xx, e_yy, e_xy = _blur(torch.cat([x, y, x * x, y * y, x * y], 1)).split(c, 1)
    var_x, var_y, cov = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
    return numerator / ((mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2))


def test_psnr_matches_scikit_image(rng):
    a, b = noisy_pair(rng, (40, 50, 3))
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-12)
    value = psnr(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert isinstance(value, torch.Tensor) and float(value) == pytest.approx(psnr(a, b), rel=1e-5)
    assert psnr(a, a) == float("inf")
    mixed = psnr(torch.from_numpy(a).float(), b)  # a torch render against a numpy image
    assert isinstance(mixed, torch.Tensor) and float(mixed) == pytest.approx(psnr(a, b), rel=1e-5)


def test_psnr_batch_is_mean_of_images(rng):
    a, b = noisy_pair(rng, (3, 3, 20, 24))
    b[1] = np.clip(a[1] + 0.3 * rng.standard_normal(a[1].shape), 0, 1)
    per_image = [peak_signal_noise_ratio(a[k], b[k], data_range=1.0) for k in range(3)]
    assert psnr(a, b) == pytest.approx(np.mean(per_image), rel=1e-12)


def test_psnr_mask(rng):
    a, b = noisy_pair(rng, (20, 30, 3))
    assert psnr(a, b, mask=np.ones((20, 30), dtype=bool)) == pytest.approx(psnr(a, b))
    mask = np.zeros((20, 30), dtype=bool)
    mask[:, :10] = True
    assert psnr(a, b, mask=mask) == pytest.approx(psnr(a[:, :10], b[:, :10]))
    with pytest.raises(InputError):
        psnr(a, b, mask=np.zeros((20, 30), dtype=bool))
    with pytest.raises(InputError):
        psnr(a, b, mask=np.ones((10, 30), dtype=bool))


def test_ssim_matches_scikit_image_away_from_the_border(rng):
    a, b = noisy_pair(rng, (48, 64, 3))
    reference_mean, reference_map = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1, full=True
    )
    ours = ssim_map(a, b)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours[5:-5, 5:-5], reference_map[5:-5, 5:-5], atol=1e-10)
    assert ours[5:-5, 5:-5].mean() == pytest.approx(reference_mean, abs=1e-10)
    # float32 torch input, as in training
    ours32 = ssim_map(torch.from_numpy(a).float(), torch.from_numpy(b).float())[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours32[5:-5, 5:-5], reference_map[5:-5, 5:-5], atol=1e-4)


def test_ssim_layouts_and_identity(rng):
    a, b = noisy_pair(rng, (30, 40, 3))
    value = ssim(a, b)
    assert isinstance(value, float) and 0 < value < 1
    batch = torch.from_numpy(np.stack([a, a]).transpose(0, 3, 1, 2).copy())
    target = torch.from_numpy(np.stack([b, b]).transpose(0, 3, 1, 2).copy())
    assert float(ssim(batch, target)) == pytest.approx(value, abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a[..., 0], b[..., 0]) == pytest.approx(float(ssim_map(a, b)[:, :1].mean()), abs=1e-12)
    with pytest.raises(InputError):
        ssim(a, b[:-1])
    with pytest.raises(InputError):
        ssim(a[None, None], b[None, None])
    with pytest.raises(InputError):
        ssim((a * 255).astype(np.uint8), (b * 255).astype(np.uint8))


def test_ssim_gradcheck():
    x = torch.rand(1, 2, 12, 13, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 12, 13, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ssim_map, (x, y), fast_mode=True)
    small_x, small_y = x[:, :1, :7, :8].detach().requires_grad_(), y[:, :1, :7, :8].detach()
    assert torch.autograd.gradcheck(lambda a: ssim(a, small_y), (small_x,))


def test_ssim_gradient_matches_autograd_formula():
    x = torch.rand(2, 3, 33, 29, requires_grad=True)
    y = torch.rand(2, 3, 33, 29, requires_grad=True)
    weights = torch.rand(2, 3, 33, 29)
    (ssim_map(x, y) * weights).sum().backward()
    gx, gy = x.grad.clone(), y.grad.clone()
    x.grad = y.grad = None
    (autograd_ssim_map(x, y) * weights).sum().backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gy, y.grad, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(gx).all()


def test_ssim_loss_on_hwc_tensor_matches_the_formula_on_channels_first():
    """The D-SSIM loss the trainers take on `[H, W, 3]` renders: value and gradient of the textbook formula on the
    same pixels laid out `[1, 3, H, W]` (a wrong axis order in the HWC path changes both)."""
    render = torch.rand(16, 20, 3, dtype=torch.float64, requires_grad=True)
    image = torch.rand(16, 20, 3, dtype=torch.float64)
    loss = 1 - ssim(render, image)
    loss.backward()
    reference_render = render.detach().permute(2, 0, 1)[None].clone().requires_grad_()
    reference = 1 - autograd_ssim_map(reference_render, image.permute(2, 0, 1)[None]).mean()
    reference.backward()
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), abs=1e-12)
    torch.testing.assert_close(render.grad, reference_render.grad[0].permute(1, 2, 0), rtol=1e-9, atol=1e-12)
