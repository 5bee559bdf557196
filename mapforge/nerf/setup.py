"""The NeRF's view of a data set: the scene set-up (box, NDC mapping, depth bounds), the rays of its pixels in
the model's space, its training rays and colours, and the model a config describes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mapforge.datasets.base import Dataset
from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.nerf.config import FastNeRFConfig, NeRFConfig, OriginalNeRFConfig
from mapforge.nerf.models import FastNeRFModel, NeRFModel
from mapforge.nerf.rays import camera_rays, forward_facing_frame, ndc_rays, ray_aabb_intersect
from mapforge.scene import Camera
from mapforge.training.bounds import focus_box

# Without a box from the data, the cube around where the cameras look has half the median camera distance as its
# half side (ours: the object the cameras circle fills about half of their distance to it).
FOCUS_HALF_SCALE = 0.5


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
        """Plain lists and numbers (for JSON)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> SceneSetup:
        data = dict(data)
        for key in ("aabb", "ndc_from_world", "background"):
            if data.get(key) is not None:
                data[key] = np.asarray(data[key], dtype=np.float64)
        return cls(**data)


def scene_aabb(dataset: Dataset) -> np.ndarray:
    """A box `[2, 3]` around the scene: metadata "aabb"/"bounding_box", else the 1-99 % range of the sparse
    points grown by 10 %, else `focus_box` (a cube around the point the cameras look at)."""
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
    return np.stack(focus_box(dataset.cam_from_world, FOCUS_HALF_SCALE))


def make_setup(dataset: Dataset, config: NeRFConfig) -> SceneSetup:
    """The set-up of a new model: NDC for forward-facing data (or when `config.ndc` says), else the scene box
    (`config.aabb`, else `scene_aabb`); the data's depth bounds and background."""
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


def build_model(config: NeRFConfig, setup: SceneSetup) -> torch.nn.Module:
    """The untrained model `config` describes, over the box of `setup` (CPU)."""
    if isinstance(config, OriginalNeRFConfig):
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


def resized_view(dataset: Dataset, index: int, scale: float) -> tuple[np.ndarray, Camera]:
    """Image `index` `[H, W, 3]` float32 and its camera, both resized by `scale`."""
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


def training_rays(
    dataset: Dataset, setup: SceneSetup, scale: float, crop_fraction: float = 0.0
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every training pixel's ray and colour, and the indices `[C]` of the rays in the central `crop_fraction` of
    each image's width and height (empty when 0)."""
    parts: dict[str, list[torch.Tensor]] = {"origins": [], "directions": [], "near": [], "far": [], "rgb": []}
    central: list[torch.Tensor] = []
    offset = 0
    for i in tqdm(dataset.split["train"], desc="preparing rays", unit="image", leave=False, disable=None):
        image, camera = resized_view(dataset, i, scale)
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


