"""Training 3D Gaussian splatting (Kerbl et al. 2023) on posed images, made for CPUs and fine on GPUs.

The loss is `(1 - w) L1 + w (1 - SSIM)` with w = 0.2, optimised by Adam with 3DGS's per-parameter learning rates,
adaptive density control (`densify.py`) and progressive SH degree.

Schedule. Every schedule point is a fraction of the run ("progress" p in [0, 1)): 3DGS's iteration numbers divided
by its 30000 iterations (densify from 500/30000 to 15000/30000, opacity reset every 3000/30000, one more SH degree
every 1000/30000, position learning rate decaying exponentially over the run). With `iterations`, p = step /
iterations. With `minutes`, p = training seconds / budget: the same schedule is laid over the wall-clock budget
and training stops when the budget is spent, however fast the machine is (loading, final evaluation and export
come on top). Densification runs every 100/30000 of the run but never more often than every
`densify_min_interval` iterations, so that short runs still average gradients over enough views.

CPU speed. Early iterations run at lower resolution (`resolution_schedule`: 1/4, then 1/2, then full size), which
costs a fraction of the compositing time while the Gaussians are still coarse; training images are decoded,
undistorted and resized once and kept as uint8; the target buffer is reused; Adam is fused; and the rasterizer
picks its numba CPU kernels on CPU tensors (`backend="auto"`).

Without SfM (InstantSplat, Fan et al. 2024). With `optimize_poses`, the poses of the training views are optimised
with the Gaussians (`poses.PoseCorrection`: a rotation and translation correction per view), for poses that come
from pointmap alignment (DUSt3R / MASt3R) rather than bundle adjustment. Held-out views were posed by the same
alignment, not by the Gaussians, so before evaluation their poses are aligned to the trained Gaussians with the
Gaussians frozen (InstantSplat's test-time pose optimisation, `test_pose_iterations` steps per view); the refined
poses of every view are written to `out_dir/sparse/0` (COLMAP binary). Pointmaps are dense, so such runs usually
also switch off adaptive density control (`density_control = False`), as InstantSplat does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mapforge.datasets.base import Dataset
from mapforge.devices import select_device
from mapforge.errors import InputError
from mapforge.geometry.rotations import rotation_angle_deg
from mapforge.geometry.transforms import Rigid3
from mapforge.geometry.undistortion import undistort_image, undistorted_camera
from mapforge.io.atomic import atomic_path, write_json
from mapforge.io.torch_files import load_torch_file
from mapforge.io.colmap import write_model
from mapforge.io.gaussians import write_gaussian_ply, write_splat
from mapforge.scene import Camera, Image, Point3D, Reconstruction
from mapforge.splat.densify import DensifyConfig, DensityController, reset_opacity
from mapforge.splat.gaussians import PARAM_NAMES, Gaussians
from mapforge.splat.poses import PoseCorrection, align_poses, photometric_loss, pose_learning_rate

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1
_REFERENCE_ITERATIONS = 30000  # the 3DGS schedule the fractions below are taken from


@dataclass
class TrainConfig:
    """How to train. Learning rates and schedule fractions are those of the 3DGS reference implementation.

    Attributes:
        iterations: optimisation steps (3DGS: 30000); ignored when `minutes` is set.
        minutes: wall-clock training budget; the schedule is laid over it (see the module doc).
        sh_degree: highest spherical-harmonic degree (3).
        sh_degree_interval: one more SH degree every this fraction of the run (1000 / 30000).
        ssim_weight: weight of the D-SSIM term (0.2).
        lr_means, lr_means_final: position learning rate at the start and end of the run, times the scene
            extent (1.6e-4 -> 1.6e-6, exponential decay).
        lr_sh_dc, lr_sh_rest: SH learning rates (2.5e-3, and 20 times lower for the view-dependent part).
        lr_opacity, lr_scales, lr_quats: 0.05, 5e-3, 1e-3.
        densify: thresholds of adaptive density control.
        density_control: run adaptive density control at all (clone, split, prune, opacity reset). Off for
            pointmap initialisations, whose points are already dense (InstantSplat trains without it).
        densify_start, densify_stop, densify_interval: the densification window and period as fractions of the
            run (500, 15000 and 100 out of 30000).
        densify_min_interval: at least this many iterations between densifications (ours, for short runs).
        opacity_reset_interval: opacity reset every this fraction of the run inside the densification window
            (3000 / 30000); with a white background also once at `densify_start`, as 3DGS does. Huge Gaussians
            are pruned only after the first interval.
        densify_per_reset: ... but at least this many densification intervals apart (3DGS: 3000 / 100 = 30), so
            that short runs, whose densification interval is stretched by `densify_min_interval`, keep 3DGS's
            rhythm instead of resetting opacities before Gaussians could recover and grow.
        resolution_schedule: (progress, downscale) pairs: from each progress on, train at 1/downscale of the data
            resolution (ours: 1/4 until 10%, 1/2 until 30%, then full; downscaled images keep >= 16 pixels).
        init_random_points: Gaussians placed at random when the data has no points (3DGS Blender: 100000).
        init_box_scale: without points or a known bounding box, the random cube has half side this times the
            camera distance to the point the cameras look at (1.3 / 4: 3DGS's cube for Blender cameras at 4).
        background: RGB in [0, 1] behind the Gaussians; None takes the data's (white for Blender) or black.
        backend: rasterizer backend ("auto": numba kernels on CPU, torch on GPU).
        device: torch device; None picks cuda when available, else cpu.
        seed: seeds initialisation, view order and splitting.
        checkpoint_minutes: write a checkpoint every this many minutes of training (and when training ends or is
            interrupted).
        log_interval: record loss, PSNR and count for the training curve every this many iterations.
        optimize_poses: optimise the training views' poses with the Gaussians and align held-out views' poses
            before evaluation (see the module doc). For poses from pointmaps; SfM poses need no refinement.
        lr_poses, lr_poses_final: Adam learning rate of the pose corrections at the start and end of the pose
            window (exponential decay): radians for the rotation, times the scene extent for the translation.
            Ours, 1e-3 -> 1e-4: InstantSplat-style small pose rates (1e-4..1e-3); at 1e-3 a view's pose moves
            by roughly 0.06 degrees (0.1% of the extent) per step in which it is seen, enough for the degree-level
            errors of pointmap poses, slow enough not to chase noise while the Gaussians are still coarse.
        poses_start, poses_stop: poses are optimised while the progress is in [poses_start, poses_stop); outside
            they stay fixed (at their corrections so far). InstantSplat optimises them over the whole run; ours
            starts at 0.1, when the 1/4-resolution stage of `resolution_schedule` ends: before that the Gaussians
            are too coarse and blurry for their pose gradients to be trusted (on the built-in scene, starting at
            0 moved exact poses by up to 0.9 degrees in a short run).
        test_pose_iterations: Adam steps of test-time pose alignment per held-out view (ours: 200; InstantSplat
            uses a few hundred on a GPU; each step renders the view at full resolution).
        lr_test_poses: starting learning rate of test-time alignment, decaying to `lr_poses_final` (same units).
            Ours, 1e-2: with the Gaussians frozen only the view's 6 degrees of freedom move, so larger steps are
            safe; in our tests 200 steps from 1e-2 recovered 1.5 degree / 3 cm errors to 1e-3 degrees, where
            3e-3 stopped short on some views.
        cpu_torch_threads: torch intra-op threads while training on CPU (0 = leave torch's setting). The heavy
            kernels are numba's and use every core; torch's own ops are small, and its thread pool busy-waits
            between them, competing with numba's threads (1 thread halved the step time on the 2-core machine
            with 100k Gaussians at 400x400, under load).
        lpips_weights: LPIPS weights for the final evaluation: one combined file, or the AlexNet and the linear
            weights files (see `mapforge.metrics.lpips`); empty (default) measures PSNR and SSIM only.
    """

    iterations: int = 30000
    minutes: float | None = None
    sh_degree: int = 3
    sh_degree_interval: float = 1000 / _REFERENCE_ITERATIONS
    ssim_weight: float = 0.2
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_sh_dc: float = 2.5e-3
    lr_sh_rest: float = 2.5e-3 / 20
    lr_opacity: float = 0.05
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    density_control: bool = True
    densify_start: float = 500 / _REFERENCE_ITERATIONS
    densify_stop: float = 15000 / _REFERENCE_ITERATIONS
    densify_interval: float = 100 / _REFERENCE_ITERATIONS
    densify_min_interval: int = 50
    opacity_reset_interval: float = 3000 / _REFERENCE_ITERATIONS
    densify_per_reset: int = 30
    resolution_schedule: tuple[tuple[float, int], ...] = ((0.0, 4), (0.1, 2), (0.3, 1))
    init_random_points: int = 100_000
    init_box_scale: float = 1.3 / 4.0
    background: tuple[float, float, float] | None = None
    backend: str = "auto"
    device: str | None = None
    seed: int = 0
    checkpoint_minutes: float = 10.0
    log_interval: int = 10
    optimize_poses: bool = False
    lr_poses: float = 1e-3
    lr_poses_final: float = 1e-4
    poses_start: float = 0.1
    poses_stop: float = 1.0
    test_pose_iterations: int = 200
    lr_test_poses: float = 1e-2
    cpu_torch_threads: int = 1
    lpips_weights: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.densify, dict):
            self.densify = DensifyConfig(**self.densify)
        self.resolution_schedule = tuple((float(p), int(f)) for p, f in self.resolution_schedule)
        if self.background is not None:
            self.background = tuple(float(c) for c in self.background)
        if self.minutes is None and self.iterations < 1:
            raise InputError(f"iterations must be at least 1, got {self.iterations}")
        if self.minutes is not None and not self.minutes > 0:
            raise InputError(f"minutes must be positive, got {self.minutes}")
        if not 0 <= self.sh_degree <= 3:
            raise InputError(f"SH degree must be 0..3, got {self.sh_degree}")
        if any(f < 1 for _, f in self.resolution_schedule):
            raise InputError("resolution_schedule downscale factors must be >= 1")
        if not (self.lr_poses > 0 and self.lr_poses_final > 0 and self.lr_test_poses > 0):
            raise InputError("pose learning rates must be positive, got "
                             f"{self.lr_poses}, {self.lr_poses_final} and {self.lr_test_poses}")
        if not 0 <= self.poses_start < self.poses_stop <= 1:
            raise InputError(f"need 0 <= poses_start < poses_stop <= 1, got {self.poses_start} and {self.poses_stop}")
        if self.test_pose_iterations < 0:
            raise InputError(f"test_pose_iterations must be >= 0, got {self.test_pose_iterations}")


# ---------------------------------------------------------------------------------------------------------------
# Views


@dataclass
class PinholeView:
    """One image of a data set as the rasterizer sees it: a pinhole camera (undistorted if need be) and a pose."""

    index: int
    name: str
    camera: Camera
    cam_from_world: Rigid3
    source_camera: Camera

    def viewmat(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """`[4, 4]` float32 cam_from_world."""
        return torch.as_tensor(self.cam_from_world.matrix4(), dtype=torch.float32, device=device)

    def load_image(self, dataset: Dataset) -> np.ndarray:
        """The image `[H, W, 3]` float32, undistorted into `camera` when the source camera has distortion."""
        image = dataset.load_image(self.index)
        if self.source_camera.has_distortion:
            image, _ = undistort_image(image, self.source_camera, self.camera)
        return image


def pinhole_views(dataset: Dataset, indices: list[int] | None = None) -> list[PinholeView]:
    """`PinholeView`s of `indices` (default: all images); distorted cameras are replaced by `undistorted_camera`."""
    if dataset.cam_from_world is None:
        raise InputError(f"data set {dataset.name} has no camera poses; run structure from motion first (mapforge sfm)")
    indices = list(range(len(dataset))) if indices is None else list(indices)
    undistorted: dict[int, Camera] = {}
    views = []
    for i in indices:
        camera = dataset.cameras[i]
        if id(camera) not in undistorted:
            undistorted[id(camera)] = undistorted_camera(camera)
        views.append(PinholeView(i, dataset.image_names[i], undistorted[id(camera)], dataset.cam_from_world[i], camera))
    return views


def scene_extent(views: list[PinholeView]) -> float:
    """3DGS's scene scale: 1.1 times the largest distance of a camera centre from their mean (1 if degenerate)."""
    centers = np.stack([v.cam_from_world.inverse().translation for v in views])
    radius = float(np.linalg.norm(centers - centers.mean(axis=0), axis=1).max()) * 1.1
    return radius if radius > 1e-6 else 1.0


def camera_focus_box(views: list[PinholeView], half_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A cube around the point closest to all optical axes (least squares), with half side `half_scale` times the
    median camera distance to it; falls back to the camera centroid when the axes are near parallel."""
    centers = np.stack([v.cam_from_world.inverse().translation for v in views])
    axes = np.stack([v.cam_from_world.rotation[2] for v in views])
    system = np.zeros((3, 3))
    rhs = np.zeros(3)
    for c, d in zip(centers, axes):
        projector = np.eye(3) - np.outer(d, d)
        system += projector
        rhs += projector @ c
    focus = centers.mean(axis=0)
    if np.linalg.cond(system) < 1e6:
        candidate = np.linalg.solve(system, rhs)
        if np.mean(np.einsum("ij,ij->i", candidate - centers, axes) > 0) > 0.5:
            focus = candidate
    distance = float(np.median(np.linalg.norm(centers - focus, axis=1)))
    half = half_scale * (distance if distance > 1e-6 else scene_extent(views))
    return focus - half, focus + half


def initial_gaussians(dataset: Dataset, views: list[PinholeView], config: TrainConfig, device: torch.device) -> Gaussians:
    """The data's sparse points if it has any, else `init_random_points` random Gaussians in its bounding box
    (`metadata["bounding_box"]`) or in `camera_focus_box`."""
    if dataset.points is not None and dataset.points.points3D:
        return Gaussians.from_reconstruction(dataset.points, config.sh_degree, device)
    box = dataset.metadata.get("bounding_box")
    if box is not None:
        low, high = np.asarray(box[0]), np.asarray(box[1])
    else:
        low, high = camera_focus_box(views, config.init_box_scale)
    return Gaussians.random_in_box(config.init_random_points, low, high, config.sh_degree, config.seed, device)


def resolve_background(config: TrainConfig, dataset: Dataset) -> np.ndarray:
    """`[3]` float32: the configured background, else the data's, else black."""
    if config.background is not None:
        return np.asarray(config.background, np.float32)
    if dataset.background is not None:
        return np.asarray(dataset.background, np.float32).reshape(3)
    return np.zeros(3, np.float32)


@contextlib.contextmanager
def training_threads(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Within the block, torch uses `config.cpu_torch_threads` intra-op threads on CPU; restored afterwards."""
    previous = torch.get_num_threads()
    if device.type == "cpu" and config.cpu_torch_threads > 0:
        torch.set_num_threads(config.cpu_torch_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------------
# Trainer


@dataclass
class _Level:
    """Training data at one downscale factor: cameras, calibration, targets (uint8) and a reusable float buffer."""

    factor: int
    cameras: list[Camera]
    Ks: list[torch.Tensor]
    targets: list[torch.Tensor]
    buffer: dict[tuple[int, int], torch.Tensor]


class Trainer:
    """Trains Gaussians on the "train" split of `dataset`; `run()` optimises, `finish()` exports and evaluates.

    With `resume=True` and a checkpoint in `out_dir`, training continues from it (same config expected).
    `init` replaces the default initialisation (sparse points or random box), e.g. Gaussians read from a `.ply`.
    With `config.optimize_poses`, `poses` holds the pose corrections of `views` (else it is None).
    """

    def __init__(
        self,
        dataset: Dataset,
        out_dir: str | Path,
        config: TrainConfig | None = None,
        resume: bool = False,
        init: Gaussians | None = None,
    ):
        self.dataset = dataset
        self.config = config or TrainConfig()
        self.out_dir = Path(out_dir)
        self.device = select_device(self.config.device)
        train_indices = dataset.subset("train")
        if not train_indices:
            raise InputError(f"data set {dataset.name} has no training images")
        self.views = pinhole_views(dataset, train_indices)
        self.extent = scene_extent(self.views)
        self.background = torch.as_tensor(resolve_background(self.config, dataset), device=self.device)
        self.full_images = self._load_images()
        self.viewmats = [v.viewmat(self.device) for v in self.views]
        self.rng = np.random.default_rng(self.config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.step = 0
        self.elapsed = 0.0
        self.order: list[int] = []
        self.order_pos = 0
        self.last_densify: int | None = None
        self.last_reset = 0
        self.white_reset_done = False
        self.curve: list[list[float]] = []
        self.level: _Level | None = None
        self.poses: PoseCorrection | None = None
        self.pose_optimizer: torch.optim.Adam | None = None
        if self.config.optimize_poses:
            self.poses = PoseCorrection(len(self.views), self.device)
            self.pose_optimizer = self._make_pose_optimizer()

        checkpoint = self.out_dir / CHECKPOINT_NAME
        if resume and checkpoint.is_file():
            self._load_checkpoint(checkpoint)
        else:
            self.gaussians = init if init is not None else initial_gaussians(dataset, self.views, self.config, self.device)
            self.gaussians = Gaussians({k: v.to(self.device) for k, v in self.gaussians.params.items()})
            if self.gaussians.sh_degree != self.config.sh_degree:
                self.gaussians = Gaussians.from_data(self.gaussians.to_data(), self.config.sh_degree, self.device)
            self.optimizer = self._make_optimizer()
            self.controller = DensityController(self.config.densify, len(self.gaussians), self.device)

    # -- set-up ------------------------------------------------------------------------------------------------

    def _load_images(self) -> list[np.ndarray]:
        images = []
        for view in tqdm(self.views, desc="loading training images", unit="image", leave=False, disable=None):
            image = view.load_image(self.dataset)
            if image.shape[:2] != (view.camera.height, view.camera.width):
                raise InputError(f"image {view.name} is {image.shape[1]}x{image.shape[0]}, its camera "
                                 f"{view.camera.width}x{view.camera.height}")
            images.append(np.clip(np.round(image[..., :3] * 255), 0, 255).astype(np.uint8))
        return images

    def _make_optimizer(self) -> torch.optim.Adam:
        cfg = self.config
        rates = {
            "means": cfg.lr_means * self.extent,
            "log_scales": cfg.lr_scales,
            "quats": cfg.lr_quats,
            "opacity_logits": cfg.lr_opacity,
            "sh_dc": cfg.lr_sh_dc,
            "sh_rest": cfg.lr_sh_rest,
        }
        groups = [{"params": [self.gaussians.params[name]], "lr": rates[name], "name": name} for name in PARAM_NAMES]
        # eps 1e-15 as in 3DGS: tiny gradients of distant Gaussians must still move them.
        return torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=self.device.type in ("cpu", "cuda"))

    def _make_pose_optimizer(self) -> torch.optim.Adam:
        # Apart from the Gaussians' optimizer, whose parameter groups density control rewrites.
        groups = [{"params": [self.poses.rotations], "name": "rotation", "scale": 1.0},
                  {"params": [self.poses.translations], "name": "translation", "scale": self.extent}]
        return torch.optim.Adam(groups, lr=0.0, eps=1e-15)

    # -- schedule ----------------------------------------------------------------------------------------------

    def progress(self) -> float:
        """Fraction of the run done, in [0, 1) while training (see the module doc)."""
        if self.config.minutes is not None:
            return self.elapsed / (60.0 * self.config.minutes)
        return self.step / self.config.iterations

    def _factor(self, progress: float) -> int:
        factor = 1
        for start, f in self.config.resolution_schedule:
            if progress >= start:
                factor = f
        smallest = min(min(v.camera.width, v.camera.height) for v in self.views)
        while factor > 1 and smallest // factor < 16:
            factor //= 2
        return max(factor, 1)

    def _set_level(self, factor: int) -> None:
        cameras, Ks, targets = [], [], []
        for view, image in zip(self.views, self.full_images):
            camera = view.camera if factor == 1 else view.camera.scaled(1.0 / factor)
            if factor > 1:
                image = cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
            cameras.append(camera)
            Ks.append(torch.as_tensor(camera.K, dtype=torch.float32, device=self.device))
            targets.append(torch.from_numpy(np.ascontiguousarray(image)).to(self.device))
        self.level = _Level(factor, cameras, Ks, targets, {})

    def _next_view(self) -> int:
        if self.order_pos >= len(self.order):
            self.order = [int(i) for i in self.rng.permutation(len(self.views))]
            self.order_pos = 0
        self.order_pos += 1
        return self.order[self.order_pos - 1]

    def _set_learning_rate(self, progress: float) -> None:
        cfg = self.config
        t = min(max(progress, 0.0), 1.0)
        lr = math.exp((1 - t) * math.log(cfg.lr_means) + t * math.log(cfg.lr_means_final)) * self.extent
        for group in self.optimizer.param_groups:
            if group["name"] == "means":
                group["lr"] = lr
        if self.pose_optimizer is not None:
            window = (progress - cfg.poses_start) / (cfg.poses_stop - cfg.poses_start)
            rate = pose_learning_rate(cfg.lr_poses, cfg.lr_poses_final, window)
            for group in self.pose_optimizer.param_groups:
                group["lr"] = rate * group["scale"]

    def _intervals(self, progress: float) -> tuple[int, int]:
        """Iterations between densifications and between opacity resets (the run's length is estimated from the
        speed so far when training to a time budget)."""
        cfg = self.config
        total = cfg.iterations if cfg.minutes is None else self.step / max(progress, 1e-9)
        densify = max(cfg.densify_min_interval, int(round(cfg.densify_interval * total)))
        reset = max(int(round(cfg.opacity_reset_interval * total)), cfg.densify_per_reset * densify)
        return densify, reset

    # -- training ----------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimisation step on one training view; returns its loss and PSNR."""
        cfg = self.config
        progress = self.progress()
        factor = self._factor(progress)
        if self.level is None or self.level.factor != factor:
            self._set_level(factor)
        level = self.level
        v = self._next_view()
        camera = level.cameras[v]
        self._set_learning_rate(progress)
        degree = min(cfg.sh_degree, int(progress / cfg.sh_degree_interval))

        optimize_pose = self.poses is not None and cfg.poses_start <= progress < cfg.poses_stop
        viewmat = self.viewmats[v]
        if self.poses is not None:
            with torch.set_grad_enabled(optimize_pose):
                viewmat = self.poses.corrected(v, viewmat)
        image, _, _, meta = self.gaussians.render(camera, viewmat, degree, self.background, cfg.backend, level.Ks[v])
        key = (camera.height, camera.width)
        if key not in level.buffer:
            level.buffer[key] = torch.empty(camera.height, camera.width, 3, device=self.device)
        target = torch.div(level.targets[v], 255.0, out=level.buffer[key])
        loss = photometric_loss(image, target, cfg.ssim_weight)
        loss.backward()

        in_window = cfg.density_control and progress < cfg.densify_stop
        with torch.no_grad():
            mse = float(((image - target) ** 2).mean())
            if in_window and meta["means2d"].grad is not None:
                full = self.views[v].camera.width
                self.controller.accumulate(
                    meta["means2d"].grad, meta["radii"], camera.width, camera.height, full / camera.width
                )
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if optimize_pose:
                self.pose_optimizer.step()
                self.pose_optimizer.zero_grad(set_to_none=True)
            self.step += 1
            if in_window and progress >= cfg.densify_start:
                self._density_control(progress)
        return {"loss": float(loss.detach()), "psnr": -10.0 * math.log10(max(mse, 1e-10))}

    def _density_control(self, progress: float) -> None:
        cfg = self.config
        densify_every, reset_every = self._intervals(progress)
        if self.last_densify is None:
            self.last_densify = self.step
        elif self.step - self.last_densify >= densify_every:
            self.controller.densify_and_prune(
                self.gaussians, self.optimizer, self.extent, prune_large=self.step > reset_every,
                generator=self.generator,
            )
            self.last_densify = self.step
        white = bool(torch.all(self.background == 1.0))
        if self.step - self.last_reset >= reset_every or (white and not self.white_reset_done):
            reset_opacity(self.gaussians, self.optimizer, cfg.densify.reset_opacity)
            if self.step - self.last_reset >= reset_every:
                self.last_reset = self.step
            self.white_reset_done = True

    def run(self, max_steps: int | None = None) -> None:
        """Train until the end of the schedule (or for at most `max_steps` more steps), checkpointing
        periodically, at the end and on interruption (Ctrl-C), then re-raising the interruption."""
        cfg = self.config
        timed = cfg.minutes is not None
        total = int(round(cfg.minutes * 60)) if timed else cfg.iterations
        bar = tqdm(total=total, initial=int(self.elapsed) if timed else self.step, unit="s" if timed else "it",
                   desc="training Gaussians", dynamic_ncols=True, disable=None)
        last_checkpoint = time.perf_counter()
        smoothed: dict[str, float] = {}
        done = 0
        try:
            with training_threads(cfg, self.device):
                while self.progress() < 1.0 and (max_steps is None or done < max_steps):
                    start = time.perf_counter()
                    stats = self.train_step()
                    self.elapsed += time.perf_counter() - start
                    done += 1
                    for key, value in stats.items():
                        smoothed[key] = value if key not in smoothed else 0.9 * smoothed[key] + 0.1 * value
                    if self.step % cfg.log_interval == 0 or self.progress() >= 1.0:
                        row = [self.step, self.elapsed, smoothed["loss"], smoothed["psnr"], len(self.gaussians)]
                        self.curve.append(row)
                        bar.set_postfix(loss=f"{smoothed['loss']:.4f}", psnr=f"{smoothed['psnr']:.2f}",
                                        n=len(self.gaussians), refresh=False)
                    if timed:
                        bar.update(min(int(self.elapsed), total) - bar.n)
                    else:
                        bar.update(1)
                    if time.perf_counter() - last_checkpoint > 60.0 * cfg.checkpoint_minutes:
                        self.save_checkpoint()
                        last_checkpoint = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            self.save_checkpoint()
            raise
        bar.close()
        self.save_checkpoint()

    # -- checkpoints -------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write everything needed to continue training to `out_dir/checkpoint.pt`, atomically."""
        state = {
            "version": CHECKPOINT_VERSION,
            "config": json.dumps(asdict(self.config)),
            "step": self.step,
            "elapsed": self.elapsed,
            "params": {name: p.detach().cpu() for name, p in self.gaussians.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "controller": {k: v.cpu() for k, v in self.controller.state_dict().items()},
            "order": list(self.order),
            "order_pos": self.order_pos,
            "last_densify": self.last_densify,
            "last_reset": self.last_reset,
            "white_reset_done": self.white_reset_done,
            "rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": self.generator.get_state(),
            "curve": self.curve,
        }
        if self.poses is not None:
            state["poses"] = {k: v.detach().cpu() for k, v in self.poses.state_dict().items()}
            state["pose_optimizer"] = self.pose_optimizer.state_dict()
        path = self.out_dir / CHECKPOINT_NAME
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def _load_checkpoint(self, path: Path) -> None:
        state = load_torch_file(path, "training checkpoint")
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            found = state.get("version") if isinstance(state, dict) else None
            raise InputError(f"{path}: checkpoint version {found} is not {CHECKPOINT_VERSION}")
        saved = json.loads(state["config"])
        if saved.get("sh_degree") != self.config.sh_degree:
            raise InputError(f"{path}: the checkpoint has SH degree {saved.get('sh_degree')}, "
                             f"the config {self.config.sh_degree}")
        if bool(saved.get("optimize_poses", False)) != self.config.optimize_poses:
            trained = "with" if saved.get("optimize_poses") else "without"
            raise InputError(f"{path}: the checkpoint was trained {trained} pose optimisation, unlike the config")
        if self.poses is not None:
            self.poses.load_state_dict({k: v.to(self.device) for k, v in state["poses"].items()})
            self.pose_optimizer.load_state_dict(state["pose_optimizer"])
        self.gaussians = Gaussians({k: v.to(self.device) for k, v in state["params"].items()})
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller = DensityController(self.config.densify, len(self.gaussians), self.device)
        self.controller.load_state_dict({k: v.to(self.device) for k, v in state["controller"].items()})
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.order, self.order_pos = list(state["order"]), int(state["order_pos"])
        self.last_densify, self.last_reset = state["last_densify"], int(state["last_reset"])
        self.white_reset_done = bool(state["white_reset_done"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.generator.set_state(state["torch_rng"])
        self.curve = [list(row) for row in state["curve"]]

    # -- outputs -----------------------------------------------------------------------------------------------

    def export(self, extra: dict | None = None) -> dict[str, Path]:
        """Write `point_cloud.ply` (3DGS layout), `scene.splat`, `config.json`, `training_curve.svg` and
        `history.json` (the curve as `[{iteration, seconds, loss, psnr, num_gaussians}]`, what the report reads)."""
        from mapforge.splat.evaluate import write_training_curve

        data = self.gaussians.to_data()
        paths = {
            "ply": write_gaussian_ply(self.out_dir / "point_cloud.ply", data),
            "splat": write_splat(self.out_dir / "scene.splat", data),
        }
        info = {
            "config": asdict(self.config),
            "background": self.background.cpu().tolist(),
            "scene_extent": self.extent,
            "device": str(self.device),
            "train_views": len(self.views),
            **(extra or {}),
        }
        paths["config"] = write_json(self.out_dir / "config.json", info)
        paths["curve"] = write_training_curve(self.out_dir / "training_curve.svg", self.curve)
        keys = ("iteration", "seconds", "loss", "psnr", "num_gaussians")
        paths["history"] = write_json(self.out_dir / "history.json", [dict(zip(keys, row)) for row in self.curve])
        return paths

    def train_poses(self) -> list[Rigid3]:
        """The cam_from_world of every training view (`views`), refined when poses are optimised."""
        if self.poses is None:
            return [view.cam_from_world for view in self.views]
        return [self.poses.corrected_rigid(k, view.cam_from_world) for k, view in enumerate(self.views)]

    def align_test_poses(self, indices: list[int], iterations: int | None = None) -> list[Rigid3]:
        """Test-time pose alignment: the poses of the data set's views `indices`, refined against the trained
        Gaussians (frozen) for `iterations` steps each (default `config.test_pose_iterations`; see `align_poses`)."""
        cfg = self.config
        views = pinhole_views(self.dataset, indices)
        iterations = cfg.test_pose_iterations if iterations is None else iterations
        if not views or iterations == 0:
            return [view.cam_from_world for view in views]
        aligned = []
        with training_threads(cfg, self.device):
            for view in tqdm(views, desc="aligning held-out poses", unit="view", leave=False, disable=None):
                aligned += align_poses(
                    self.gaussians, [view.camera], [view.cam_from_world], [view.load_image(self.dataset)],
                    self.background, iterations, (cfg.lr_test_poses, cfg.lr_poses_final),
                    (cfg.lr_test_poses * self.extent, cfg.lr_poses_final * self.extent), cfg.ssim_weight, cfg.backend,
                )
        return aligned

    def refined_poses(self) -> list[Rigid3]:
        """cam_from_world of every image of the data set: training views as optimised, the others aligned with
        `align_test_poses`. Only with `config.optimize_poses`."""
        if self.poses is None:
            raise ValueError("poses are refined only with optimize_poses")
        poses = list(self.dataset.cam_from_world)
        for view, pose in zip(self.views, self.train_poses()):
            poses[view.index] = pose
        trained = {view.index for view in self.views}
        others = [i for i in range(len(self.dataset)) if i not in trained]
        for i, pose in zip(others, self.align_test_poses(others)):
            poses[i] = pose
        return poses

    def write_poses(self, poses: list[Rigid3]) -> Path:
        """Write `out_dir/sparse/0` (COLMAP binary) with `poses` (one per image of the data set).

        When the data's sparse model holds every image (a COLMAP or pointmap folder), its cameras, image ids,
        keypoints and points are kept with the new poses (points are not re-triangulated); otherwise the model
        has the data's cameras as loaded, and its points, if any, without tracks."""
        source = self.dataset.points
        names = {image.name for image in source.images.values()} if source is not None else set()
        if source is not None and set(self.dataset.image_names) <= names:
            by_name = dict(zip(self.dataset.image_names, poses))
            images = {
                image_id: Image(image.name, image.camera_id, by_name.get(image.name, image.cam_from_world),
                                image.keypoints, image.point3D_ids)
                for image_id, image in source.images.items()
            }
            rec = Reconstruction(dict(source.cameras), images, dict(source.points3D))
        else:
            rec = dataclasses.replace(self.dataset, cam_from_world=poses).to_reconstruction()
            if source is not None:
                rec.points3D = {pid: Point3D(p.xyz, p.rgb, p.error) for pid, p in source.points3D.items()}
        return write_model(rec, self.out_dir / "sparse" / "0", "bin")

    def finish(self, extra: dict | None = None, split: str = "test") -> dict:
        """Export the model and evaluate it on `split`: renders in `out_dir/renders/<split>/`, `out_dir/metrics.json`.
        With `optimize_poses`, evaluation uses the refined poses (held-out views aligned first) and they are
        written to `out_dir/sparse/0`. Returns the metrics."""
        from mapforge.metrics.lpips import load_lpips
        from mapforge.splat.evaluate import evaluate

        self.export(extra)
        dataset, pose_info = self.dataset, {}
        if self.poses is not None:
            poses = self.refined_poses()
            dataset = dataclasses.replace(self.dataset, cam_from_world=poses)
            pose_info = {"pose_refinement": _pose_changes(self.dataset.cam_from_world, poses, self.views,
                                                          self.config.test_pose_iterations),
                         "refined_model": str(self.write_poses(poses))}
        lpips = load_lpips(self.config.lpips_weights).to(self.device) if self.config.lpips_weights else None
        metrics = evaluate(self.gaussians, dataset, self.dataset.subset(split), self.background,
                           self.out_dir / "renders" / split, backend=self.config.backend, lpips=lpips)
        metrics.update(pose_info)
        metrics.update({
            "split": split,
            "iterations": self.step,
            "train_seconds": self.elapsed,
            "num_gaussians": len(self.gaussians),
            "train_psnr_last": self.curve[-1][3] if self.curve else None,
        })
        write_json(self.out_dir / "metrics.json", metrics)
        return metrics


def _pose_changes(before: list[Rigid3], after: list[Rigid3], train_views: list[PinholeView], test_iterations: int
                  ) -> dict:
    """How far refinement moved the poses: mean and max rotation (degrees) and camera centre shift, for the
    training views and the others."""
    trained = {view.index for view in train_views}
    result: dict = {"test_pose_iterations": test_iterations}
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


def train(
    dataset: Dataset,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    init: Gaussians | None = None,
    extra: dict | None = None,
) -> dict:
    """Train, export and evaluate in one call (what `mapforge splat train` runs); returns the test metrics."""
    trainer = Trainer(dataset, out_dir, config, resume=resume, init=init)
    trainer.run()
    return trainer.finish(extra)


def train_path(
    data: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    downscale: int = 1,
    resume: bool = False,
    init: str | Path | None = None,
) -> dict:
    """`train` on the data set at `data` (any layout `load_dataset` reads), images shrunk by `downscale`;
    `init` optionally names a 3DGS `.ply`, point-cloud `.ply` or COLMAP model to start from."""
    from mapforge.datasets import load_dataset
    from mapforge.splat.gaussians import load_initial

    config = config or TrainConfig()
    dataset = load_dataset(data, downscale=downscale)
    resuming = resume and (Path(out_dir) / CHECKPOINT_NAME).is_file()
    start = load_initial(init, config.sh_degree) if init is not None and not resuming else None
    extra = {"data": str(Path(data).resolve()), "downscale": downscale, "init": None if init is None else str(init)}
    return train(dataset, out_dir, config, resume=resume, init=start, extra=extra)
