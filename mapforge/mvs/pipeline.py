"""`run_mvs`: a posed model and its photos to depth and normal maps, a fused cloud and a mesh.

Flat steps, each writing into the dense workspace (`workspace.py`): undistort, select views, photometric pass,
geometric pass, fuse, mesh, report. A re-run resumes: undistorted images and finished maps are kept, and the
stage is complete once `report.json` exists.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from mapforge.devices import select_device
from mapforge.errors import InputError
from mapforge.io.atomic import write_json
from mapforge.io.colmap import model_folder, read_model
from mapforge.io.colmap_dense import PatchMatchProblem, write_fusion_cfg, write_patch_match_cfg
from mapforge.io.ply import write_point_cloud
from mapforge.mvs import MESHERS, view_selection
from mapforge.mvs.cache import ArrayCache
from mapforge.mvs.fusion import FusedCloud, FusionConfig, fuse, load_input
from mapforge.mvs.meshing import PoissonConfig, require_mesher, write_poisson_mesh
from mapforge.mvs.patchmatch.api import PatchMatchConfig
from mapforge.mvs.stereo import StereoJob, pending, run_pass, sweeps_per_image
from mapforge.mvs.undistort import undistort
from mapforge.mvs.workspace import GEOMETRIC, PHOTOMETRIC, Workspace
from mapforge.scene import Reconstruction


@dataclass
class MVSConfig:
    """Options of `run_mvs`; COLMAP's dense pipeline is the reference.

    Attributes:
        max_image_size: undistorted images are shrunk so their longer side is at most this (COLMAP's
            `image_undistorter --max_image_size`; 1600 keeps a 12 MP photo set within minutes on a CPU; 0 = none).
        num_sources: source images per reference (COLMAP's `__auto__` selection; 10).
        min_triangulation_angle: degrees a source's points must reach, at their 75th percentile (COLMAP 1).
        depth_range: (min, max) used for every image instead of the ranges from the model's points.
        geom_consistency: run the geometric pass (COLMAP's default) and fuse its maps; else fuse filtered
            photometric maps.
        patch_match, fusion, poisson: the steps' settings.
        mesh: "poisson" (screened Poisson, needs `mapforge[mesh]`) or "none".
        cache_gb: images and maps kept in memory at most (GB).
        device: torch device for PatchMatch ("auto": CUDA when present).
        backend: PatchMatch backend ("auto": numba kernels on the CPU, torch on other devices).
        seed: seeds PatchMatch's random planes.
    """

    max_image_size: int = 1600
    num_sources: int = 10
    min_triangulation_angle: float = 1.0
    depth_range: tuple[float, float] | None = None
    geom_consistency: bool = True
    patch_match: PatchMatchConfig = field(default_factory=PatchMatchConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    mesh: str = "poisson"
    poisson: PoissonConfig = field(default_factory=PoissonConfig)
    cache_gb: float = 2.0
    device: str = "auto"
    backend: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_image_size < 0 or self.max_image_size in range(1, 16):
            raise InputError(f"max_image_size must be 0 (none) or at least 16, got {self.max_image_size}")
        if self.num_sources < 1:
            raise InputError(f"num_sources must be at least 1, got {self.num_sources}")
        if self.depth_range is not None:
            low, high = (float(v) for v in self.depth_range)
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
                raise InputError(f"empty or invalid depth range [{low}, {high}]: need 0 < min < max")
            self.depth_range = (low, high)
        if self.mesh not in MESHERS:
            raise InputError(f"unknown mesher {self.mesh!r} (choose from {', '.join(MESHERS)})")
        if not self.cache_gb > 0:
            raise InputError(f"cache_gb must be positive, got {self.cache_gb}")
        if self.mesh == "poisson":
            require_mesher()
        select_device(self.device)


@dataclass
class MVSResult:
    """What `run_mvs` made: the workspace, the fused cloud and the report."""

    workspace: Workspace
    cloud: FusedCloud
    report: dict


def load_model(model: str | Path, images: str | Path | None = None) -> tuple[Reconstruction, Path]:
    """The model and image folder of a COLMAP project folder (`images/` beside `sparse/` or `sparse/0`) or of a
    bare model folder with `images`."""
    folder = model_folder(model)
    if images is None:
        candidates = [Path(model) / "images", folder.parent / "images", folder.parent.parent / "images"]
        found = next((c for c in candidates if c.is_dir()), None)
        if found is None:
            raise InputError(f"no images/ folder beside the model in {model}; give the photos with --images")
        images = found
    if not Path(images).is_dir():
        raise InputError(f"image folder {images} does not exist")
    return read_model(folder), Path(images)


def _select(model: Reconstruction, config: MVSConfig) -> tuple[dict, dict, dict]:
    """Sources and depth ranges for stereo, overlapping images for fusion (all by image id)."""
    if config.depth_range is not None:
        ranges = {image_id: config.depth_range for image_id in model.images}
    else:
        from_points = view_selection.depth_ranges_from_points(model) if model.points3D else {}
        missing = [i for i in model.images if from_points.get(i) is None]
        estimated = view_selection.estimated_depth_ranges(model) if missing else {}
        ranges = {i: from_points.get(i) or estimated[i] for i in model.images}
    if model.points3D:
        sources = view_selection.sources_from_points(model, config.num_sources, config.min_triangulation_angle)
        overlap = view_selection.sources_from_points(model, config.fusion.check_num_images, 0.0)
    else:
        sources = view_selection.sources_from_geometry(model, config.num_sources, ranges, config.min_triangulation_angle)
        overlap = view_selection.sources_from_geometry(model, config.fusion.check_num_images, ranges, 0.0)
    return sources, ranges, overlap


def _stereo(job: StereoJob, geometric: bool) -> list[dict]:
    todo = pending(job, GEOMETRIC if geometric else PHOTOMETRIC)
    total = sum(sweeps_per_image(job, i, geometric) for i in todo)
    label = "geometric pass" if geometric else "photometric pass"
    with tqdm(total=total, desc=label, unit="sweep", disable=None) as bar:
        return run_pass(job, geometric, lambda: bar.update(1), lambda name: bar.set_postfix_str(name))


def _fuse(workspace: Workspace, model: Reconstruction, job: StereoJob, overlap: dict, config: MVSConfig) -> FusedCloud:
    kind = GEOMETRIC if config.geom_consistency else PHOTOMETRIC
    kinds = {i: kind for i in model.images if job.sources[i]}
    if not kinds:
        raise InputError("no image has a source image to match: the views do not overlap")
    cloud = fuse(load_input(workspace, model, kinds, overlap), config.fusion)
    write_point_cloud(workspace.fused, cloud.points, cloud.colors, cloud.normals)
    return cloud


def _mesh(workspace: Workspace, cloud: FusedCloud, config: MVSConfig) -> dict | None:
    if config.mesh == "none":
        return None
    _, vertices, triangles = write_poisson_mesh(workspace.mesh, cloud.points, cloud.normals, cloud.colors, config.poisson)
    return {"vertices": int(vertices), "triangles": int(triangles)}


def _map_settings(config: MVSConfig) -> dict:
    """The options the depth and normal maps depend on (those of fusion and meshing do not matter to them)."""
    keys = ("max_image_size", "num_sources", "min_triangulation_angle", "depth_range", "geom_consistency", "patch_match", "seed")
    return json.loads(json.dumps({key: value for key, value in asdict(config).items() if key in keys}))


def _start_maps(workspace: Workspace, config: MVSConfig) -> None:
    """Drop the workspace's maps (and its summary) when they were computed with other options, so that a re-run
    never fuses maps of other settings; then record the options the maps will come from."""
    settings = _map_settings(config)
    try:
        previous = json.loads(workspace.map_settings.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if previous != settings:
        if previous is not None:
            print(f"dense: the maps in {workspace.stereo} came from other options; computing them again")
        for folder in (workspace.stereo / "depth_maps", workspace.stereo / "normal_maps"):
            shutil.rmtree(folder, ignore_errors=True)
        workspace.map_stats.unlink(missing_ok=True)
        workspace.report.unlink(missing_ok=True)
    write_json(workspace.map_settings, settings)


def run_mvs(model: Reconstruction, image_dir: str | Path, out_dir: str | Path, config: MVSConfig | None = None) -> MVSResult:
    """Dense reconstruction of `model` (posed images in `image_dir`) into the workspace `out_dir`."""
    config = config or MVSConfig()
    workspace = Workspace(Path(out_dir))
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def timed(name: str, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 3)
        return result

    _start_maps(workspace, config)
    undistorted = timed("undistort", undistort, model, image_dir, workspace, config.max_image_size)
    sources, ranges, overlap = timed("select", _select, undistorted, config)
    names = {i: undistorted.images[i].name for i in undistorted.images}
    problems = [PatchMatchProblem(names[i], tuple(names[s] for s in sources[i])) for i in sorted(names) if sources[i]]
    write_patch_match_cfg(workspace.patch_match_cfg, problems)
    write_fusion_cfg(workspace.fusion_cfg, [names[i] for i in sorted(names) if sources[i]])
    job = StereoJob(
        workspace, undistorted, sources, ranges, config.patch_match, ArrayCache(int(config.cache_gb * 2**30)),
        select_device(config.device), config.geom_consistency, config.backend, config.seed,
    )  # fmt: skip
    stats = timed("photometric", _stereo, job, False)
    if config.geom_consistency:
        stats += timed("geometric", _stereo, job, True)
    cloud = timed("fusion", _fuse, workspace, undistorted, job, overlap, config)
    mesh = timed("mesh", _mesh, workspace, cloud, config)
    timings["total"] = round(time.perf_counter() - start, 3)
    report = _report(undistorted, config, sources, stats, cloud, mesh, timings, job)
    write_json(workspace.report, report)
    return MVSResult(workspace, cloud, report)


def _report(model, config, sources, stats, cloud, mesh, timings, job) -> dict:
    config_dict = asdict(config)
    return {
        "num_images": len(model.images),
        "images_with_sources": sum(1 for s in sources.values() if s),
        "image_size": max(max(c.width, c.height) for c in model.cameras.values()),
        "fused_points": int(len(cloud.points)),
        "mean_pixels_per_point": float(cloud.num_pixels.mean()) if len(cloud.num_pixels) else 0.0,
        "mesh": mesh,
        "seconds": timings,
        "images": stats,
        "peak_memory_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "peak_cache_gb": round(job.cache.peak_bytes / 2**30, 3),
        "device": str(job.device),
        "config": config_dict,
    }


def summary_text(report: dict) -> str:
    """The short summary printed after `run_mvs`."""
    seconds = report["seconds"]
    maps = [s["seconds"] for s in report["images"]]
    lines = [
        f"dense: {report['fused_points']} fused points from {report['images_with_sources']}/{report['num_images']} "
        f"images at {report['image_size']} px",
        "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
        + (f"; {sum(maps) / max(len(maps), 1):.1f}s per depth map" if maps else ""),
        f"peak memory {report['peak_memory_gb']:.2f} GB",
    ]
    if report["mesh"]:
        lines.insert(1, f"mesh: {report['mesh']['vertices']} vertices, {report['mesh']['triangles']} triangles")
    return "\n".join(lines)

