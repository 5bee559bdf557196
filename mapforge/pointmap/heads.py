"""Prediction heads turning decoder tokens into dense per-pixel maps, and the output activations.

Heads return raw maps `[B, C, H, W]`; `activate` turns them into `pts3d`, `conf`, `desc`, `desc_conf`.
Channel layout of the raw map: 3 point coordinates, 1 confidence (when the model has one), then for MASt3R the
local descriptor channels and one descriptor confidence (`two_confs`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mapforge.pointmap.croco import Mlp

# DPT widths: token features are reprojected to these four widths, then fused at FEATURE_DIM (DPT-Hybrid defaults,
# kept by CroCo/DUSt3R for every model size).
DPT_LAYER_DIMS = (96, 192, 384, 768)
DPT_FEATURE_DIM = 256
DPT_LAST_DIM = DPT_FEATURE_DIM // 2


def tokens_to_map(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """`[B, rows * cols, C]` row-major tokens -> `[B, C, rows, cols]`."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)


class LinearHead(nn.Module):
    """One linear layer per token producing a `patch x patch` block of `channels` outputs (pixel shuffle)."""

    def __init__(self, dec_dim: int, channels: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(dec_dim, channels * patch_size**2)

    def forward(self, decoder_outputs: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Last decoder output `[B, N, D]` -> raw map `[B, channels, H, W]`."""
        p = self.patch_size
        feat = tokens_to_map(self.proj(decoder_outputs[-1]), image_size[0] // p, image_size[1] // p)
        return F.pixel_shuffle(feat, p)


class ResidualConvUnit(nn.Module):
    """relu, conv3x3, relu, conv3x3, plus the input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """DPT refinement: add the (refined) skip features, refine, upsample x2 (bilinear, align_corners), 1x1 conv."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Upsample2x(nn.Module):
    """Parameter-free bilinear x2 upsampling (a module so that it keeps its index in `head`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class DPTScratch(nn.Module):
    """The DPT fusion stage. `layerK_rn` and `layer_rn[K-1]` are the same convolutions: the released checkpoints
    store them under both names, so both are registered."""

    def __init__(self, layer_dims: tuple[int, ...], features: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(d, features, 3, padding=1, bias=False) for d in layer_dims]
        for i, conv in enumerate(convs):
            setattr(self, f"layer{i + 1}_rn", conv)
        self.layer_rn = nn.ModuleList(convs)
        for i in range(len(layer_dims)):
            setattr(self, f"refinenet{i + 1}", FusionBlock(features))


class DPT(nn.Module):
    """Dense Prediction Transformer decoder (Ranftl et al. 2021) over four hooked token layers.

    Hooked layers are reassembled at strides 4, 8, 16 and 32 of the input image (transposed convolutions x4 and x2,
    identity, strided convolution), fused coarse to fine, and regressed by a small convolutional head at full
    resolution.
    """

    def __init__(self, hooks: list[int], token_dims: list[int], channels: int, patch_size: int = 16) -> None:
        super().__init__()
        self.hooks = hooks
        self.patch_size = patch_size
        d = DPT_LAYER_DIMS
        self.scratch = DPTScratch(d, DPT_FEATURE_DIM)
        self.head = nn.Sequential(
            nn.Conv2d(DPT_FEATURE_DIM, DPT_FEATURE_DIM // 2, 3, padding=1),
            Upsample2x(),
            nn.Conv2d(DPT_FEATURE_DIM // 2, DPT_LAST_DIM, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(DPT_LAST_DIM, channels, 1),
        )
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(token_dims[0], d[0], 1), nn.ConvTranspose2d(d[0], d[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(token_dims[1], d[1], 1), nn.ConvTranspose2d(d[1], d[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(token_dims[2], d[2], 1)),
            nn.Sequential(nn.Conv2d(token_dims[3], d[3], 1), nn.Conv2d(d[3], d[3], 3, stride=2, padding=1)),
        ])

    def forward(self, decoder_outputs: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Decoder outputs (encoder output first) -> raw map `[B, channels, H, W]`."""
        rows, cols = image_size[0] // self.patch_size, image_size[1] // self.patch_size
        layers = [
            self.scratch.layer_rn[i](post(tokens_to_map(decoder_outputs[hook], rows, cols)))
            for i, (hook, post) in enumerate(zip(self.hooks, self.act_postprocess))
        ]
        s = self.scratch
        # the stride-2 convolution rounds odd token counts up; crop back to the stride-16 grid
        path = s.refinenet4(layers[3])[:, :, : layers[2].shape[2], : layers[2].shape[3]]
        path = s.refinenet3(path, layers[2])
        path = s.refinenet2(path, layers[1])
        path = s.refinenet1(path, layers[0])
        return self.head(path)


def dpt_hooks(dec_depth: int) -> list[int]:
    """Decoder outputs fed to the DPT: the encoder output and the blocks at 1/2, 3/4 and the end of the decoder."""
    return [0, dec_depth * 2 // 4, dec_depth * 3 // 4, dec_depth]


class DPTHead(nn.Module):
    """DUSt3R's 'dpt' head: a DPT on [encoder, dec/2, 3dec/4, dec] outputs."""

    def __init__(self, enc_dim: int, dec_dim: int, dec_depth: int, channels: int, patch_size: int) -> None:
        super().__init__()
        self.dpt = DPT(dpt_hooks(dec_depth), [enc_dim, dec_dim, dec_dim, dec_dim], channels, patch_size)

    def forward(self, decoder_outputs: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        return self.dpt(decoder_outputs, image_size)


class DPTWithLocalFeaturesHead(nn.Module):
    """MASt3R's 'catmlp+dpt' head: the DPT for points and confidence, plus an MLP on the concatenated encoder and
    last decoder tokens giving `desc_channels` per pixel (pixel shuffle), appended after the DPT channels."""

    def __init__(
        self, enc_dim: int, dec_dim: int, dec_depth: int, channels: int, desc_channels: int, patch_size: int,
        hidden_factor: float = 4.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.dpt = DPT(dpt_hooks(dec_depth), [enc_dim, dec_dim, dec_dim, dec_dim], channels, patch_size)
        in_dim = enc_dim + dec_dim
        self.head_local_features = Mlp(in_dim, int(hidden_factor * in_dim), desc_channels * patch_size**2)

    def forward(self, decoder_outputs: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        p = self.patch_size
        dense = self.dpt(decoder_outputs, image_size)
        tokens = torch.cat([decoder_outputs[0], decoder_outputs[-1]], dim=-1)
        local = tokens_to_map(self.head_local_features(tokens), image_size[0] // p, image_size[1] // p)
        return torch.cat([dense, F.pixel_shuffle(local, p)], dim=1)


def activate_points(xyz: torch.Tensor, mode: str) -> torch.Tensor:
    """Raw `[..., 3]` -> points. 'exp': keep the direction, map the norm d to exp(d) - 1; 'square': d^2;
    'linear': unchanged."""
    if mode == "linear":
        return xyz
    d = xyz.norm(dim=-1, keepdim=True)
    direction = xyz / d.clip(min=1e-8)
    if mode == "exp":
        return direction * torch.expm1(d)
    if mode == "square":
        return direction * d.square()
    raise ValueError(f"unknown depth mode {mode!r}")


def activate_confidence(x: torch.Tensor, mode: str, vmin: float, vmax: float) -> torch.Tensor:
    """Raw `[...]` -> confidence: 'exp' gives vmin + min(exp(x), vmax - vmin); 'sigmoid' maps into [vmin, vmax]."""
    if mode == "exp":
        return vmin + x.exp().clip(max=vmax - vmin)
    if mode == "sigmoid":
        return (vmax - vmin) * torch.sigmoid(x) + vmin
    raise ValueError(f"unknown confidence mode {mode!r}")


def activate(
    raw: torch.Tensor,
    depth_mode: tuple[str, float, float],
    conf_mode: tuple[str, float, float] | None,
    desc_dim: int = 0,
    desc_conf_mode: tuple[str, float, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Raw head output `[B, C, H, W]` -> `pts3d [B, H, W, 3]`, `conf [B, H, W]` and, when `desc_dim` > 0,
    unit-norm `desc [B, H, W, desc_dim]` and `desc_conf [B, H, W]` (from its own channel if `desc_conf_mode` is
    given, else a copy of `conf`)."""
    fmap = raw.permute(0, 2, 3, 1)
    mode, vmin, vmax = depth_mode
    if vmin != -math.inf or vmax != math.inf:
        raise ValueError(f"bounded depth mode {depth_mode!r} is not supported")
    out = {"pts3d": activate_points(fmap[..., 0:3], mode)}
    if conf_mode is not None:
        out["conf"] = activate_confidence(fmap[..., 3], *conf_mode)
    if desc_dim:
        start = 3 + (conf_mode is not None)
        desc = fmap[..., start : start + desc_dim]
        out["desc"] = desc / desc.norm(dim=-1, keepdim=True)
        if desc_conf_mode is not None:
            out["desc_conf"] = activate_confidence(fmap[..., start + desc_dim], *desc_conf_mode)
        else:
            out["desc_conf"] = out["conf"].clone()
    return out
