"""Camera pose refinement for Gaussian splatting without SfM (InstantSplat, Fan et al. 2024).

Poses from pointmap alignment (DUSt3R / MASt3R) are good but not exact. `PoseCorrection` holds one learnable
rigid correction per view, applied on the camera side: `corrected = delta * cam_from_world`, where `delta` is an
axis-angle rotation and a translation in the camera frame, both zero at the start (identity). The trainer
optimises these with the Gaussians (`SplatConfig.optimize_poses`); `align_poses` optimises them for views the
Gaussians were not trained on, with the Gaussians frozen (InstantSplat's test-time pose alignment).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from mapforge.datasets.base import Dataset
from mapforge.geometry.rotations import axis_angle_to_matrix, rotation_angle_deg
from mapforge.geometry.transforms import Rigid3
from mapforge.io.colmap import write_model
from mapforge.metrics.image import ssim
from mapforge.scene import Camera, Image, Point3D, Reconstruction
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


def write_refined_model(dataset: Dataset, poses: list[Rigid3], folder: str | Path) -> Path:
    """Write `folder` (COLMAP binary) with `poses` (one per image of `dataset`).

    When the data's sparse model holds every image (a COLMAP or pointmap folder), its cameras, image ids,
    keypoints and points are kept with the new poses (points are not re-triangulated); otherwise the model
    has the data's cameras as loaded, and its points, if any, without tracks."""
    source = dataset.points
    names = {image.name for image in source.images.values()} if source is not None else set()
    if source is not None and set(dataset.image_names) <= names:
        by_name = dict(zip(dataset.image_names, poses))
        images = {
            image_id: Image(image.name, image.camera_id, by_name.get(image.name, image.cam_from_world),
                            image.keypoints, image.point3D_ids)
            for image_id, image in source.images.items()
        }
        rec = Reconstruction(dict(source.cameras), images, dict(source.points3D))
    else:
        rec = dataclasses.replace(dataset, cam_from_world=poses).to_reconstruction()
        if source is not None:
            rec.points3D = {pid: Point3D(p.xyz, p.rgb, p.error) for pid, p in source.points3D.items()}
    return write_model(rec, folder, "bin")


def pose_changes(before: list[Rigid3], after: list[Rigid3], trained: set[int]) -> dict:
    """How far refinement moved the poses: mean and max rotation (degrees) and camera centre shift, for the
    views `trained` and the others."""
    result: dict = {}
    for label, chosen in (("train", sorted(trained)), ("other", [i for i in range(len(before)) if i not in trained])):
        if not chosen:
            continue
        angles = np.array([float(rotation_angle_deg(after[i].rotation @ before[i].rotation.T)) for i in chosen])
        shifts = np.array([np.linalg.norm(after[i].inverse().translation - before[i].inverse().translation)
                           for i in chosen])
        result[label] = {"views": len(chosen), "mean_rotation_deg": float(angles.mean()),
                         "max_rotation_deg": float(angles.max()), "mean_center_shift": float(shifts.mean()),
                         "max_center_shift": float(shifts.max())}
    return result
