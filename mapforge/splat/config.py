"""How to train 3D Gaussian splatting: `SplatConfig`, with where each default comes from."""

from __future__ import annotations

from dataclasses import dataclass, field

from mapforge.errors import InputError
from mapforge.splat.densify import DensifyConfig
from mapforge.splat.rasterize.api import BACKENDS
from mapforge.training.config import TrainingConfig, check_fraction, check_non_negative, check_positive

REFERENCE_ITERATIONS = 30000  # the 3DGS schedule the fractions below are taken from


@dataclass
class SplatConfig(TrainingConfig):
    """How to train Gaussians. Learning rates and schedule fractions are those of the 3DGS reference
    implementation. The settings every trainer shares come from `TrainingConfig`: `iterations` (3DGS: 30000),
    `minutes` (the schedule is laid over a minutes budget; see `mapforge.splat.trainer`), `log_interval` (10),
    `checkpoint_minutes`, `device`, `seed` (also seeds the order of the views), `lpips_weights`.

    Attributes:
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
        init: a 3DGS `.ply` or `.splat`, a point-cloud `.ply` or a COLMAP model folder to start from (see
            `mapforge.splat.gaussians.load_initial`); empty (default): the data's sparse points, else random
            Gaussians in the scene's box. Read before training starts; ignored when resuming.
        cpu_torch_threads: torch intra-op threads while training on CPU (0 = leave torch's setting). The heavy
            kernels are numba's and use every core; torch's own ops are small, and its thread pool busy-waits
            between them, competing with numba's threads (1 thread halved the step time on the 2-core machine
            with 100k Gaussians at 400x400, under load).
    """

    sh_degree: int = 3
    sh_degree_interval: float = 1000 / REFERENCE_ITERATIONS
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
    densify_start: float = 500 / REFERENCE_ITERATIONS
    densify_stop: float = 15000 / REFERENCE_ITERATIONS
    densify_interval: float = 100 / REFERENCE_ITERATIONS
    densify_min_interval: int = 50
    opacity_reset_interval: float = 3000 / REFERENCE_ITERATIONS
    densify_per_reset: int = 30
    resolution_schedule: tuple[tuple[float, int], ...] = ((0.0, 4), (0.1, 2), (0.3, 1))
    init_random_points: int = 100_000
    init_box_scale: float = 1.3 / 4.0
    background: tuple[float, float, float] | None = None
    backend: str = "auto"
    optimize_poses: bool = False
    lr_poses: float = 1e-3
    lr_poses_final: float = 1e-4
    poses_start: float = 0.1
    poses_stop: float = 1.0
    test_pose_iterations: int = 200
    lr_test_poses: float = 1e-2
    init: str = ""
    cpu_torch_threads: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.densify, dict):
            self.densify = DensifyConfig(**self.densify)
        self.resolution_schedule = tuple((float(p), int(f)) for p, f in self.resolution_schedule)
        self.init = str(self.init)
        if self.background is not None:
            self.background = tuple(float(c) for c in self.background)
            if len(self.background) != 3 or not all(0.0 <= c <= 1.0 for c in self.background):
                raise InputError(f"background must be three values in [0, 1], got {self.background}")
        if self.sh_degree not in (0, 1, 2, 3):
            raise InputError(f"SH degree must be 0..3, got {self.sh_degree!r}")
        if any(f < 1 for _, f in self.resolution_schedule):
            raise InputError("resolution_schedule downscale factors must be >= 1")
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        check_positive(self, "sh_degree_interval", "lr_means", "lr_means_final", "lr_sh_dc", "lr_sh_rest",
                       "lr_opacity", "lr_scales", "lr_quats", "densify_interval", "opacity_reset_interval",
                       "init_box_scale", "lr_poses", "lr_poses_final", "lr_test_poses")
        check_positive(self, "init_random_points", "densify_min_interval", "densify_per_reset", integer=True)
        check_non_negative(self, "test_pose_iterations", "cpu_torch_threads", integer=True)
        check_fraction(self, "ssim_weight", "densify_start", "densify_stop")
        if not 0 <= self.poses_start < self.poses_stop <= 1:
            raise InputError(f"need 0 <= poses_start < poses_stop <= 1, got {self.poses_start} and {self.poses_stop}")
