"""Choosing the torch device: every stage accepts the same names and gives the same one-line errors."""

from __future__ import annotations

import torch

from mapforge.errors import InputError


def select_device(name: str | None = None) -> torch.device:
    """The torch device called `name` ("cpu", "cuda", "cuda:1", "mps"); None or "auto" picks CUDA when available,
    else the CPU. Raises `InputError` for an unknown name or CUDA asked for without CUDA."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown torch device {name!r} (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for but CUDA is not available (use cpu)")
    return device
