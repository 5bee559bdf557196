"""`run_pointmap`: photographs to cameras and dense points with a DUSt3R / MASt3R network, without SfM.

load the checkpoint -> prepare the images -> scene graph -> pairwise inference (streamed batch by batch) -> global
alignment -> write. MASt3R checkpoints run through the same path (their pointmaps and confidences; the descriptors
are not needed for global alignment).

Outputs in `out_dir`:
- `sparse/0`: COLMAP binary model. Cameras (PINHOLE, one per image) are expressed for the ORIGINAL photographs:
  the network's resize and centre crop are undone on focal length and principal point, so the model can be used
  with the input files directly. Every input image is registered, under its file name. 3D points are the confident
  pixels of every `point_stride`-th row and column, each observed once, by the image whose depth map it comes from.
- `points.ply`: the dense coloured point cloud (every pixel above `min_conf`, randomly thinned to `max_points`).
- `depth/<image stem>.npy`: per-image depth maps `[H, W]` float32 at the network's resolution (z along the
  optical axis, in the scene's arbitrary scale); `report.json` gives each image's network size and the
  network-to-photo pixel mapping (`photo = network * scale + offset`, COLMAP pixel convention).
- `report.json`: settings, per-image cameras, losses and time per stage; a short summary is also printed.

Peak memory is the model plus the pairwise pointmaps and confidences (about 6 MB per pair at 512x384, times
two inside the alignment): a complete graph grows with the square of the image count, so for more than ~20 images
use `swin-k` or `logwin-k`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mapforge import __version__
from mapforge.datasets.folder import cameras_from_file
from mapforge.devices import select_device
from mapforge.errors import InputError, ReconstructionError
from mapforge.io.atomic import atomic_path, check_output_folder, start_outputs, write_json
from mapforge.io.colmap import write_model
from mapforge.io.images import image_size
from mapforge.io.ply import write_point_cloud
from mapforge.pointmap.alignment import AlignmentConfig, AlignmentResult, PairPredictions, global_alignment
from mapforge.pointmap.checkpoint import load_checkpoint
from mapforge.pointmap.graph import make_pairs, parse_scene_graph
from mapforge.pointmap.inference import iter_pair_predictions
from mapforge.pointmap.matching import PixelMapping
from mapforge.pointmap.models import PointmapNet
from mapforge.pointmap.preprocess import image_paths, load_images
from mapforge.scene import Camera, Reconstruction

# Models whose distortion-free case is a pinhole camera: such a file camera is accepted when its distortion is 0.
_ZERO_DISTORTION_OK = ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")


@dataclass
class PointmapRunConfig:
    """Settings of `run_pointmap`; defaults follow upstream DUSt3R's demo unless said otherwise.

    Attributes:
        image_size: network input size, None = the checkpoint's training size (512 or 224). Any other value uses
            the 512 preprocessing (long side resized to it, centre crop to the patch grid).
        scene_graph: which pairs are run: "complete" (every pair, the default), "swin-k" (sliding window of k),
            "logwin-k" (offsets 1, 2, 4, ..., 2^(k-1)) or "oneref-k" (every image with image k); see
            `mapforge.pointmap.graph`. Pairs are always run in both directions.
        batch_size: pairs per network call (upstream's demo uses 1; on a CPU larger batches barely help and
            multiply the activation memory).
        iterations, lr, schedule: global alignment's Adam loop (upstream: 300, 0.01, "cosine").
        min_conf: network confidence above which a pixel is kept in the point cloud and trusted for the alignment's
            initial poses (upstream's demo default 3).
        intrinsics: optional K.txt (a 3x3 matrix for every image, which must then share one size) or COLMAP
            cameras.txt/.bin (matched to images by size; a single camera is rescaled to every image of the same
            aspect ratio), for the ORIGINAL photographs. They are converted into the network's resolution and held
            fixed. Cameras must be distortion-free.
        max_points: the dense point cloud is randomly thinned to at most this many points (own choice: ~30 MB PLY).
        point_stride: pixel step of the 3D points in the COLMAP model (every 4th row and column: ~12k per image).
        device: "cpu", "cuda", ...; None picks CUDA when available.
        progress: show progress bars.
        seed: seed of the point cloud thinning.
    """

    image_size: int | None = None
    scene_graph: str = "complete"
    batch_size: int = 1
    iterations: int = 300
    lr: float = 0.01
    schedule: str = "cosine"
    min_conf: float = 3.0
    intrinsics: str | Path | None = None
    max_points: int = 1_000_000
    point_stride: int = 4
    device: str | None = None
    progress: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 16:
            raise InputError(f"image size must be at least 16 pixels, got {self.image_size}")
        parse_scene_graph(self.scene_graph)
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}")
        if self.iterations < 0 or self.lr <= 0:
            raise InputError("global alignment needs iterations >= 0 and a positive learning rate")
        if self.schedule not in ("cosine", "linear"):
            raise InputError(f"unknown learning-rate schedule {self.schedule!r} (cosine or linear)")
        if self.max_points < 1 or self.point_stride < 1:
            raise InputError("max_points and point_stride must be at least 1")


@dataclass
class PointmapResult:
    """What `run_pointmap` produced: the model at the photographs' resolution, the raw alignment (network
    resolution), the pixel mapping of every image, the output paths and the report dictionary."""

    reconstruction: Reconstruction
    alignment: AlignmentResult
    mappings: list[PixelMapping]
    names: list[str]
    model_dir: Path
    points_path: Path
    depth_dir: Path
    report: dict = field(default_factory=dict)


def image_names(paths: Sequence[Path]) -> list[str]:
    """Names of the images in the model: paths relative to their common folder (the file names for one folder)."""
    absolute = [Path(os.path.abspath(p)) for p in paths]  # not resolved: a symlink keeps its own name
    root = os.path.commonpath([str(p.parent) for p in absolute])
    names = [Path(os.path.relpath(p, root)).as_posix() for p in absolute]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"image {name} is given twice")
        seen.add(name)
    return names


def _network_intrinsics(camera: Camera, mapping: PixelMapping, name: str) -> tuple[float, np.ndarray]:
    """Focal and principal point `[2]` in the network image of a photograph's distortion-free `camera`."""
    from mapforge.geometry.cameras import CAMERA_MODELS

    model = CAMERA_MODELS[camera.model]
    extra = [p for k, p in enumerate(camera.params) if k not in (*model.focal_idxs, *model.principal_point_idxs)]
    if not model.pinhole and not (camera.model in _ZERO_DISTORTION_OK and not any(extra)):
        raise InputError(f"the camera of {name} is {camera.model} with lens distortion; pointmap alignment assumes "
                         "pinhole cameras: undistort the photographs first or give a pinhole camera")
    K = camera.K
    fx, fy = K[0, 0] / mapping.scale[0], K[1, 1] / mapping.scale[1]
    if abs(fx - fy) > 0.01 * max(fx, fy):
        raise InputError(f"the camera of {name} has fx = {K[0, 0]:g} and fy = {K[1, 1]:g}; global alignment uses "
                         "one focal length per image (square pixels)")
    principal_point = mapping.to_network(np.array([[K[0, 2], K[1, 2]]]))[0]
    return float(np.sqrt(fx * fy)), principal_point


