"""How to train the NeRF models: `NeRFConfig` (what both share), `FastNeRFConfig` (the hash-grid model) and
`OriginalNeRFConfig` (Mildenhall et al. 2020), and `make_config` for settings given by name on the command line."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

import numpy as np

from mapforge.errors import InputError
from mapforge.training.config import TrainingConfig, check_fraction, check_non_negative, check_positive

# The largest hash table accepted: 2^24 entries (instant-ngp's own upper setting) of 16 levels is already
# gigabytes of parameters and Adam state.
MAX_LOG2_HASHMAP_SIZE = 24


@dataclass
class NeRFConfig(TrainingConfig):
    """Settings both NeRF models share, beyond those of every trainer (`TrainingConfig`: `iterations`, `minutes`,
    `log_interval` (here 25: ours, an entry per ~second of fast training), `checkpoint_minutes`, `device`, `seed`,
    `lpips_weights`).

    Attributes:
        lr, lr_final: Adam learning rate, decayed exponentially from `lr` to `lr_final` over the run (its
            iterations, or its minutes when timed).
        batch_rays: rays per step (for the fast model, the largest starting value of the adaptive batch).
        image_scale: images (and cameras) are resized by this factor before training and evaluation.
        eval_views: how many test views to evaluate at the end, evenly spread over the test split (None: all,
            0: none).
        aabb: scene box `((xmin, ymin, zmin), (xmax, ymax, zmax))` in world units; None: from the data set
            (metadata "aabb" or "bounding_box", else its sparse points, else where the cameras look).
        ndc: render in LLFF's normalised device coordinates; None: when the data set says it is forward facing
            (metadata "forward_facing").
    """

    log_interval: int = 25
    lr: float = 5e-4
    lr_final: float = 5e-5
    batch_rays: int = 1024
    image_scale: float = 1.0
    eval_views: int | None = None
    aabb: tuple | None = None
    ndc: bool | None = None

    model = "base"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "lr", "lr_final", "image_scale")
        check_positive(self, "batch_rays", integer=True)
        if self.eval_views is not None:
            check_non_negative(self, "eval_views", integer=True)
        if self.ndc is not None and not isinstance(self.ndc, bool):
            raise InputError(f"ndc must be true, false or null, got {self.ndc!r}")
        if self.aabb is not None:
            self.aabb = _box(self.aabb)


def _box(value: object) -> tuple:
    try:
        box = np.asarray(value, dtype=np.float64).reshape(2, 3)
    except (TypeError, ValueError):
        raise InputError(f"aabb must be [[xmin, ymin, zmin], [xmax, ymax, zmax]], got {value!r}") from None
    if not (np.isfinite(box).all() and (box[0] < box[1]).all()):
        raise InputError(f"aabb needs finite corners with min < max on every axis, got {box.tolist()}")
    return tuple(tuple(float(v) for v in corner) for corner in box)


@dataclass
class OriginalNeRFConfig(NeRFConfig):
    """The original NeRF. Defaults are the paper's (Adam 5e-4 decaying to 5e-5, 64 + 128 samples, perturbed
    sampling, 8 layers of 256) except `batch_rays` 1024 (paper 4096) and `iterations` 200k (paper 100k-300k) to
    suit a CPU batch.

    Attributes:
        num_coarse, num_fine: stratified samples per ray, and importance samples for the fine network (0: no
            fine network).
        depth, width: layers and units of the MLP trunk.
        precrop_steps, precrop_fraction: for the first `precrop_steps` steps, rays come only from the central
            `precrop_fraction` of each image's width and height (the reference code's lego setting: 500 and 0.5).
            Over a white background, rays that see only background can otherwise push the ReLU density below
            zero everywhere before the object is learnt, and a zero density gets no gradient back. 0: off.
    """

    iterations: int = 200_000
    num_coarse: int = 64
    num_fine: int = 128
    depth: int = 8
    width: int = 256
    precrop_steps: int = 500
    precrop_fraction: float = 0.5

    model = "nerf"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "num_coarse", "depth", "width", integer=True)
        check_non_negative(self, "num_fine", "precrop_steps", integer=True)
        check_positive(self, "precrop_fraction")
        check_fraction(self, "precrop_fraction")


@dataclass
class FastNeRFConfig(NeRFConfig):
    """The hash-grid model. Adam betas (0.9, 0.99), eps 1e-15 and lr 1e-2 are instant-ngp's; `iterations`, the
    decay to `lr_final` and the smaller batch, table and marching density suit a CPU budget of minutes (measured
    on lego-400 on 2 cores: more, smaller steps reach a given PSNR far sooner than instant-ngp's 2^18 samples a
    step).

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

    iterations: int = 3000
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

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "target_samples", "log2_hashmap_size", "finest_resolution", "num_levels",
                       "grid_resolution", "render_steps", "grid_update_every", integer=True)
        check_non_negative(self, "grid_warmup_steps", "warmup_steps", integer=True)
        check_non_negative(self, "grid_threshold", "weight_decay")
        check_fraction(self, "grid_update_fraction", "train_min_transmittance")
        if self.log2_hashmap_size > MAX_LOG2_HASHMAP_SIZE:
            raise InputError(f"log2_hashmap_size must be at most {MAX_LOG2_HASHMAP_SIZE}, got {self.log2_hashmap_size}")


CONFIGS: dict[str, type[NeRFConfig]] = {"nerf": OriginalNeRFConfig, "fast": FastNeRFConfig}


def make_config(model: str, settings: dict[str, object] | None = None) -> NeRFConfig:
    """The config of `model` ("fast" or "nerf") with `settings` overriding fields by name. String values (from
    the command line) are read as JSON where they parse (numbers, true/false, null, lists), else kept as text;
    the config then checks every value."""
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
