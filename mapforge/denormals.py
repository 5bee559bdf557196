"""Flush-to-zero of denormal floats: the rasterizer turns it on for the whole process (denormal Gaussian tails made
CPU training up to 20x slower), and scipy's cKDTree crashes the process on some clouds while it is on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def denormals_flushed() -> bool:
    """Whether this thread flushes denormal floats to zero (computed at run time: a denormal literal could be
    flushed already when the module is compiled)."""
    half_smallest = np.array([np.finfo(np.float64).smallest_normal]) * 0.5
    return bool(half_smallest[0] == 0.0)


@contextlib.contextmanager
def denormals_kept() -> Iterator[None]:
    """Keep denormals inside the block (for scipy's cKDTree), then restore the setting."""
    flushing = denormals_flushed()
    if flushing:
        torch.set_flush_denormal(False)
    try:
        yield
    finally:
        if flushing:
            torch.set_flush_denormal(True)
