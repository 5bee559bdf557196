"""The CroCo transformer used by DUSt3R and MASt3R: patch embedding, 2D rotary positions, ViT encoder blocks and the
two-stream cross-attention decoder blocks.

Module and parameter names follow the released checkpoints (`patch_embed.proj`, `enc_blocks.N.attn.qkv`,
`dec_blocks.N.cross_attn.projq`, ...), so their state dicts load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mapforge.errors import InputError

LAYER_NORM_EPS = 1e-6  # CroCo builds every LayerNorm with eps=1e-6


def patch_positions(batch: int, rows: int, cols: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer `(y, x)` grid position of each patch token, row-major: `[batch, rows * cols, 2]` int64."""
    ys = torch.arange(rows, device=device)
    xs = torch.arange(cols, device=device)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(rows * cols, 2)
    return grid.unsqueeze(0).expand(batch, -1, -1)


class PatchEmbed(nn.Module):
    """Non-overlapping `patch_size` squares projected to `dim` features by one strided convolution."""

    def __init__(self, dim: int, patch_size: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`img [B, 3, H, W]` -> tokens `[B, N, dim]` and positions `[B, N, 2]` (y, x), N = (H / p) * (W / p)."""
        batch, _, height, width = img.shape
        p = self.patch_size
        if height % p or width % p:
            raise InputError(f"image size {height}x{width} is not a multiple of the {p}-pixel patch size")
        tokens = self.proj(img).flatten(2).transpose(1, 2)
        return tokens, patch_positions(batch, height // p, width // p, img.device)


class RoPE2D(nn.Module):
    """2D rotary position embedding: the first half of each head's channels is rotated by the token's row, the
    second half by its column, each half using the rotate-half layout with frequencies `base^(-2i / d)`."""

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = base
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _cos_sin(self, dim: int, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        key = (dim, length, device, dtype)
        if key not in self._cache:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2, device=device).float() / dim))
            angles = torch.outer(torch.arange(length, device=device, dtype=inv_freq.dtype), inv_freq).to(dtype)
            angles = torch.cat((angles, angles), dim=-1)
            self._cache[key] = (angles.cos(), angles.sin())
        return self._cache[key]

    @staticmethod
    def _rotate(x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        cos = cos[pos].unsqueeze(1)  # [B, 1, N, d]
        sin = sin[pos].unsqueeze(1)
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-second, first), dim=-1) * sin

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`x [B, heads, N, head_dim]` rotated by `positions [B, N, 2]` (y, x); same shape out."""
        half = x.shape[-1] // 2
        cos, sin = self._cos_sin(half, int(positions.max()) + 1, x.device, x.dtype)
        along_y, along_x = x.chunk(2, dim=-1)
        return torch.cat(
            (self._rotate(along_y, positions[..., 0], cos, sin), self._rotate(along_x, positions[..., 1], cos, sin)),
            dim=-1,
        )


class Mlp(nn.Module):
    """Linear, exact GELU, linear."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, dim = x.shape
    return x.reshape(batch, tokens, heads, dim // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and RoPE on queries and keys."""

    def __init__(self, dim: int, heads: int, rope: RoPE2D) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """`x [B, N, C]`, `pos [B, N, 2]` -> `[B, N, C]`."""
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.rope(q, pos), self.rope(k, pos), v)
        return self.proj(_merge_heads(out))


class CrossAttention(nn.Module):
    """Multi-head attention of one view's tokens (queries) to the other view's tokens (keys and values)."""

    def __init__(self, dim: int, heads: int, rope: RoPE2D) -> None:
        super().__init__()
        self.heads = heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        """`x [B, N, C]` attends to `memory [B, M, C]`; positions `[B, N, 2]`, `[B, M, 2]` -> `[B, N, C]`."""
        q = self.rope(_split_heads(self.projq(x), self.heads), pos)
        k = self.rope(_split_heads(self.projk(memory), self.heads), memory_pos)
        v = _split_heads(self.projv(memory), self.heads)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: self-attention then MLP, each residual."""

    def __init__(self, dim: int, heads: int, rope: RoPE2D, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = SelfAttention(dim, heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """CroCo decoder block: self-attention, cross-attention to the other view's (normalised) tokens, MLP."""

    def __init__(self, dim: int, heads: int, rope: RoPE2D, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        # registration order fixes the state_dict key order of the released checkpoints
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = SelfAttention(dim, heads, rope)
        self.cross_attn = CrossAttention(dim, heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm3 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, other: torch.Tensor, pos: torch.Tensor, other_pos: torch.Tensor) -> torch.Tensor:
        """`x [B, N, C]` (this view), `other [B, M, C]` (the other view, previous layer) -> `[B, N, C]`."""
        x = x + self.attn(self.norm1(x), pos)
        x = x + self.cross_attn(self.norm2(x), self.norm_y(other), pos, other_pos)
        return x + self.mlp(self.norm3(x))