def photo_camera(focal: float, principal_point: np.ndarray, mapping: PixelMapping, width: int, height: int) -> Camera:
    """The PINHOLE camera of a `width` x `height` photograph from the network image's focal and principal point."""
    cx, cy = mapping.to_original(np.asarray(principal_point, dtype=np.float64).reshape(1, 2))[0]
    return Camera("PINHOLE", width, height, [focal * mapping.scale[0], focal * mapping.scale[1], cx, cy])


def _predict_pairs(model: PointmapNet, views: list[dict], pairs: list[tuple[int, int]], config: PointmapRunConfig,
                   device: torch.device) -> PairPredictions:
    """Run every pair, keeping only each pair's two pointmaps and confidences (float32, CPU).

    Pairs are run grouped by their two image sizes (so portrait and landscape photographs still batch), then put
    back in scene-graph order for the alignment."""
    def shapes(pair: tuple[int, int]) -> tuple:
        return tuple(views[pair[0]]["img"].shape[-2:]) + tuple(views[pair[1]]["img"].shape[-2:])

    order = sorted(range(len(pairs)), key=lambda k: shapes(pairs[k]))
    slots: list[tuple | None] = [None] * len(pairs)
    position = 0
    for batch in iter_pair_predictions(model, views, [pairs[k] for k in order], config.batch_size, device,
                                       config.progress):
        pts1, pts2 = batch["pred1"]["pts3d"], batch["pred2"]["pts3d_in_other_view"]
        conf1, conf2 = batch["pred1"]["conf"], batch["pred2"]["conf"]
        for b in range(len(pts1)):
            slots[order[position]] = tuple(t[b].float().clone() for t in (pts1, pts2, conf1, conf2))
            position += 1
    pts_i, pts_j, conf_i, conf_j = (list(column) for column in zip(*slots))
    return PairPredictions(list(pairs), pts_i, pts_j, conf_i, conf_j)


