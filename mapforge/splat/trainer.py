"""Training 3D Gaussian splatting (Kerbl et al. 2023) on posed images, made for CPUs and fine on GPUs.

The loss is `(1 - w) L1 + w (1 - SSIM)` with w = 0.2, optimised by Adam with 3DGS's per-parameter learning rates,
adaptive density control (`densify.py`) and progressive SH degree. The budget, history, checkpoints (with resume)
and outputs are the shared training loop's (`mapforge.training`).

Schedule. Every schedule point is a fraction of the run ("progress" p in [0, 1)): 3DGS's iteration numbers divided
by its 30000 iterations (densify from 500/30000 to 15000/30000, opacity reset every 3000/30000, one more SH degree
every 1000/30000, position learning rate decaying exponentially over the run). With `iterations`, p = step /
iterations. With `minutes`, p = training seconds / budget: the same schedule is laid over the training-time budget
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mapforge.datasets.base import Dataset
from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.io.gaussians import write_gaussian_ply, write_splat
from mapforge.scene import Camera
from mapforge.splat.config import SplatConfig
from mapforge.splat.densify import DensityController, reset_opacity
from mapforge.splat.evaluate import evaluate
from mapforge.splat.gaussians import PARAM_NAMES, Gaussians, load_initial
from mapforge.splat.poses import (
    PoseCorrection,
    align_poses,
    photometric_loss,
    pose_changes,
    pose_learning_rate,
    write_refined_model,
)
from mapforge.splat.views import PinholeView, pinhole_views, scene_extent
from mapforge.training.bounds import focus_box
from mapforge.training.trainer import TrainResult, Trainer, check_dataset, load_training_data

# Downscaled training images keep at least this many pixels a side (ours: smaller ones carry too little signal).
MIN_LEVEL_SIDE = 16


def initial_gaussians(
    dataset: Dataset, views: list[PinholeView], config: SplatConfig, device: torch.device
) -> Gaussians:
    """The data's sparse points if it has any, else `init_random_points` random Gaussians in its bounding box
    (`metadata["bounding_box"]`) or in the `focus_box` of the cameras."""
    if dataset.points is not None and dataset.points.points3D:
        return Gaussians.from_reconstruction(dataset.points, config.sh_degree, device)
    box = dataset.metadata.get("bounding_box")
    if box is not None:
        low, high = np.asarray(box[0]), np.asarray(box[1])
    else:
        low, high = focus_box([view.cam_from_world for view in views], config.init_box_scale)
    return Gaussians.random_in_box(config.init_random_points, low, high, config.sh_degree, config.seed, device)


def resolve_background(config: SplatConfig, dataset: Dataset) -> np.ndarray:
    """`[3]` float32: the configured background, else the data's, else black."""
    if config.background is not None:
        return np.asarray(config.background, np.float32)
    if dataset.background is not None:
        return np.asarray(dataset.background, np.float32).reshape(3)
    return np.zeros(3, np.float32)


