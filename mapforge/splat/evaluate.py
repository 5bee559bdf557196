"""Rendering held-out views with PSNR / SSIM, and the small files a training run leaves: JSON and a curve plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mapforge.datasets.base import Dataset
from mapforge.io.atomic import atomic_path, output_folder, write_json
from mapforge.io.images import write_image
from mapforge.metrics.image import psnr, ssim
from mapforge.metrics.lpips import LPIPS, load_lpips
from mapforge.splat.gaussians import Gaussians, load_initial
from mapforge.splat.trainer import pinhole_views


def output_names(image_names: list[str]) -> list[str]:
    """PNG file names for renders of `image_names`: the image's file name with a `.png` suffix, or, when two
    views share a file name (e.g. `train/r_0` and `test/r_0`), its relative path with `/` replaced by `_`."""
    names = [Path(name).with_suffix(".png").name for name in image_names]
    if len(set(names)) == len(names):
        return names
    return [Path(name).with_suffix(".png").as_posix().replace("/", "_") for name in image_names]


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
    compare with the images and write the renders as PNGs to `out_dir` (if given; see `output_names`).

    Returns {"psnr", "ssim" (means over views), "count", "views": [{"name", "file", "psnr", "ssim"}]}, plus
    "lpips" (mean, and per view) when an `LPIPS` network with weights is given.
    """
    views = pinhole_views(dataset, indices)
    files = output_names([v.name for v in views])
    if background is not None:
        background = torch.as_tensor(background, dtype=torch.float32, device=gaussians.device)
    if out_dir is not None:
        output_folder(out_dir)
    results = []
    for view, file in tqdm(list(zip(views, files)), desc="rendering views", unit="view", leave=False, disable=None):
        image = gaussians.render(view.camera, view.viewmat(gaussians.device), background=background, backend=backend)[0]
        image = image.clamp(0.0, 1.0).cpu()
        target = torch.from_numpy(view.load_image(dataset)[..., :3].astype(np.float32))
        quality = {"psnr": float(psnr(image, target)), "ssim": float(ssim(image, target))}
        if lpips is not None:
            quality["lpips"] = float(lpips(image, target)[0])
        results.append({"name": view.name, "file": file, **quality})
        if out_dir is not None:
            write_image(Path(out_dir) / file, image.numpy())
    finite = [r["psnr"] for r in results if math.isfinite(r["psnr"])]
    metrics = {
        "psnr": float(np.mean(finite)) if finite else None,
        "ssim": float(np.mean([r["ssim"] for r in results])) if results else None,
        "count": len(results),
        "views": results,
    }
    if lpips is not None:
        metrics["lpips"] = float(np.mean([r["lpips"] for r in results])) if results else None
    return metrics


def write_training_curve(path: str | Path, curve: list[list[float]], width: int = 720, height: int = 300) -> Path:
    """An SVG plot of the training curve: smoothed training PSNR (left axis) and the number of Gaussians (right
    axis) against iterations. `curve` rows are `[step, seconds, loss, psnr, gaussians]`. Self-contained (no
    plotting library); opens in any browser."""
    margin_l, margin_r, margin_t, margin_b = 56, 64, 28, 40
    plot_w, plot_h = width - margin_l - margin_r, height - margin_t - margin_b
    rows = np.asarray(curve, dtype=np.float64).reshape(-1, 5)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<rect x="{margin_l}" y="{margin_t}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>',
        f'<text x="{margin_l}" y="16" font-size="13">Training: PSNR (blue, dB) and Gaussians (orange)</text>',
    ]
    if len(rows):
        steps = rows[:, 0]
        x0, x1 = 0.0, max(float(steps.max()), 1.0)

        def xs(values: np.ndarray) -> np.ndarray:
            return margin_l + (values - x0) / (x1 - x0) * plot_w

        for column, color, side in ((3, "#1f77b4", "left"), (4, "#ff7f0e", "right")):
            values = rows[:, column]
            finite = np.isfinite(values)
            if not finite.any():
                continue
            lo, hi = float(values[finite].min()), float(values[finite].max())
            hi = hi if hi > lo else lo + 1.0
            ys = margin_t + (1.0 - (np.where(finite, values, lo) - lo) / (hi - lo)) * plot_h
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs(steps), ys))
            parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            tx = margin_l - 6 if side == "left" else margin_l + plot_w + 6
            anchor = "end" if side == "left" else "start"
            fmt = "{:.1f}" if column == 3 else "{:.0f}"
            for value, y in ((hi, margin_t + 4), (lo, margin_t + plot_h)):
                parts.append(f'<text x="{tx}" y="{y}" text-anchor="{anchor}" fill="{color}">{fmt.format(value)}</text>')
        for fraction in (0.0, 0.5, 1.0):
            value = x0 + fraction * (x1 - x0)
            parts.append(f'<text x="{xs(np.array(value)):.1f}" y="{margin_t + plot_h + 16}" text-anchor="middle">{value:.0f}</text>')
        seconds = float(rows[-1, 1])
        parts.append(f'<text x="{margin_l + plot_w / 2}" y="{height - 6}" text-anchor="middle">iteration '
                     f'({seconds / 60:.1f} min of training)</text>')
    parts.append("</svg>")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
    return Path(path)


def render_model(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    split: str = "test",
    downscale: int | None = None,
    background: tuple[float, float, float] | None = None,
    backend: str = "auto",
    device: str | None = None,
    lpips_weights: Sequence[str | Path] = (),
) -> dict:
    """Render the views of `split` of the data set `data` with the Gaussians of `model` (a training output folder,
    any 3DGS `.ply` or a `.splat`) into `out_dir` (one PNG per view, see `output_names`) and write `metrics.json` there.
    With `lpips_weights` (one combined file, or AlexNet then linear weights; see `mapforge.metrics.lpips`) LPIPS is
    measured too.

    `downscale` and `background` default to those the model was trained with (the folder's `config.json`), else
    1 and the data's background (black when it has none). Returns the metrics.
    """
    from mapforge.datasets import load_dataset
    from mapforge.errors import InputError
    from mapforge.devices import select_device

    model = Path(model)
    ply = model / "point_cloud.ply" if model.is_dir() else model
    if not ply.is_file():
        raise InputError(f"{model}: no point_cloud.ply (give a training output folder, a 3DGS .ply or a .splat file)")
    if ply.suffix.lower() not in (".ply", ".splat"):
        raise InputError(f"{ply}: Gaussians must be a 3DGS .ply or a .splat file")
    trained: dict = {}
    if model.is_dir() and (model / "config.json").is_file():
        try:
            trained = json.loads((model / "config.json").read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{model / 'config.json'}: malformed JSON ({exc})") from exc
    downscale = downscale or int(trained.get("downscale", 1))
    dataset = load_dataset(data, downscale=downscale)
    if split not in dataset.split:
        raise InputError(f"data set {dataset.name} has no split {split!r} (it has: {', '.join(dataset.split)})")
    if background is None:
        background = trained.get("background") or (dataset.background if dataset.background is not None else (0.0, 0.0, 0.0))
    gaussians = load_initial(ply, sh_degree=None, device=select_device(device))
    lpips = load_lpips(lpips_weights).to(gaussians.device) if lpips_weights else None
    metrics = evaluate(gaussians, dataset, dataset.subset(split), np.asarray(background, np.float32), out_dir, backend,
                       lpips)
    metrics.update({"split": split, "model": str(ply), "num_gaussians": len(gaussians)})
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