def _photo_reconstruction(result: AlignmentResult, views: list[dict], names: list[str], cameras: list[Camera],
                          mappings: list[PixelMapping], config: PointmapRunConfig) -> Reconstruction:
    """The aligned scene as a COLMAP model for the photographs: keypoints moved to photo pixels, cameras replaced."""
    rec = result.to_reconstruction(images=views, min_conf=config.min_conf, stride=config.point_stride, names=names)
    for image_id, image in rec.images.items():
        camera, mapping = cameras[image_id - 1], mappings[image_id - 1]
        rec.cameras[image.camera_id] = camera
        image.keypoints = mapping.to_original(image.keypoints)
        valid = image.point3D_ids >= 0
        if not valid.any():
            continue
        ids = image.point3D_ids[valid]
        xyz = np.stack([rec.points3D[int(i)].xyz for i in ids])
        errors = np.linalg.norm(camera.project(image.cam_from_world.apply(xyz)) - image.keypoints[valid], axis=1)
        for point_id, error in zip(ids, errors):
            rec.points3D[int(point_id)].error = float(error)
    return rec


def dense_points(result: AlignmentResult, views: list[dict], min_conf: float, max_points: int, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """World points `[N, 3]` float32 and colours `[N, 3]` uint8 of every pixel with confidence > `min_conf`,
    thinned uniformly at random (seeded) to at most `max_points`."""
    masks = [c > min_conf for c in result.confidence]
    total = int(sum(m.sum() for m in masks))
    keep = min(1.0, max_points / total) if total else 1.0
    rng = np.random.default_rng(seed)
    xyz, rgb = [], []
    for points, mask, view in zip(result.points, masks, views):
        index = np.flatnonzero(mask)
        if keep < 1.0:
            index = np.sort(rng.choice(index, size=int(round(len(index) * keep)), replace=False))
        colours = ((view["img"][0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        xyz.append(points.reshape(-1, 3)[index])
        rgb.append(colours.reshape(-1, 3)[index])
    xyz_all, rgb_all = np.concatenate(xyz), np.concatenate(rgb)
    return xyz_all[:max_points], rgb_all[:max_points]


def _depth_file_names(names: list[str]) -> list[str]:
    stems = [Path(name).with_suffix("").as_posix().replace("/", "_") for name in names]
    if len(set(stems)) != len(stems):
        stems = [name.replace("/", "_") for name in names]
    return [f"{stem}.npy" for stem in stems]


@dataclass
class PhotoSet:
    """The photographs to reconstruct: files `[N]`, names in the model `[N]`, `(width, height)` `[N]`, and their
    cameras when an intrinsics file gives them (else None)."""

    paths: list[Path]
    names: list[str]
    sizes: list[tuple[int, int]]
    file_cameras: list[Camera] | None


def read_photos(images: str | Path | Sequence[str | Path], intrinsics: str | Path | None) -> PhotoSet:
    """List the photographs (at least 2) and read their sizes and, with `intrinsics`, their cameras."""
    paths = image_paths(images)
    if len(paths) < 2:
        raise InputError(f"pointmap reconstruction needs at least 2 images, got {len(paths)}")
    names = image_names(paths)
    sizes = [image_size(p) for p in paths]
    file_cameras = cameras_from_file(Path(intrinsics), sizes, names) if intrinsics is not None else None
    return PhotoSet(paths, names, sizes, file_cameras)


def prepare_views(photos: PhotoSet, size: int, patch_size: int) -> tuple[list[dict], list[PixelMapping]]:
    """The network's input views (see `load_images`) and each photograph's pixel mapping to its view."""
    views = load_images(photos.paths, size, patch_size=patch_size)
    mappings = [PixelMapping.from_preprocessing(w, h, size, patch_size=patch_size) for w, h in photos.sizes]
    return views, mappings


def align(predictions: PairPredictions, photos: PhotoSet, mappings: list[PixelMapping], config: PointmapRunConfig,
          device: torch.device) -> AlignmentResult:
    """Global alignment of the pairwise pointmaps, with the file cameras' intrinsics held fixed.

    Raises `ReconstructionError` when it diverges."""
    known_focals: list[float | None] = [None] * len(photos.paths)
    known_pp: list[np.ndarray | None] = [None] * len(photos.paths)
    for k, (camera, mapping) in enumerate(zip(photos.file_cameras or [], mappings)):
        known_focals[k], known_pp[k] = _network_intrinsics(camera, mapping, photos.names[k])
    alignment = AlignmentConfig(iterations=config.iterations, lr=config.lr, schedule=config.schedule,
                                min_conf_thr=config.min_conf, device=str(device), progress=config.progress)
    result = global_alignment(predictions, alignment, known_focals=known_focals, known_principal_points=known_pp)
    if not (np.isfinite(result.loss_history[-1]) and np.isfinite(result.focals).all()):
        raise ReconstructionError("global alignment diverged (non-finite loss or focal lengths): the network's "
                                  "pointmaps are unusable for these images (wrong or untrained weights?)")
    return result


def photo_cameras(result: AlignmentResult, photos: PhotoSet, mappings: list[PixelMapping]) -> list[Camera]:
    """The camera of every photograph: the file's when given, else the alignment's moved to photo pixels."""
    if photos.file_cameras is not None:
        return list(photos.file_cameras)
    return [photo_camera(result.focals[k], result.principal_points[k], mapping, width, height)
            for k, ((width, height), mapping) in enumerate(zip(photos.sizes, mappings))]


@dataclass
class OutputFiles:
    """What `write_outputs` wrote: the model folder, the point cloud, the depth folder and its file names."""

    model_dir: Path
    points_path: Path
    depth_dir: Path
    depth_files: list[str]
    num_dense_points: int


def write_outputs(rec: Reconstruction, result: AlignmentResult, views: list[dict], names: list[str],
                  config: PointmapRunConfig, out_dir: Path) -> OutputFiles:
    """Write `sparse/0`, `points.ply` and `depth/` (see the module doc)."""
    model_dir = write_model(rec, out_dir / "sparse" / "0", "bin")
    xyz, rgb = dense_points(result, views, config.min_conf, config.max_points, config.seed)
    points_path = write_point_cloud(out_dir / "points.ply", xyz, rgb)
    depth_files = _depth_file_names(names)
    depth_dir = out_dir / "depth"
    with atomic_path(depth_dir) as tmp:
        tmp.mkdir()
        for depth, file in zip(result.depths, depth_files):
            np.save(tmp / file, depth.astype(np.float32))
    return OutputFiles(model_dir, points_path, depth_dir, depth_files, len(xyz))


def per_image_report(photos: PhotoSet, views: list[dict], mappings: list[PixelMapping], rec: Reconstruction,
                     result: AlignmentResult, written: OutputFiles, min_conf: float) -> list[dict]:
    """The `per_image` entries of `report.json`: sizes, pixel mapping, camera, centre, confidence, depth file."""
    entries = []
    for k, (name, (w, h), view, mapping) in enumerate(zip(photos.names, photos.sizes, views, mappings)):
        image = rec.images[k + 1]
        camera = rec.cameras[image.camera_id]
        entries.append({
            "name": name,
            "size": [w, h],
            "network_size": [int(view["img"].shape[-1]), int(view["img"].shape[-2])],
            "pixel_mapping": {"scale": list(mapping.scale), "offset": list(mapping.offset)},
            "camera": {"model": camera.model, "params": [float(p) for p in camera.params]},
            "center": [float(c) for c in image.center],
            "confident_pixels": float((result.confidence[k] > min_conf).mean()),
            "depth": f"depth/{written.depth_files[k]}",
        })
    return entries


def run_pointmap(
    images: str | Path | Sequence[str | Path],
    weights: str | Path,
    out_dir: str | Path,
    config: PointmapRunConfig | None = None,
) -> PointmapResult:
    """Reconstruct cameras and dense points from photographs with a pointmap network (see the module doc).

    Args:
        images: a folder of images (sorted by name) or a list of image files; at least 2.
        weights: a DUSt3R / MASt3R checkpoint (`.pth` as released, a state dict, or `.safetensors`).
        out_dir: output folder (created; existing outputs are replaced).
        config: settings (defaults: upstream's demo).

    Raises:
        InputError: missing or unreadable images / weights / intrinsics, a checkpoint that does not match the
            architecture it declares, fewer than 2 images, a scene graph that does not connect the images.
        ReconstructionError: the alignment diverged (non-finite results), e.g. with untrained weights.
    """
    config = config or PointmapRunConfig()
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def timed(name: str, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        timings[name] = time.perf_counter() - t0
        return result

    check_output_folder(out_dir)
    photos = read_photos(images, config.intrinsics)
    pairs = make_pairs(len(photos.paths), config.scene_graph, symmetrize=True)
    device = select_device(config.device)
    model = timed("load_model", load_checkpoint, weights, device)
    net = model.config
    size = config.image_size or net.img_size
    views, mappings = timed("load_images", prepare_views, photos, size, net.patch_size)
    predictions = timed("inference", _predict_pairs, model, views, pairs, config, device)
    del model  # the alignment does not need the network: free its memory first
    result = timed("alignment", align, predictions, photos, mappings, config, device)
    del predictions
    t0 = time.perf_counter()
    cameras = photo_cameras(result, photos, mappings)
    rec = _photo_reconstruction(result, views, photos.names, cameras, mappings, config)
    start_outputs(out_dir, "report.json")
    written = write_outputs(rec, result, views, photos.names, config, out_dir)
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    report = {
        "mapforge_version": __version__,
        "images": str(images) if isinstance(images, (str, Path)) else [str(p) for p in photos.paths],
        "weights": str(weights),
        "model": {"head_type": net.head_type, "img_size": net.img_size, "patch_size": net.patch_size,
                  "mast3r": net.is_mast3r},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "image_size": size,
        "device": str(device),
        "num_images": len(photos.paths),
        "num_pairs": len(pairs),
        "known_intrinsics": photos.file_cameras is not None,
        "registered_images": len(rec.images),
        "sparse_points": len(rec.points3D),
        "dense_points": written.num_dense_points,
        "alignment_loss": {"initial": result.loss_history[0], "final": result.loss_history[-1]},
        "per_image": per_image_report(photos, views, mappings, rec, result, written, config.min_conf),
        "seconds": timings,
    }
    write_json(out_dir / "report.json", report)
    print(summary_text(report))
    return PointmapResult(rec, result, mappings, photos.names, written.model_dir, written.points_path,
                          written.depth_dir, report)


def summary_text(report: dict) -> str:
    """The short summary printed at the end of `run_pointmap`."""
    loss = report["alignment_loss"]
    return "\n".join([
        f"registered {report['registered_images']}/{report['num_images']} images from {report['num_pairs']} pairs "
        f"at {report['image_size']} px ({report['model']['head_type']} head, {report['device']})",
        f"{report['sparse_points']} model points, {report['dense_points']} dense points; "
        f"alignment loss {loss['initial']:.4g} -> {loss['final']:.4g}",
        "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in report["seconds"].items()),
    ])