@contextlib.contextmanager
def training_threads(config: SplatConfig, device: torch.device) -> Iterator[None]:
    """Within the block, torch uses `config.cpu_torch_threads` intra-op threads on CPU; restored afterwards."""
    previous = torch.get_num_threads()
    if device.type == "cpu" and config.cpu_torch_threads > 0:
        torch.set_num_threads(config.cpu_torch_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class _Level:
    """Training data at one downscale factor: cameras, calibration, targets (uint8) and a reusable float buffer."""

    factor: int
    cameras: list[Camera]
    Ks: list[torch.Tensor]
    targets: list[torch.Tensor]
    buffer: dict[tuple[int, int], torch.Tensor]


class SplatTrainer(Trainer):
    """Trains Gaussians on the "train" split of `dataset`; `run()` optimises, `finish()` exports and evaluates.

    With `resume=True` and a checkpoint in `out_dir`, training continues from it (same config expected); else
    the Gaussians start from `config.init`, the data's sparse points or a random box. With
    `config.optimize_poses`, `poses` holds the pose corrections of `views` (else it is None).
    """

    kind = "splat"
    title = "Gaussians"

    def __init__(self, dataset: Dataset, config: SplatConfig, out_dir: str | Path, resume: bool = False):
        super().__init__(config, out_dir)
        check_dataset(dataset, 1.0, self.lpips)
        resuming = resume and self.checkpoint_path.exists()
        init = self._initial_file(resuming)
        self.dataset = dataset
        self.views = pinhole_views(dataset, dataset.subset("train"))
        self.extent = scene_extent(self.views)
        self.background = torch.as_tensor(resolve_background(config, dataset), device=self.device)
        self.viewmats = [v.viewmat(self.device) for v in self.views]
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.order: list[int] = []
        self.order_pos = 0
        self.last_densify: int | None = None
        self.last_reset = 0
        self.white_reset_done = False
        self.level: _Level | None = None
        self.poses = PoseCorrection(len(self.views), self.device) if config.optimize_poses else None
        self.pose_optimizer = self._make_pose_optimizer() if self.poses is not None else None
        if not (resuming and self.resume()):
            self._start(init if init is not None else initial_gaussians(dataset, self.views, config, self.device))
        self.full_images = self._load_images()

    # -- set-up ------------------------------------------------------------------------------------------------

    def _initial_file(self, resuming: bool) -> Gaussians | None:
        """The Gaussians of `config.init` (checked to exist even when resuming, which ignores them)."""
        init = self.config.init
        if not init:
            return None
        if not Path(init).exists():
            raise InputError(f"initial Gaussians or points: {init} does not exist")
        return None if resuming else load_initial(init, self.config.sh_degree, self.device)

    def _start(self, gaussians: Gaussians) -> None:
        gaussians = Gaussians({k: v.to(self.device) for k, v in gaussians.params.items()})
        if gaussians.sh_degree != self.config.sh_degree:
            gaussians = Gaussians.from_data(gaussians.to_data(), self.config.sh_degree, self.device)
        self.gaussians = gaussians
        self.optimizer = self._make_optimizer()
        self.controller = DensityController(self.config.densify, len(self.gaussians), self.device)

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

    def training_context(self) -> contextlib.AbstractContextManager:
        return training_threads(self.config, self.device)

    # -- schedule ----------------------------------------------------------------------------------------------

    def _factor(self, progress: float) -> int:
        factor = 1
        for start, f in self.config.resolution_schedule:
            if progress >= start:
                factor = f
        smallest = min(min(v.camera.width, v.camera.height) for v in self.views)
        while factor > 1 and smallest // factor < MIN_LEVEL_SIDE:
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

    def _intervals(self, progress: float, step: int) -> tuple[int, int]:
        """Iterations between densifications and between opacity resets (the run's length is estimated from the
        speed so far when training to a time budget)."""
        cfg = self.config
        total = cfg.iterations if cfg.minutes is None else step / max(progress, 1e-9)
        densify = max(cfg.densify_min_interval, int(round(cfg.densify_interval * total)))
        reset = max(int(round(cfg.opacity_reset_interval * total)), cfg.densify_per_reset * densify)
        return densify, reset

    # -- the loss and one step ---------------------------------------------------------------------------------

    def train_step(self, progress: float) -> dict[str, float]:
        """One optimisation step on one training view; returns its loss, squared error and Gaussian count."""
        cfg = self.config
        factor = self._factor(progress)
        if self.level is None or self.level.factor != factor:
            self._set_level(factor)
        v = self._next_view()
        camera = self.level.cameras[v]
        self._set_learning_rate(progress)
        degree = min(cfg.sh_degree, int(progress / cfg.sh_degree_interval))
        optimize_pose = self.poses is not None and cfg.poses_start <= progress < cfg.poses_stop
        viewmat = self.viewmats[v]
        if self.poses is not None:
            with torch.set_grad_enabled(optimize_pose):
                viewmat = self.poses.corrected(v, viewmat)
        image, _, _, meta = self.gaussians.render(camera, viewmat, degree, self.background, cfg.backend,
                                                  self.level.Ks[v])
        target = self._target(v, camera)
        loss = photometric_loss(image, target, cfg.ssim_weight)
        loss.backward()
        in_window = cfg.density_control and progress < cfg.densify_stop
        with torch.no_grad():
            mse = float(((image - target) ** 2).mean())
            if in_window and meta["means2d"].grad is not None:
                full = self.views[v].camera.width
                self.controller.accumulate(meta["means2d"].grad, meta["radii"], camera.width, camera.height,
                                           full / camera.width)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if optimize_pose:
                self.pose_optimizer.step()
                self.pose_optimizer.zero_grad(set_to_none=True)
            if in_window and progress >= cfg.densify_start:
                self._density_control(progress, self.step + 1)
        return {"loss": float(loss.detach()), "mse": mse, "num_gaussians": len(self.gaussians)}

    def _target(self, v: int, camera: Camera) -> torch.Tensor:
        """View `v`'s image at the current level as float32 in [0, 1], in a buffer reused across steps."""
        key = (camera.height, camera.width)
        if key not in self.level.buffer:
            self.level.buffer[key] = torch.empty(camera.height, camera.width, 3, device=self.device)
        return torch.div(self.level.targets[v], 255.0, out=self.level.buffer[key])

    def _density_control(self, progress: float, step: int) -> None:
        cfg = self.config
        densify_every, reset_every = self._intervals(progress, step)
        if self.last_densify is None:
            self.last_densify = step
        elif step - self.last_densify >= densify_every:
            self.controller.densify_and_prune(
                self.gaussians, self.optimizer, self.extent, prune_large=step > reset_every, generator=self.generator,
            )
            self.last_densify = step
        white = bool(torch.all(self.background == 1.0))
        if step - self.last_reset >= reset_every or (white and not self.white_reset_done):
            reset_opacity(self.gaussians, self.optimizer, cfg.densify.reset_opacity)
            if step - self.last_reset >= reset_every:
                self.last_reset = step
            self.white_reset_done = True

    # -- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {
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
        }
        if self.poses is not None:
            state["poses"] = {k: v.detach().cpu() for k, v in self.poses.state_dict().items()}
            state["pose_optimizer"] = self.pose_optimizer.state_dict()
        return state

    def check_resumable(self, saved: dict) -> None:
        if saved.get("sh_degree") != self.config.sh_degree:
            raise InputError(f"{self.checkpoint_path}: the checkpoint has SH degree {saved.get('sh_degree')}, "
                             f"the config {self.config.sh_degree}")
        if bool(saved.get("optimize_poses", False)) != self.config.optimize_poses:
            trained = "with" if saved.get("optimize_poses") else "without"
            raise InputError(f"{self.checkpoint_path}: the checkpoint was trained {trained} pose optimisation, "
                             "unlike the config")

    def load_state_dict(self, state: dict) -> None:
        if self.poses is not None:
            self.poses.load_state_dict({k: v.to(self.device) for k, v in state["poses"].items()})
            self.pose_optimizer.load_state_dict(state["pose_optimizer"])
        self.gaussians = Gaussians({k: v.to(self.device) for k, v in state["params"].items()})
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.controller = DensityController(self.config.densify, len(self.gaussians), self.device)
        self.controller.load_state_dict({k: v.to(self.device) for k, v in state["controller"].items()})
        self.order, self.order_pos = list(state["order"]), int(state["order_pos"])
        self.last_densify, self.last_reset = state["last_densify"], int(state["last_reset"])
        self.white_reset_done = bool(state["white_reset_done"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.generator.set_state(state["torch_rng"])

    # -- outputs -----------------------------------------------------------------------------------------------

    def export(self) -> dict[str, Path]:
        """`point_cloud.ply` (3DGS layout) and `scene.splat`."""
        data = self.gaussians.to_data()
        return {"ply": write_gaussian_ply(self.out_dir / "point_cloud.ply", data),
                "splat": write_splat(self.out_dir / "scene.splat", data)}

    def run_info(self) -> dict:
        return {"background": self.background.cpu().tolist(), "scene_extent": self.extent,
                "train_views": len(self.views)}

    def evaluate_split(self, split: str) -> dict:
        """Renders of `split` scored against its images. With `optimize_poses`, evaluation uses the refined
        poses (held-out views aligned first) and they are written to `out_dir/sparse/0`."""
        dataset, pose_info = self.dataset, {}
        if self.poses is not None:
            poses = self.refined_poses()
            dataset = dataclasses.replace(self.dataset, cam_from_world=poses)
            changes = pose_changes(self.dataset.cam_from_world, poses, {view.index for view in self.views})
            pose_info = {"pose_refinement": {"test_pose_iterations": self.config.test_pose_iterations, **changes},
                         "refined_model": str(write_refined_model(self.dataset, poses, self.out_dir / "sparse" / "0"))}
        metrics = evaluate(self.gaussians, dataset, self.dataset.subset(split), self.background,
                           self.out_dir / "renders" / split, backend=self.config.backend, lpips=self.lpips)
        entries = self.history.entries
        metrics.update({**pose_info, "num_gaussians": len(self.gaussians),
                        "train_psnr_last": entries[-1]["psnr"] if entries else None})
        return metrics

    # -- poses -------------------------------------------------------------------------------------------------

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


def train(dataset: Dataset, config: SplatConfig, out_dir: str | Path, *, resume: bool = False,
          extra: dict | None = None) -> TrainResult:
    """Train, export and evaluate in one call (what `mapforge splat train` runs). Writes `point_cloud.ply`,
    `scene.splat`, `config.json` (with `extra`), `history.json`, `training_curve.svg`, `checkpoint.pt`, the test
    renders and `metrics.json` to `out_dir`."""
    return SplatTrainer(dataset, config, out_dir, resume=resume).complete(extra)


def train_path(data: str | Path, config: SplatConfig, out_dir: str | Path, *, downscale: int = 1,
               resume: bool = False) -> TrainResult:
    """`train` on the data set at `data` (any layout `load_dataset` reads), images shrunk by `downscale`."""
    dataset, extra = load_training_data(data, downscale)
    extra["init"] = config.init or None
    return train(dataset, config, out_dir, resume=resume, extra=extra)
