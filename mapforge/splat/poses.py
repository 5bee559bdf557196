"""Camera pose refinement for Gaussian splatting without SfM (InstantSplat, Fan et al. 2024).

Poses from pointmap alignment (DUSt3R / MASt3R) are good but not exact. `PoseCorrection` holds one learnable
rigid correction per view, applied on the camera side: `corrected = delta * cam_from_world`, where `delta` is an
axis-angle rotation and a translation in the camera frame, both zero at the start (identity). The trainer
optimises these with the Gaussians (`TrainConfig.optimize_poses`); `align_poses` optimises them for views the
Gaussians were not trained on, with the Gaussians frozen (InstantSplat's test-time pose alignment).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mapforge.geometry.rotations import axis_angle_to_matrix
from mapforge.geometry.transforms import Rigid3
from mapforge.metrics.image import ssim
from mapforge.scene import Camera
from mapforge.splat.gaussians import Gaussians


class PoseCorrection(torch.nn.Module):
    """Per-view corrections `rotations [V, 3]` (axis-angle, radians) and `translations [V, 3]` (scene units, in
    the camera frame), float32, zero (identity) at initialisation."""

    def __init__(self, count: int, device: torch.device | str = "cpu"):
        super().__init__()
        self.rotations = torch.nn.Parameter(torch.zeros(count, 3, dtype=torch.float32, device=device))
        self.translations = torch.nn.Parameter(torch.zeros(count, 3, dtype=torch.float32, device=device))

    def __len__(self) -> int:
        return len(self.rotations)

    def delta(self, view_index: int) -> torch.Tensor:
        """`[4, 4]` the correction of view `view_index` (differentiable)."""
        top = torch.cat([axis_angle_to_matrix(self.rotations[view_index]), self.translations[view_index][:, None]], 1)
        bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=top.dtype, device=top.device)
        return torch.cat([top, bottom], 0)

    def corrected(self, view_index: int, cam_from_world: torch.Tensor) -> torch.Tensor:
        """`[4, 4]` `delta * cam_from_world` for view `view_index`; `cam_from_world [4, 4]`."""
        return self.delta(view_index) @ cam_from_world.to(self.rotations.device, torch.float32)

    def corrected_rigid(self, view_index: int, cam_from_world: Rigid3) -> Rigid3:
        """The corrected pose of view `view_index` as a float64 `Rigid3` (composed in float64)."""
        rotvec = self.rotations[view_index].detach().cpu().double().numpy()
        translation = self.translations[view_index].detach().cpu().double().numpy()
        return Rigid3(axis_angle_to_matrix(rotvec), translation) * cam_from_world


def pose_learning_rate(initial: float, final: float, progress: float) -> float:
    """Exponential decay from `initial` at progress 0 to `final` at progress 1 (as 3DGS decays positions)."""
    t = min(max(progress, 0.0), 1.0)
    return math.exp((1 - t) * math.log(initial) + t * math.log(final))


def photometric_loss(image: torch.Tensor, target: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    """3DGS's `(1 - w) L1 + w (1 - SSIM)` of `[H, W, 3]` images."""
    l1 = (image - target).abs().mean()
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim(image, target))


def align_poses(
    gaussians: Gaussians,
    cameras: list[Camera],
    cams_from_world: list[Rigid3],
    images: list[np.ndarray],
    background: torch.Tensor | None = None,
    iterations: int = 200,
    lr_rotation: tuple[float, float] = (1e-3, 1e-5),
    lr_translation: tuple[float, float] = (1e-3, 1e-5),
    ssim_weight: float = 0.2,
    backend: str = "auto",
) -> list[Rigid3]:
    """Refine the poses of views the Gaussians were not trained on, with the Gaussians frozen.

    Every view is aligned on its own: `iterations` Adam steps on its `PoseCorrection` minimising the training
    loss between the render and the image, learning rates decaying exponentially from the first to the second
    value of `lr_rotation` (radians) and `lr_translation` (scene units). `cameras` are pinhole, `images [H, W, 3]`
    float32 in [0, 1] at the cameras' size. Returns the refined `cam_from_world` of every view.
    """
    frozen = Gaussians(gaussians.params)
    for param in frozen.params.values():
        param.requires_grad_(False)
    device = frozen.device
    refined = []
    for camera, cam_from_world, image in zip(cameras, cams_from_world, images):
        correction = PoseCorrection(1, device)
        optimizer = torch.optim.Adam(
            [{"params": [correction.rotations], "name": "rotation"},
             {"params": [correction.translations], "name": "translation"}], lr=0.0, eps=1e-15,
        )
        viewmat = torch.as_tensor(cam_from_world.matrix4(), dtype=torch.float32, device=device)
        K = torch.as_tensor(camera.K, dtype=torch.float32, device=device)
        target = torch.as_tensor(np.ascontiguousarray(image[..., :3]), dtype=torch.float32, device=device)
        for step in range(iterations):
            progress = step / max(iterations - 1, 1)
            for group in optimizer.param_groups:
                initial, final = lr_rotation if group["name"] == "rotation" else lr_translation
                group["lr"] = pose_learning_rate(initial, final, progress)
            render = frozen.render(camera, correction.corrected(0, viewmat), None, background, backend, K)[0]
            photometric_loss(render, target, ssim_weight).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        refined.append(correction.corrected_rigid(0, cam_from_world))
    return refined
