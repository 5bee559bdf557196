"""Training and evaluation of the NeRF models on a `Dataset`: ray set-up, the training loop with checkpoints and
resume, rendering of whole images and PSNR/SSIM on the test views."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mapforge.datasets.base import Dataset
from mapforge.devices import select_device
from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.io.atomic import atomic_path, write_json
from mapforge.io.torch_files import first_line, load_torch_file
from mapforge.metrics.lpips import LPIPS, load_lpips
from mapforge.nerf.models import FastNeRFModel, NeRFModel
from mapforge.nerf.rays import camera_rays, forward_facing_frame, ndc_rays, ray_aabb_intersect
from mapforge.scene import Camera

# 2: every value is a tensor, a plain container, a number or a string (config and set-up as JSON), read with
# torch's weights-only unpickler; 1 (unversioned) pickled the config and needed full unpickling.
CHECKPOINT_VERSION = 2

@dataclass
class TrainConfig:
    """Settings shared by both models.

    Attributes:
        steps: optimisation steps.
        lr, lr_final: Adam learning rate, decayed exponentially from `lr` to `lr_final` over `steps`.
        batch_rays: rays per step (for the fast model, the largest starting value of the adaptive batch).
        image_scale: images (and cameras) are resized by this factor before training and evaluation.
        eval_views: how many test views to evaluate at the end, evenly spread over the test split (None: all).
        checkpoint_every: steps between checkpoints when an output folder is given (0: only at the end).
        seed: seeds ray selection, sampling jitter and initialisation.
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        aabb: scene box `((xmin, ymin, zmin), (xmax, ymax, zmax))` in world units; None: from the data set
            (metadata "aabb" or "bounding_box", else its sparse points, else where the cameras look).
        ndc: render in LLFF's normalised device coordinates; None: when the data set says it is forward facing
            (metadata "forward_facing").
        time_budget: stop training after this many seconds even if `steps` are not done (None: no limit); the
            learning-rate decay then follows whichever of steps and time runs out first. Data loading and
            evaluation are not counted.
        log_every: steps between entries of the training history (mean loss and PSNR over those steps).
        lpips_weights: LPIPS weights for the final evaluation: one combined file, or the AlexNet and the linear
            weights files (see `mapforge.metrics.lpips`); empty (default) measures PSNR and SSIM only.
    """

    steps: int = 20000
    lr: float = 5e-4
    lr_final: float = 5e-5
    batch_rays: int = 1024
    image_scale: float = 1.0
    eval_views: int | None = None
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "auto"
    aabb: tuple | None = None
    ndc: bool | None = None
    time_budget: float | None = None
    log_every: int = 25
    lpips_weights: tuple[str, ...] = ()

    model = "base"


@dataclass
class NeRFConfig(TrainConfig):
    """The original NeRF. Defaults are the paper's (Adam 5e-4 decaying to 5e-5, 64 + 128 samples, perturbed
    sampling, 8 layers of 256) except `batch_rays` 1024 (paper 4096) and `steps` 200k (paper 100k-300k) to suit
    a CPU batch.

    Attributes:
        precrop_steps, precrop_fraction: for the first `precrop_steps` steps, rays come only from the central
            `precrop_fraction` of each image's width and height (the reference code's lego setting: 500 and 0.5).
            Over a white background, rays that see only background can otherwise push the ReLU density below
            zero everywhere before the object is learnt, and a zero density gets no gradient back. 0: off.
    """

    steps: int = 200_000
    num_coarse: int = 64
    num_fine: int = 128
    depth: int = 8
    width: int = 256
    precrop_steps: int = 500
    precrop_fraction: float = 0.5

    model = "nerf"


@dataclass
class FastNeRFConfig(TrainConfig):
    """The hash-grid model. Adam betas (0.9, 0.99), eps 1e-15 and lr 1e-2 are instant-ngp's; `steps`, the decay
    to `lr_final` and the smaller batch, table and marching density suit a CPU budget of minutes (measured on
    lego-400 on 2 cores: more, smaller steps reach a given PSNR far sooner than instant-ngp's 2^18 samples a step).

    Attributes:
        target_samples: the ray batch adapts so that each step evaluates about this many packed samples
            (instant-ngp: 2^18; on 2 CPU cores 2^15 gave several dB more after the same minutes than 2^13 or 2^18).
        log2_hashmap_size, finest_resolution, num_levels: hash-grid size (paper: 19, 2048, 16; a 2^17 table
            fits a CPU's last-level cache, and makes lookups and Adam steps cheaper).
        grid_resolution: occupancy grid cells per side (instant-ngp: 128).
        render_steps: marching steps across the box diagonal (instant-ngp: 1024; 512 learned faster per second
            than 256 on lego).
        grid_update_every: steps between occupancy updates (instant-ngp: 16).
        grid_warmup_steps: before this step every update evaluates all cells (instant-ngp: 256; 0 here, since a
            full update of 128^3 cells costs seconds on a CPU: only the first update is full).
        grid_update_fraction: afterwards, the fraction of cells re-evaluated per update (instant-ngp: 1/2,
            half uniform half occupied; smaller here because density queries dominate CPU time).
        grid_threshold: a cell is occupied when density * step size exceeds this (or the mean density is lower).
        train_min_transmittance: in training, only samples in front of the point where a ray's transmittance
            (from densities evaluated without gradients) drops below this go through the network with gradients
            (instant-ngp's compaction, 1e-4); 0: all marched samples.
        weight_decay: L2 on the MLP weights (instant-ngp: 1e-6).
        warmup_steps: the learning rate ramps up linearly over these first steps (stabilises the hash grid).
    """

    steps: int = 3000
    lr: float = 1e-2
    lr_final: float = 3e-4
    batch_rays: int = 4096
    target_samples: int = 1 << 15
    log2_hashmap_size: int = 17
    finest_resolution: int = 2048
    num_levels: int = 16
    grid_resolution: int = 128
    render_steps: int = 512
    grid_update_every: int = 16
    grid_warmup_steps: int = 0
    grid_update_fraction: float = 0.0625
    grid_threshold: float = 0.01
    train_min_transmittance: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 100

    model = "fast"


CONFIGS = {"nerf": NeRFConfig, "fast": FastNeRFConfig}


def make_config(model: str, settings: dict[str, object] | None = None) -> TrainConfig:
    """The config of `model` ("fast" or "nerf") with `settings` overriding fields by name. String values (from
    the command line) are read as JSON where they parse (numbers, true/false, null, lists), else kept as text."""
    if model not in CONFIGS:
        raise InputError(f"unknown NeRF model {model!r} (known: {', '.join(CONFIGS)})")
    config_cls = CONFIGS[model]
    names = {f.name: f for f in fields(config_cls)}
    values = {}
    for key, value in (settings or {}).items():
        if key not in names:
            raise InputError(f"the {model} NeRF has no setting {key!r} (it has: {', '.join(sorted(names))})")
        if isinstance(value, str) and names[key].type != "str":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise InputError(f"setting {key}: cannot read {value!r} as a value") from None
        values[key] = tuple(value) if isinstance(value, list) else value
    return config_cls(**values)


@dataclass
class SceneSetup:
    """How world rays become model rays: the box, the NDC mapping (for forward-facing scenes) and depth bounds."""

    aabb: np.ndarray  # [2, 3], in the space the model sees (NDC box when ndc)
    ndc: bool = False
    ndc_from_world: np.ndarray | None = None  # [3, 4]
    ndc_focal: tuple[float, float, int, int] | None = None  # fx, fy, width, height of the reference camera
    ndc_near: float = 1.0
    near_far: tuple[float, float] | None = None  # global bounds when the data gives them (not in NDC)
    background: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> SceneSetup:
        data = dict(data)
        for key in ("aabb", "ndc_from_world", "background"):
            if data.get(key) is not None:
                data[key] = np.asarray(data[key], dtype=np.float64)
        return cls(**data)


@dataclass
class TrainResult:
    """What `train` produced: the model, its scene set-up, the last step and the evaluation metrics."""

    model: torch.nn.Module
    setup: SceneSetup
    step: int
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def scene_aabb(dataset: Dataset) -> np.ndarray:
    """A box `[2, 3]` around the scene: metadata "aabb"/"bounding_box", else the 1-99 % range of the sparse
    points grown by 10 %, else a cube around the point the cameras look at, of half the mean camera distance."""
    for key in ("aabb", "bounding_box"):
        if dataset.metadata.get(key) is not None:
            return np.asarray(dataset.metadata[key], dtype=np.float64).reshape(2, 3)
    if dataset.points is not None and len(dataset.points.points3D) >= 10:
        xyz = dataset.points.points_xyz()
        lo, hi = np.percentile(xyz, 1, axis=0), np.percentile(xyz, 99, axis=0)
        pad = 0.1 * (hi - lo)
        return np.stack([lo - pad, hi + pad])
    if dataset.cam_from_world is None:
        raise InputError(f"data set {dataset.name} has no camera poses: NeRF needs posed images")
    centres = np.stack([-p.rotation.T @ p.translation for p in dataset.cam_from_world])
    axes = np.stack([p.rotation[2] for p in dataset.cam_from_world])
    # Least-squares point nearest to every optical axis.
    projector = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]
    target = np.linalg.lstsq(projector.sum(0), np.einsum("nij,nj->i", projector, centres), rcond=None)[0]
    half = 0.5 * np.linalg.norm(centres - target, axis=1).mean()
    return np.stack([target - half, target + half])


def make_setup(dataset: Dataset, config: TrainConfig) -> SceneSetup:
    if dataset.cam_from_world is None:
        raise InputError(f"data set {dataset.name} has no camera poses: NeRF needs posed images")
    background = None if dataset.background is None else np.asarray(dataset.background, dtype=np.float64).reshape(3)
    near_far = None
    if dataset.near_far is not None:
        bounds = np.asarray(dataset.near_far, dtype=np.float64)
        near_far = (float(bounds[:, 0].min()), float(bounds[:, 1].max()))
    ndc = config.ndc if config.ndc is not None else bool(dataset.metadata.get("forward_facing", False))
    if ndc:
        if near_far is None:
            raise InputError("NDC rays need the data set's near/far bounds (LLFF poses_bounds)")
        frame = forward_facing_frame([dataset.cam_from_world[i] for i in dataset.split["train"]])
        camera = dataset.cameras[0].scaled(config.image_scale) if config.image_scale != 1.0 else dataset.cameras[0]
        K = camera.K
        return SceneSetup(
            aabb=np.array([[-1.5, -1.5, -1.0], [1.5, 1.5, 1.0]]),  # x, y a little past the image edges
            ndc=True,
            ndc_from_world=frame.matrix(),
            ndc_focal=(float(K[0, 0]), float(K[1, 1]), camera.width, camera.height),
            ndc_near=0.75 * near_far[0],  # NeRF's LLFF scaling puts the near plane at 3/4 of the closest bound
            near_far=near_far,
            background=background,
        )
    aabb = np.asarray(config.aabb, dtype=np.float64).reshape(2, 3) if config.aabb is not None else scene_aabb(dataset)
    return SceneSetup(aabb=aabb, near_far=near_far, background=background)


def model_rays(
    setup: SceneSetup, camera: Camera, cam_from_world: Rigid3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pixel rays of one image in the model's space: `origins [P, 3]`, unit `directions [P, 3]`, `near [P]`,
    `far [P]` (float32, CPU). Without near/far from the data, they come from the box."""
    origins, directions, _ = camera_rays(camera, cam_from_world)
    if setup.ndc:
        frame = Rigid3.from_matrix(setup.ndc_from_world)
        o = torch.from_numpy(frame.apply(origins))
        d = torch.from_numpy(directions @ frame.rotation.T)
        fx, fy, w, h = setup.ndc_focal
        o, d = ndc_rays(o, d, fx, fy, w, h, setup.ndc_near)
        length = d.norm(dim=-1)
        return o.float(), (d / length[:, None]).float(), torch.zeros_like(length).float(), length.float()
    o = torch.from_numpy(origins).float()
    d = torch.from_numpy(directions).float()
    enter, exit_ = ray_aabb_intersect(o, d, torch.from_numpy(setup.aabb).float())
    if setup.near_far is not None:
        near = torch.full_like(enter, setup.near_far[0])
        far = torch.full_like(enter, setup.near_far[1])
    else:
        near, far = enter.clamp_min(0.0), exit_.clamp_min(0.0)
    far = torch.maximum(far, near + 1e-3)  # rays missing the box still get a valid interval
    return o, d, near, far


def build_model(config: TrainConfig, setup: SceneSetup) -> torch.nn.Module:
    if isinstance(config, NeRFConfig):
        return NeRFModel(config.num_coarse, config.num_fine, depth=config.depth, width=config.width)
    if isinstance(config, FastNeRFConfig):
        return FastNeRFModel(
            torch.from_numpy(setup.aabb).float(),
            grid_resolution=config.grid_resolution,
            render_steps=config.render_steps,
            train_min_transmittance=config.train_min_transmittance,
            log2_hashmap_size=config.log2_hashmap_size,
            finest_resolution=config.finest_resolution,
            num_levels=config.num_levels,
        )
    raise InputError(f"unknown NeRF config {type(config).__name__}")


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # The fused update is one pass over each tensor: on a CPU, 8x faster than the per-operation one for the
    # hash table's 3.4M values (2.4 against 20 ms a step). Other devices keep torch's default.
    fused = {"fused": True} if next(model.parameters()).device.type in ("cpu", "cuda") else {}
    if isinstance(config, FastNeRFConfig):
        grid = [p for n, p in model.named_parameters() if "encoding" in n]
        mlp = [p for n, p in model.named_parameters() if "encoding" not in n]
        groups = [{"params": grid, "weight_decay": 0.0}, {"params": mlp, "weight_decay": config.weight_decay}]
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.99), eps=1e-15, **fused)
    return torch.optim.Adam(model.parameters(), lr=config.lr, **fused)


def _lr_factor(step: int, seconds: float, config: TrainConfig) -> float:
    """Learning-rate multiplier: exponential decay over the run's progress (the larger of the step and, with a
    time budget, the time fraction), times the fast model's linear warm-up."""
    progress = step / max(config.steps, 1)
    if config.time_budget:
        progress = max(progress, seconds / config.time_budget)
    decay = (config.lr_final / config.lr) ** min(progress, 1.0)
    warmup = min(1.0, (step + 1) / config.warmup_steps) if isinstance(config, FastNeRFConfig) and config.warmup_steps else 1.0
    return decay * warmup


def _resized(dataset: Dataset, index: int, scale: float) -> tuple[np.ndarray, Camera]:
    image = dataset.load_image(index)
    camera = dataset.cameras[index]
    if scale != 1.0:
        camera = camera.scaled(scale)
        image = cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    if image.shape[:2] != (camera.height, camera.width):
        raise InputError(
            f"image {dataset.image_names[index]} is {image.shape[1]}x{image.shape[0]} but its camera is "
            f"{camera.width}x{camera.height}"
        )
    return image.astype(np.float32), camera


def _training_rays(
    dataset: Dataset, setup: SceneSetup, scale: float, crop_fraction: float = 0.0
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every training pixel's ray and colour, and the indices `[C]` of the rays in the central `crop_fraction` of
    each image's width and height (empty when 0)."""
    parts: dict[str, list[torch.Tensor]] = {"origins": [], "directions": [], "near": [], "far": [], "rgb": []}
    central: list[torch.Tensor] = []
    offset = 0
    for i in tqdm(dataset.split["train"], desc="preparing rays", unit="image", leave=False, disable=None):
        image, camera = _resized(dataset, i, scale)
        o, d, near, far = model_rays(setup, camera, dataset.cam_from_world[i])
        for key, value in zip(parts, (o, d, near, far, torch.from_numpy(image.reshape(-1, 3)))):
            parts[key].append(value)
        if crop_fraction > 0:
            h, w = camera.height, camera.width
            rows = torch.arange(h)[(torch.arange(h) + 0.5 - h / 2).abs() < crop_fraction * h / 2]
            cols = torch.arange(w)[(torch.arange(w) + 0.5 - w / 2).abs() < crop_fraction * w / 2]
            central.append(offset + (rows[:, None] * w + cols[None, :]).reshape(-1))
        offset += o.shape[0]
    crop = torch.cat(central) if central else torch.zeros(0, dtype=torch.long)
    return {key: torch.cat(values) for key, values in parts.items()}, crop


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


def render_names(image_names: list[str]) -> list[str]:
    """PNG file names for renders of `image_names`: the image's file name with a `.png` suffix, or, when two
    views share a file name (e.g. `train/r_0` and `test/r_0`), its relative path with `/` replaced by `_`
    (the same naming as the splatting stage, so both stages' renders line up with the photos)."""
    names = [Path(name).with_suffix(".png").name for name in image_names]
    if len(set(names)) == len(names):
        return names
    return [Path(name).with_suffix(".png").as_posix().replace("/", "_") for name in image_names]


def evaluate(
    model: torch.nn.Module,
    setup: SceneSetup,
    dataset: Dataset,
    indices: list[int],
    image_scale: float = 1.0,
    render_dir: Path | None = None,
    progress: bool = True,
    lpips: LPIPS | None = None,
) -> dict:
    """Render views `indices` of `dataset` and compare them with the images.

    Returns {"psnr": mean, "ssim": mean, "count", "views": [{"name", "file", "psnr", "ssim"}]}, plus "lpips" (mean,
    and per view) when an `LPIPS` network with weights is given; the renders are written to `render_dir` as PNGs
    named by `render_names` when given. The mean PSNR leaves out infinite values (pixel-perfect views).
    """
    from mapforge.io.images import write_image
    from mapforge.metrics.image import psnr, ssim

    files = render_names([dataset.image_names[i] for i in indices])
    views = []
    for i, file in tqdm(list(zip(indices, files)), desc="evaluating", unit="view", leave=False,
                        disable=(not progress) or None):
        target, camera = _resized(dataset, i, image_scale)
        out = render_image(model, setup, camera, dataset.cam_from_world[i])
        view = {"name": dataset.image_names[i], "file": file, "psnr": float(psnr(out["rgb"], target)),
                "ssim": float(ssim(out["rgb"], target))}
        if lpips is not None:
            with torch.no_grad():
                view["lpips"] = float(lpips(torch.from_numpy(out["rgb"]), torch.from_numpy(target[..., :3]))[0])
        views.append(view)
        if render_dir is not None:
            write_image(Path(render_dir) / file, out["rgb"])
    finite = [v["psnr"] for v in views if math.isfinite(v["psnr"])]
    metrics = {
        "psnr": float(np.mean(finite)) if finite else float("nan"),
        "ssim": float(np.mean([v["ssim"] for v in views])) if views else float("nan"),
        "count": len(views),
        "views": views,
    }
    if lpips is not None:
        metrics["lpips"] = float(np.mean([v["lpips"] for v in views])) if views else float("nan")
    return metrics


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
                    setup: SceneSetup, step: int, extra: dict | None = None) -> None:
    state = {
        "version": CHECKPOINT_VERSION,
        "model_type": config.model,
        "config": json.dumps(asdict(config)),
        "setup": json.dumps(setup.to_dict()),
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "extra": extra or {},
    }
    if isinstance(model, FastNeRFModel):
        state["grid"] = model.grid.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, device: str = "auto") -> tuple[torch.nn.Module, TrainConfig, SceneSetup, dict]:
    """Rebuild a trained model from a checkpoint -> (model, config, setup, raw state)."""
    path = Path(path)
    state = load_torch_file(path, "NeRF checkpoint")
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        found = state.get("version") if isinstance(state, dict) else None
        raise InputError(f"{path} is not a mapforge NeRF checkpoint of format version {CHECKPOINT_VERSION} "
                         f"(found {found})")
    try:
        config_cls = CONFIGS[state["model_type"]]
        names = {f.name for f in fields(config_cls)}
        saved = json.loads(state["config"])
        config = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names})
        setup = SceneSetup.from_dict(json.loads(state["setup"]))
        model = build_model(config, setup)
        model.load_state_dict(state["model"])
        if isinstance(model, FastNeRFModel):
            model.grid.load_state_dict(state["grid"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise InputError(f"{path} is not a mapforge NeRF checkpoint ({first_line(exc)})") from None
    model.to(select_device(device))
    return model, config, setup, state


def _write_training_curve(path: Path, history: list[dict], model: str) -> None:
    """An SVG chart of the training PSNR in `history` against iterations (opens in any browser)."""
    from mapforge.report.svg import Series, line_chart

    x = np.array([entry["iteration"] for entry in history], dtype=np.float64)
    y = np.array([entry["psnr"] for entry in history], dtype=np.float64)
    chart = line_chart([Series("training PSNR", x, y)], f"{model} NeRF training", "iteration", "PSNR (dB)",
                       width=720, height=300)
    with atomic_path(path) as tmp:
        tmp.write_text(chart + "\n")


def _read_history(path: Path, up_to: int) -> list[dict]:
    """The history entries of an earlier run up to iteration `up_to` (for resume); empty when unreadable."""
    try:
        history = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [e for e in history if isinstance(e, dict) and e.get("iteration", up_to + 1) <= up_to] if isinstance(history, list) else []


def train(
    dataset: Dataset,
    config: TrainConfig,
    output_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, float, torch.nn.Module, SceneSetup], None] | None = None,
    extra: dict | None = None,
) -> TrainResult:
    """Train `config.model` on the train split of `dataset`, evaluate on its test split.

    With `output_dir`, writes there (the same layout as the splatting stage): `checkpoint.pt` every
    `config.checkpoint_every` steps and at the end, `config.json` (config, scene set-up and `extra`, e.g. the data
    path and downscale), `history.json` (`[{iteration, loss, psnr, seconds}]` every `config.log_every` steps: mean
    training loss and the PSNR of the mean squared error over those steps, training seconds) and its chart
    `training_curve.svg` at the end, the test renders
    under `renders/test/` and `metrics.json` (test PSNR/SSIM overall and per view, iterations, training, data
    set-up and evaluation seconds, density samples per second of training; LPIPS with `config.lpips_weights`).
    `resume` continues from the checkpoint there (steps, optimiser, training clock and history;
    `config.time_budget` counts the total).

    `callback(step, train_seconds, model, setup)` runs after every step (e.g. a benchmark's periodic evaluation);
    the time it takes is not counted as training time, neither for `config.time_budget` nor the learning-rate
    schedule.
    """
    torch.manual_seed(config.seed)
    device = select_device(config.device)
    if not dataset.split.get("train"):
        raise InputError(f"data set {dataset.name} has no training images")
    output_dir = Path(output_dir) if output_dir is not None else None
    checkpoint = output_dir / "checkpoint.pt" if output_dir is not None else None
    # Loaded before training so that a bad weights file fails at once, not after the training budget.
    lpips = load_lpips(config.lpips_weights) if config.lpips_weights else None

    step = 0
    elapsed = 0.0  # training seconds before this call (resume)
    history: list[dict] = []
    if resume and checkpoint is not None and checkpoint.is_file():
        model, loaded_config, setup, state = load_checkpoint(checkpoint, config.device)
        if type(loaded_config) is not type(config):
            raise InputError(f"{checkpoint} holds a {loaded_config.model!r} model, not {config.model!r}")
        step = int(state["step"])
        optimizer = _optimizer(model, config)
        optimizer.load_state_dict(state["optimizer"])
        batch_rays = int(state["extra"].get("batch_rays", config.batch_rays))
        elapsed = float(state["extra"].get("seconds", 0.0))
        history = _read_history(output_dir / "history.json", step)
    else:
        setup = make_setup(dataset, config)
        model = build_model(config, setup).to(device)
        optimizer = _optimizer(model, config)
        batch_rays = config.batch_rays
        if isinstance(config, FastNeRFConfig):
            # The grid starts all occupied, so a ray first costs up to `render_steps` samples: start small and
            # let the batch grow as the grid empties.
            batch_rays = min(batch_rays, max(256, 2 * config.target_samples // config.render_steps))
    if output_dir is not None:
        write_json(output_dir / "config.json", {"model": config.model, "config": asdict(config),
                                                  "setup": setup.to_dict(), **(extra or {})})

    setup_start = time.time()
    precrop_steps = config.precrop_steps if isinstance(config, NeRFConfig) else 0
    rays, crop = _training_rays(dataset, setup, config.image_scale, config.precrop_fraction if precrop_steps else 0.0)
    setup_seconds = time.time() - setup_start
    num_rays_total = rays["rgb"].shape[0]
    background = None if setup.background is None else torch.tensor(setup.background, dtype=torch.float32, device=device)
    generator = torch.Generator().manual_seed(config.seed + step)
    fast = isinstance(model, FastNeRFModel)

    timed = config.time_budget is not None
    bar = tqdm(range(step, config.steps), desc=f"training {config.model} NeRF", unit="step",
               disable=(not progress) or None, initial=step, total=None if timed else config.steps)
    done = step
    clock = time.time() - elapsed  # training seconds = time.time() - clock; callbacks move the clock forward
    window_loss, window_mse, window_steps = 0.0, 0.0, 0
    samples = 0
    for step in bar:
        seconds = time.time() - clock
        if timed and seconds >= config.time_budget:
            break
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, seconds, config)
        # No update at step 0: the untrained field is dense everywhere, and the grid starts all occupied anyway.
        if fast and step > 0 and step % config.grid_update_every == 0:
            fraction = 1.0 if step < config.grid_warmup_steps else config.grid_update_fraction
            model.update_grid(fraction, config.grid_threshold)
        if step < precrop_steps and len(crop):
            index = crop[torch.randint(len(crop), (batch_rays,), generator=generator)]
        else:
            index = torch.randint(num_rays_total, (batch_rays,), generator=generator)
        batch = {key: value[index].to(device) for key, value in rays.items()}
        outputs = model.render_rays(batch["origins"], batch["directions"], batch["near"], batch["far"], background, perturb=True)
        loss = model.loss(outputs, batch["rgb"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if fast:
            samples += model.last_num_samples
            batch_rays = int(min(max(batch_rays * config.target_samples / max(model.last_num_samples, 1), 256), 1 << 16))
        else:
            samples += batch_rays * (2 * model.num_coarse + model.num_fine if model.fine is not None else model.num_coarse)
        mse = float(torch.mean((model.final(outputs).rgb.detach() - batch["rgb"]) ** 2))
        window_loss, window_mse, window_steps = window_loss + loss.item(), window_mse + mse, window_steps + 1
        bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{-10 * math.log10(max(mse, 1e-10)):.2f}", rays=batch_rays)
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            history.append({"iteration": done, "loss": window_loss / window_steps,
                            "psnr": -10 * math.log10(max(window_mse / window_steps, 1e-10)),
                            "seconds": round(time.time() - clock, 2)})
            window_loss, window_mse, window_steps = 0.0, 0.0, 0
        if checkpoint is not None and config.checkpoint_every and done % config.checkpoint_every == 0:
            save_checkpoint(checkpoint, model, optimizer, config, setup, done,
                            {"batch_rays": batch_rays, "seconds": time.time() - clock})
            write_json(output_dir / "history.json", history)
        if callback is not None:
            paused = time.time()
            callback(done, paused - clock, model, setup)
            clock += time.time() - paused
    bar.close()
    step = done
    train_seconds = time.time() - clock
    if window_steps:
        history.append({"iteration": done, "loss": window_loss / window_steps,
                        "psnr": -10 * math.log10(max(window_mse / window_steps, 1e-10)), "seconds": round(train_seconds, 2)})
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, optimizer, config, setup, step, {"batch_rays": batch_rays, "seconds": train_seconds})
        write_json(output_dir / "history.json", history)
        _write_training_curve(output_dir / "training_curve.svg", history, config.model)

    test = dataset.split.get("test") or []
    if config.eval_views is not None and len(test) > config.eval_views:
        test = [test[int(k)] for k in np.linspace(0, len(test) - 1, config.eval_views).round()]
    render_dir = output_dir / "renders" / "test" if output_dir is not None else None
    eval_start = time.time()
    if lpips is not None:
        lpips = lpips.to(device)
    metrics = evaluate(model, setup, dataset, test, config.image_scale, render_dir, progress, lpips) if test else {}
    run_seconds = train_seconds - elapsed
    metrics.update({
        "eval_seconds": time.time() - eval_start,
        "split": "test",
        "model": config.model,
        "iterations": step,
        "train_seconds": train_seconds,
        "setup_seconds": setup_seconds,
        "samples_per_second": samples / run_seconds if run_seconds > 0 else None,
    })
    if output_dir is not None:
        write_json(output_dir / "metrics.json", metrics)
    if progress:
        tqdm.write(
            f"{config.model} NeRF: {step} steps in {train_seconds:.0f} s, test PSNR {metrics.get('psnr', float('nan')):.2f} dB, "
            f"SSIM {metrics.get('ssim', float('nan')):.3f} on {len(test)} views"
        )
    return TrainResult(model, setup, step, metrics, train_seconds, history)


def train_path(
    data: str | Path,
    output_dir: str | Path,
    config: TrainConfig,
    downscale: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """`train` on the data set at `data` (any layout `mapforge.datasets.load_dataset` reads), images shrunk by
    `downscale`; the data path and downscale go into `config.json` for `mapforge nerf render` / `export`."""
    from mapforge.datasets import load_dataset

    dataset = load_dataset(data, downscale=downscale)
    extra = {"data": str(Path(data).resolve()), "downscale": downscale}
    return train(dataset, config, output_dir, resume=resume, progress=progress, extra=extra)
