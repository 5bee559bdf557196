"""3D Gaussian splatting: model (`Gaussians`), training (`SplatTrainer`, `train`), evaluation and rendering.

Pieces: the differentiable rasterizer (`rasterize`), spherical harmonics (`sh`), the trainable model
(`gaussians`), adaptive density control (`densify`), pose refinement (`poses`), the views as the rasterizer sees
them (`views`), the config (`config`), the trainer and its schedule over the shared training loop of
`mapforge.training` (`trainer`), and held-out view rendering with PSNR / SSIM (`evaluate`). Models are read and
written in the standard 3DGS `.ply` layout (`mapforge.io.gaussians`), so they open in other splat viewers and
tools, and theirs open here.

The names below are imported on first use, so that importing one submodule (e.g. the rasterizer) does not load
the others.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DensifyConfig": "densify",
    "DensityController": "densify",
    "Gaussians": "gaussians",
    "load_initial": "gaussians",
    "SplatConfig": "config",
    "SplatTrainer": "trainer",
    "train": "trainer",
    "train_path": "trainer",
    "render_model": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mapforge.splat' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mapforge.splat.{_EXPORTS[name]}"), name)
