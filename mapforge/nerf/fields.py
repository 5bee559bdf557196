"""Radiance fields: the original NeRF MLP and an instant-ngp-style hash-grid field."""

from __future__ import annotations

import torch
from torch import nn

from mapforge.nerf.encodings import HashGridEncoding, PositionalEncoding, spherical_harmonics


class NeRFField(nn.Module):
    """The MLP of Mildenhall et al. 2020 (fig. 7).

    8 ReLU layers of `width` (256) on the encoded position, the encoded position concatenated again into the
    5th layer's input (`skips=(4,)`, 0-based), density from one linear output of the position branch only,
    then a linear feature layer, concatenated with the encoded viewing direction, one ReLU layer of 128 and
    a sigmoid RGB output. Positional encodings: 10 frequencies for positions, 4 for directions, identity kept.
    """

    def __init__(
        self,
        depth: int = 8,
        width: int = 256,
        skips: tuple[int, ...] = (4,),
        position_frequencies: int = 10,
        direction_frequencies: int = 4,
        direction_width: int = 128,
    ):
        super().__init__()
        self.position_encoding = PositionalEncoding(position_frequencies)
        self.direction_encoding = PositionalEncoding(direction_frequencies)
        self.skips = skips
        in_dim = self.position_encoding.out_dim
        layers = []
        for i in range(depth):
            layer_in = in_dim if i == 0 else width + (in_dim if i in skips else 0)
            layers.append(nn.Linear(layer_in, width))
        self.layers = nn.ModuleList(layers)
        self.density = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.direction_layer = nn.Linear(width + self.direction_encoding.out_dim, direction_width)
        self.rgb = nn.Linear(direction_width, 3)
        # The paper's code initialises every layer Glorot-uniform with zero bias. PyTorch's default (uniform
        # bias, smaller weights) shrinks the 8-layer trunk's output until the density is the output bias alone:
        # negative for most seeds, so the ReLU density is zero everywhere and never receives a gradient.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def _trunk(self, positions: torch.Tensor) -> torch.Tensor:
        encoded = self.position_encoding(positions)
        h = encoded
        for i, layer in enumerate(self.layers):
            if i in self.skips:
                h = torch.cat([encoded, h], -1)
            h = torch.relu(layer(h))
        return h

    def density_at(self, positions: torch.Tensor) -> torch.Tensor:
        """Density `[N]` at `positions [N, 3]` (the colour branch is skipped)."""
        return torch.relu(self.density(self._trunk(positions))[..., 0])

    def forward(self, positions: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`positions [N, 3]`, unit `directions [N, 3]` -> density `[N]` (>= 0), rgb `[N, 3]` in [0, 1]."""
        h = self._trunk(positions)
        density = torch.relu(self.density(h)[..., 0])
        h = torch.cat([self.feature(h), self.direction_encoding(directions)], -1)
        rgb = torch.sigmoid(self.rgb(torch.relu(self.direction_layer(h))))
        return density, rgb


class _TruncatedExp(torch.autograd.Function):
    """`exp(x)` whose gradient uses `exp(min(x, 15))`, instant-ngp's density activation (keeps early steps stable)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def truncated_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncatedExp.apply(x)


class FastField(nn.Module):
    """An instant-ngp field (Müller et al. 2022, sec. 5.4) inside an axis-aligned box.

    Position -> hash grid -> density MLP (one hidden layer of 64) -> 16 values, the first a log-density
    (activated by a truncated exp), all 16 also the geometry feature; colour MLP (two hidden layers of 64) on
    [feature, SH degree-4 encoding of the direction] -> sigmoid RGB. Points outside the box get zero density.
    """

    def __init__(
        self,
        aabb: torch.Tensor,
        num_levels: int = 16,
        features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        finest_resolution: int = 2048,
        hidden: int = 64,
        geometry_features: int = 15,
    ):
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())
        self.encoding = HashGridEncoding(num_levels, features_per_level, log2_hashmap_size, base_resolution, finest_resolution)
        self.density_mlp = nn.Sequential(
            nn.Linear(self.encoding.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1 + geometry_features)
        )
        self.color_mlp = nn.Sequential(
            nn.Linear(1 + geometry_features + 16, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 3),
        )

    def normalise(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World `positions [N, 3]` -> unit-cube coordinates `[N, 3]` and an inside-the-box mask `[N]`."""
        unit = (positions - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((unit >= 0) & (unit <= 1)).all(-1)
        return unit, inside

    def geometry(self, positions: torch.Tensor, encoded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Density `[N]` and geometry features `[N, 1 + geometry_features]` (the colour MLP's input) at world
        `positions [N, 3]`. `encoded`: their hash encoding computed before without gradients (see
        `HashGridEncoding.forward`), to save the lookups."""
        unit, inside = self.normalise(positions)
        h = self.density_mlp(self.encoding(unit, encoded))
        density = truncated_exp(h[:, 0]) * inside
        return density, h

    def density(self, positions: torch.Tensor) -> torch.Tensor:
        """Density `[N]` at world `positions [N, 3]`."""
        return self.geometry(positions)[0]

    def colour(self, features: torch.Tensor, encoded_directions: torch.Tensor) -> torch.Tensor:
        """RGB `[N, 3]` from geometry `features [N, 16]` and `spherical_harmonics(directions, 4)` `[N, 16]`."""
        return torch.sigmoid(self.color_mlp(torch.cat([features, encoded_directions], -1)))

    def forward(self, positions: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`positions [N, 3]`, unit `directions [N, 3]` -> density `[N]`, rgb `[N, 3]` in [0, 1]."""
        density, h = self.geometry(positions)
        return density, self.colour(h, spherical_harmonics(directions, 4))
