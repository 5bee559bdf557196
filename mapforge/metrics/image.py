"""Image quality metrics for novel-view synthesis: PSNR and SSIM (differentiable, used as a training loss too).

Images are in [0, 1], either one image `[H, W, C]` (also `[H, W]`) or a batch `[B, C, H, W]`, as numpy arrays or
torch tensors. Torch inputs give torch scalars (differentiable, on the input's device); numpy inputs give floats.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mapforge.errors import InputError

Array = np.ndarray | torch.Tensor

# SSIM constants of Wang et al. 2004, used unchanged by the 3DGS / NeRF evaluation code.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _to_batch(image: Array, name: str) -> torch.Tensor:
    """`[H, W]`, `[H, W, C]` or `[B, C, H, W]` (numpy or torch) to a `[B, C, H, W]` floating tensor."""
    tensor = torch.from_numpy(np.asarray(image)) if isinstance(image, np.ndarray) else image
    if not tensor.is_floating_point():
        raise InputError(f"{name} must be a floating-point image in [0, 1], got {tensor.dtype}")
    if tensor.ndim == 2:
        return tensor[None, None]
    if tensor.ndim == 3:
        return tensor.permute(2, 0, 1)[None]
    if tensor.ndim == 4:
        return tensor
    raise InputError(f"{name} must be [H, W], [H, W, C] or [B, C, H, W], got shape {tuple(tensor.shape)}")


def _pair(pred: Array, target: Array) -> tuple[torch.Tensor, torch.Tensor, bool]:
    is_numpy = isinstance(pred, np.ndarray) and isinstance(target, np.ndarray)
    x, y = _to_batch(pred, "pred"), _to_batch(target, "target")
    if x.shape != y.shape:
        raise InputError(f"images differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if x.dtype != y.dtype:
        dtype = torch.promote_types(x.dtype, y.dtype)
        x, y = x.to(dtype), y.to(dtype)
    if x.device != y.device:
        # A numpy image follows the tensor to its device; two tensors on different devices are a caller bug.
        if isinstance(pred, np.ndarray):
            x = x.to(y.device)
        elif isinstance(target, np.ndarray):
            y = y.to(x.device)
        else:
            raise InputError(f"images are on different devices: {x.device} vs {y.device}")
    return x, y, is_numpy


def psnr(pred: Array, target: Array, mask: Array | None = None) -> Array:
    """Peak signal-to-noise ratio in dB for images in [0, 1]: `-10 log10(MSE)`.

    A batch gives the mean of the per-image PSNRs (how NeRF / 3DGS papers average over test views), not the PSNR
    of the pooled MSE. With `mask` (`[H, W]` for one image, `[B, H, W]` or `[B, 1, H, W]` for a batch; boolean or
    weights in [0, 1]), the MSE is the mask-weighted mean over the masked pixels and all channels.

    Returns a torch scalar for torch inputs, a float for numpy inputs. Identical images give `inf`.
    """
    x, y, is_numpy = _pair(pred, target)
    sq = (x - y) ** 2
    if mask is None:
        mse = sq.mean(dim=(1, 2, 3))
    else:
        m = torch.from_numpy(np.asarray(mask)) if isinstance(mask, np.ndarray) else mask
        m = m.to(device=x.device, dtype=x.dtype)
        if m.ndim == 2:
            m = m[None, None]
        elif m.ndim == 3:
            m = m[:, None]
        if m.ndim != 4 or m.shape[0] != x.shape[0] or m.shape[1] != 1 or m.shape[2:] != x.shape[2:]:
            raise InputError(f"mask of shape {tuple(mask.shape)} does not match images of shape {tuple(pred.shape)}")
        weight = m.sum(dim=(1, 2, 3)) * x.shape[1]
        if bool((weight <= 0).any()):
            raise InputError("mask selects no pixels")
        mse = (sq * m).sum(dim=(1, 2, 3)) / weight
    value = (-10.0 * torch.log10(mse)).mean()
    return float(value) if is_numpy else value


def _gaussian_kernel(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = SSIM_WINDOW // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _blur(stacked: torch.Tensor) -> torch.Tensor:
    """Gaussian window (11 taps, sigma 1.5, zero padding) over every channel of `[B, K, H, W]`, separably.

    With a symmetric kernel and zero padding this linear map is its own adjoint, so the SSIM backward uses it too.
    """
    kernel = _gaussian_kernel(stacked.dtype, stacked.device)
    groups = stacked.shape[1]
    radius = SSIM_WINDOW // 2
    # Grouped (depthwise) convolutions: on CPU over 10x faster than one channel over a [B * K, 1, H, W] batch.
    out = F.conv2d(stacked, kernel.view(1, 1, -1, 1).expand(groups, 1, -1, 1), padding=(radius, 0), groups=groups)
    return F.conv2d(out, kernel.view(1, 1, 1, -1).expand(groups, 1, 1, -1), padding=(0, radius), groups=groups)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, need_x: bool, need_y: bool) -> tuple[torch.Tensor | None, ...]:
    """The SSIM map and, when a gradient is needed, its derivatives with respect to the window statistics."""
    channels = x.shape[1]
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1))
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(channels, dim=1)
    mu_xy = mu_x * mu_y
    a1 = 2 * mu_xy + SSIM_C1
    a2 = 2 * (e_xy - mu_xy) + SSIM_C2
    b1 = mu_x * mu_x + mu_y * mu_y + SSIM_C1
    b2 = e_xx + e_yy - b1 + (SSIM_C1 + SSIM_C2)
    inv_den = 1.0 / (b1 * b2)
    s = a1 * a2 * inv_den
    if not (need_x or need_y):
        return s, None, None, None, None
    inv_b2 = 1.0 / b2
    common = (a2 - a1) * inv_den
    spread = s * (1.0 / b1 - inv_b2)
    d_mu_x = 2 * (mu_y * common - mu_x * spread) if need_x else None
    d_mu_y = 2 * (mu_x * common - mu_y * spread) if need_y else None
    return s, d_mu_x, d_mu_y, -s * inv_b2, 2 * a1 * inv_den


class _SSIMMap(torch.autograd.Function):
    """SSIM map with a hand-written backward: one blur of 3-4 derivative maps instead of autograd's long graph,
    saving 5 image-sized tensors for the backward where autograd saves the equivalent of 21 (memory matters for
    large renders on a laptop).

    With `S = A1 A2 / (B1 B2)`, `A1 = 2 mx my + C1`, `A2 = 2 (Exy - mx my) + C2`, `B1 = mx^2 + my^2 + C1`,
    `B2 = Exx + Eyy - mx^2 - my^2 + C2` (m, E: window means of x, y and their products), the chain rule through
    the self-adjoint blur gives `dL/dx = blur(g dS/dmx) + 2 x blur(g dS/dExx) + y blur(g dS/dExy)`, where
    `dS/dmx = 2 (my (A2 - A1) / (B1 B2) - mx S (1/B1 - 1/B2))`, `dS/dExx = -S / B2`, `dS/dExy = 2 A1 / (B1 B2)`,
    and symmetrically for y. Supports first derivatives only; checked against autograd in the tests.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        need_x, need_y = ctx.needs_input_grad
        s, d_mu_x, d_mu_y, d_e_sq, d_e_xy = _ssim_terms(x, y, need_x, need_y)
        ctx.save_for_backward(x, y, d_mu_x, d_mu_y, d_e_sq, d_e_xy)
        return s

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, y, d_mu_x, d_mu_y, d_e_sq, d_e_xy = ctx.saved_tensors
        channels = x.shape[1]
        maps = [m for m in (d_mu_x, d_mu_y) if m is not None] + [d_e_sq, d_e_xy]
        blurred = _blur(torch.cat([grad * m for m in maps], dim=1)).split(channels, dim=1)
        b_sq, b_xy = blurred[-2], blurred[-1]
        grad_x = blurred[0] + 2 * x * b_sq + y * b_xy if d_mu_x is not None else None
        grad_y = blurred[-3] + 2 * y * b_sq + x * b_xy if d_mu_y is not None else None
        return grad_x, grad_y


