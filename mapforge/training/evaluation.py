"""Scoring renders of a data set's views against its images: one loop, one naming rule, one empty result."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mapforge.interrupts import keyboard_interrupts
from mapforge.io.atomic import output_folder
from mapforge.io.images import write_image
from mapforge.metrics.image import psnr, ssim
from mapforge.metrics.lpips import LPIPS

# A view's render and its photo, each `[H, W, 3]` float32 in [0, 1] (numpy, or a CPU tensor).
RenderPair = Callable[[int], tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]]


def render_names(image_names: list[str]) -> list[str]:
    """PNG file names for renders of `image_names`: the image's file name with a `.png` suffix, or, when two
    views share a file name (e.g. `train/r_0` and `test/r_0`), its relative path with `/` replaced by `_`.
    Every stage names its renders so, and they line up with the photos."""
    names = [Path(name).with_suffix(".png").name for name in image_names]
    if len(set(names)) == len(names):
        return names
    return [Path(name).with_suffix(".png").as_posix().replace("/", "_") for name in image_names]


@torch.no_grad()
def evaluate_views(
    image_names: list[str], render: RenderPair, out_dir: str | Path | None = None, lpips: LPIPS | None = None
) -> dict:
    """Score `render(k)` (the k-th view's render and photo) for every name in `image_names`, writing the renders
    to `out_dir` as PNGs named by `render_names` when given.

    Returns {"psnr", "ssim" (means over the views), "count", "views": [{"name", "file", "psnr", "ssim"}]}, plus
    "lpips" (mean, and per view) with an `LPIPS` network. The mean PSNR leaves out infinite values (pixel-perfect
    views); a mean over no views (an empty split) is None.
    """
    files = render_names(image_names)
    if out_dir is not None:
        output_folder(out_dir)
    views = []
    with keyboard_interrupts():
        for k in tqdm(range(len(files)), desc="evaluating", unit="view", leave=False, disable=None):
            image, target = (torch.as_tensor(a, dtype=torch.float32).cpu() for a in render(k))
            image, target = image.clamp(0.0, 1.0), target[..., :3]
            view = {"name": image_names[k], "file": files[k], "psnr": float(psnr(image, target)),
                    "ssim": float(ssim(image, target))}
            if lpips is not None:
                view["lpips"] = float(lpips(image, target)[0])
            views.append(view)
            if out_dir is not None:
                write_image(Path(out_dir) / files[k], image.numpy())
    metrics = {"psnr": _mean([v["psnr"] for v in views if math.isfinite(v["psnr"])]),
               "ssim": _mean([v["ssim"] for v in views]), "count": len(views), "views": views}
    if lpips is not None:
        metrics["lpips"] = _mean([v["lpips"] for v in views])
    return metrics


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def quality_text(metrics: dict) -> str:
    """One line on the scores in `metrics`: "2 test views, PSNR 28.41 dB, SSIM 0.9312" (LPIPS when measured)."""
    split = metrics.get("split", "test")
    if not metrics.get("count"):
        return f"no {split} views"
    psnr_text = "inf" if metrics["psnr"] is None else f"{metrics['psnr']:.2f} dB"
    lpips = f", LPIPS {metrics['lpips']:.4f}" if metrics.get("lpips") is not None else ""
    views = "view" if metrics["count"] == 1 else "views"
    return f"{metrics['count']} {split} {views}, PSNR {psnr_text}, SSIM {metrics['ssim']:.4f}{lpips}"
