"""Rendering the views of a data set with trained Gaussians and scoring them (PSNR, SSIM, LPIPS)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mapforge.datasets import load_dataset
from mapforge.datasets.base import Dataset
from mapforge.devices import select_device
from mapforge.errors import InputError
from mapforge.io.atomic import write_json
from mapforge.metrics.lpips import LPIPS, load_lpips
from mapforge.splat.gaussians import Gaussians, load_initial
from mapforge.splat.views import pinhole_views
from mapforge.training.checkpoint import read_run_config
from mapforge.training.evaluation import evaluate_views


@torch.no_grad()
def evaluate(
    gaussians: Gaussians,
    dataset: Dataset,
    indices: list[int],
    background: torch.Tensor | np.ndarray | None,
    out_dir: str | Path | None = None,
    backend: str = "auto",
    lpips: LPIPS | None = None,
) -> dict:
    """Render the views `indices` of `dataset` at its resolution (distorted cameras undistorted, as in training),
    compare with the images and write the renders as PNGs to `out_dir` (if given). Returns what
    `mapforge.training.evaluation.evaluate_views` does."""
    views = pinhole_views(dataset, indices)
    if background is not None:
        background = torch.as_tensor(background, dtype=torch.float32, device=gaussians.device)

    def render(k: int) -> tuple[torch.Tensor, np.ndarray]:
        view = views[k]
        image = gaussians.render(view.camera, view.viewmat(gaussians.device), background=background, backend=backend)[0]
        return image.cpu(), view.load_image(dataset)

    return evaluate_views([view.name for view in views], render, out_dir, lpips)


def render_model(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    split: str = "test",
    downscale: int | None = None,
    background: tuple[float, float, float] | None = None,
    backend: str = "auto",
    device: str = "auto",
    lpips_weights: Sequence[str | Path] = (),
) -> dict:
    """Render the views of `split` of the data set `data` with the Gaussians of `model` (a training output folder,
    any 3DGS `.ply` or a `.splat`) into `out_dir` (one PNG per view, see `render_names`) and write `metrics.json`
    there. With `lpips_weights` (one combined file, or AlexNet then linear weights; see `mapforge.metrics.lpips`)
    LPIPS is measured too.

    `downscale` and `background` default to those the model was trained with (the folder's `config.json`), else
    1 and the data's background (black when it has none). Returns the metrics.
    """
    model = Path(model)
    ply = model / "point_cloud.ply" if model.is_dir() else model
    if not ply.is_file():
        raise InputError(f"{model}: no point_cloud.ply (give a training output folder, a 3DGS .ply or a .splat file)")
    if ply.suffix.lower() not in (".ply", ".splat"):
        raise InputError(f"{ply}: Gaussians must be a 3DGS .ply or a .splat file")
    device = select_device(device)
    lpips = load_lpips(lpips_weights).to(device) if lpips_weights else None
    trained = read_run_config(model) if model.is_dir() else {}
    dataset = load_dataset(data, downscale=downscale or int(trained.get("downscale", 1)))
    if split not in dataset.split:
        raise InputError(f"data set {dataset.name} has no split {split!r} (it has: {', '.join(dataset.split)})")
    if background is None:
        background = trained.get("background") or (dataset.background if dataset.background is not None else (0.0, 0.0, 0.0))
    gaussians = load_initial(ply, sh_degree=None, device=device)
    metrics = evaluate(gaussians, dataset, dataset.subset(split), np.asarray(background, np.float32), out_dir, backend,
                       lpips)
    metrics.update({"split": split, "model": str(ply), "num_gaussians": len(gaussians)})
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
