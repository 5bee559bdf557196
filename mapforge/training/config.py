"""The settings every trainer shares, under the same names, with the checks that keep bad values from reaching
the training loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mapforge.errors import InputError
from mapforge.training.budget import Budget


@dataclass
class TrainingConfig:
    """Settings shared by the splatting and NeRF trainers (`SplatConfig`, `NeRFConfig` extend it).

    Attributes:
        iterations: optimisation steps; ignored when `minutes` is set (default 30000, 3DGS's; the NeRF configs
            set their own).
        minutes: training-time budget in minutes; when set it alone ends training (see `Budget`). None: use
            `iterations`.
        log_interval: a history entry (mean loss and PSNR over the steps since the last one) every this many
            steps (ours: 10; the NeRF configs set their own).
        checkpoint_minutes: a checkpoint every this many minutes of training time, and always when training
            ends or is interrupted (0: only then). Ours, 10: an interruption loses at most 10 minutes for a
            write that costs well under a second.
        device: "auto" (CUDA when available, else the CPU) or a torch device name (see `mapforge.devices`).
        seed: seeds initialisation and the order in which views and rays are drawn; a non-negative integer
            below 2^32 (numpy's seed range).
        lpips_weights: LPIPS weights for the final evaluation: one combined file, or the AlexNet and the linear
            weights files (see `mapforge.metrics.lpips`); empty (default) measures PSNR and SSIM only. They are
            read before training starts, so bad weights fail at once.
    """

    iterations: int = 30000
    minutes: float | None = None
    log_interval: int = 10
    checkpoint_minutes: float = 10.0
    device: str = "auto"
    seed: int = 0
    lpips_weights: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.lpips_weights = tuple(str(path) for path in self.lpips_weights)
        if self.minutes is None:
            check_positive(self, "iterations", integer=True)
        else:
            check_positive(self, "minutes")
        check_positive(self, "log_interval", integer=True)
        check_non_negative(self, "checkpoint_minutes")
        check_non_negative(self, "seed", integer=True)
        if self.seed >= 2**32:
            raise InputError(f"seed must be below 2^32, got {self.seed}")
        if len(self.lpips_weights) > 2:
            raise InputError(f"LPIPS takes one combined weights file or two (AlexNet, linear), "
                             f"got {len(self.lpips_weights)}")

    @property
    def budget(self) -> Budget:
        return Budget(self.iterations, self.minutes)


def check_positive(config: object, *names: str, integer: bool = False) -> None:
    """Raise `InputError` unless each named field of `config` is a finite number > 0 (an int if `integer`)."""
    for name in names:
        value = getattr(config, name)
        if not _is_number(value, integer) or not value > 0:
            raise InputError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


def check_non_negative(config: object, *names: str, integer: bool = False) -> None:
    """Raise `InputError` unless each named field of `config` is a finite number >= 0 (an int if `integer`)."""
    for name in names:
        value = getattr(config, name)
        if not _is_number(value, integer) or value < 0:
            kind = "integer" if integer else "number"
            raise InputError(f"{name} must be a non-negative {kind}, got {value!r}")


def check_fraction(config: object, *names: str) -> None:
    """Raise `InputError` unless each named field of `config` is a number in [0, 1]."""
    for name in names:
        value = getattr(config, name)
        if not _is_number(value, False) or not 0 <= value <= 1:
            raise InputError(f"{name} must be a number in [0, 1], got {value!r}")


def _is_number(value: object, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)