def ssim_map(pred: Array, target: Array) -> torch.Tensor:
    """Per-pixel SSIM `[B, C, H, W]` (torch, differentiable) for images in [0, 1].

    Local statistics use an 11x11 Gaussian window with sigma 1.5, applied as two 1D passes of a grouped
    convolution over the stacked `[x, y, x*x, y*y, x*y]` channels. The window is zero-padded at the borders
    (`padding = 5`), as in the SSIM of the 3DGS training and evaluation code, so values within 5 pixels of the
    border differ from implementations that crop the border (scikit-image) or reflect it; interior values agree
    with scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1)`. Gradients (first order) flow to whichever input requires them.
    """
    x, y, _ = _pair(pred, target)
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return _SSIMMap.apply(x, y)
    return _ssim_terms(x, y, False, False)[0]


def ssim(pred: Array, target: Array) -> Array:
    """Mean structural similarity of images in [0, 1] (1 = identical); see `ssim_map` for the window and borders.

    The mean runs over all pixels and channels of each image, then over the batch. Differentiable: splat and
    NeRF trainers use `1 - ssim(render, image)` as the D-SSIM loss. Returns a torch scalar for torch inputs, a
    float for numpy inputs.
    """
    value = ssim_map(pred, target).mean()
    return float(value) if isinstance(pred, np.ndarray) and isinstance(target, np.ndarray) else value
