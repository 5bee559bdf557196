"""Rendering whole views with a NeRF, and scoring them against a data set's images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mapforge.datasets.base import Dataset
from mapforge.geometry.transforms import Rigid3
from mapforge.metrics.lpips import LPIPS
from mapforge.nerf.models import NeRFModel
from mapforge.nerf.setup import SceneSetup, model_rays, resized_view
from mapforge.scene import Camera
from mapforge.training.evaluation import evaluate_views


@torch.no_grad()
def render_image(
    model: torch.nn.Module, setup: SceneSetup, camera: Camera, cam_from_world: Rigid3, chunk: int | None = None
) -> dict[str, np.ndarray]:
    """Render one view: {"rgb": [H, W, 3], "depth": [H, W] (distance along the ray; NDC parameter for NDC
    scenes), "opacity": [H, W]} as float32 numpy arrays. Rays go through the model `chunk` at a time (default
    8192 for the fast model; 1024 for NeRF, whose 256 samples per ray would otherwise need gigabytes per layer)."""
    device = next(model.parameters()).device
    if chunk is None:
        chunk = 1024 if isinstance(model, NeRFModel) else 8192
    o, d, near, far = model_rays(setup, camera, cam_from_world)
    background = None if setup.background is None else torch.tensor(setup.background, dtype=torch.float32, device=device)
    was_training = model.training
    model.eval()
    rgb, depth, opacity = [], [], []
    for s in range(0, o.shape[0], chunk):
        out = model.final(
            model.render_rays(o[s : s + chunk].to(device), d[s : s + chunk].to(device), near[s : s + chunk].to(device),
                              far[s : s + chunk].to(device), background)
        )
        rgb.append(out.rgb.clamp(0, 1).cpu())
        depth.append(out.depth.cpu())
        opacity.append(out.opacity.cpu())
    model.train(was_training)
    h, w = camera.height, camera.width
    return {
        "rgb": torch.cat(rgb).view(h, w, 3).numpy(),
        "depth": torch.cat(depth).view(h, w).numpy(),
        "opacity": torch.cat(opacity).view(h, w).numpy(),
    }




def evaluate(
    model: torch.nn.Module,
    setup: SceneSetup,
    dataset: Dataset,
    indices: list[int],
    image_scale: float = 1.0,
    render_dir: str | Path | None = None,
    lpips: LPIPS | None = None,
) -> dict:
    """Render views `indices` of `dataset` (resized by `image_scale`) and score them against the images; the
    renders go to `render_dir` when given. Returns what `mapforge.training.evaluation.evaluate_views` does."""

    def render(k: int) -> tuple[np.ndarray, np.ndarray]:
        target, camera = resized_view(dataset, indices[k], image_scale)
        return render_image(model, setup, camera, dataset.cam_from_world[indices[k]])["rgb"], target

    return evaluate_views([dataset.image_names[i] for i in indices], render, render_dir, lpips)
