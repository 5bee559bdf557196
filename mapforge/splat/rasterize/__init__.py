"""Differentiable tile-based Gaussian rasterizer with a pure-torch reference and a fast numba CPU backend."""

from mapforge.splat.rasterize.api import rasterize

__all__ = ["rasterize"]
