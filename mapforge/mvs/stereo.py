"""Depth and normal maps for every image of a dense workspace, one reference image at a time.

COLMAP's two passes: the photometric pass (unfiltered when a geometric pass follows, as COLMAP does), then the
geometric pass, started from the photometric maps with the sources' photometric depths as its consistency term,
and filtered. Every map is written as soon as it is done, so an interrupted run resumes at the next image. Images
and maps are read through an `ArrayCache` of fixed size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mapforge.io.atomic import write_json
from mapforge.io.colmap_dense import read_array, write_array
from mapforge.io.images import read_rgb
from mapforge.mvs.cache import ArrayCache
from mapforge.mvs.patchmatch.api import DepthNormal, PatchMatchConfig, StereoView, num_sweeps, patch_match
from mapforge.mvs.workspace import GEOMETRIC, PHOTOMETRIC, Workspace
from mapforge.scene import Reconstruction

# ITU-R BT.601 luma, as COLMAP's Bitmap::CloneAsGrey.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass
class StereoJob:
    """What the passes need: the undistorted model, each image's source ids and depth range, whether a geometric
    pass follows the photometric one, and where to run."""

    workspace: Workspace
    model: Reconstruction
    sources: dict[int, list[int]]
    depth_ranges: dict[int, tuple[float, float]]
    config: PatchMatchConfig
    cache: ArrayCache
    device: torch.device
    geometric_pass: bool = True
    backend: str = "auto"
    seed: int = 0


class _Reader:
    def __init__(self, job: StereoJob):
        self.job = job

    def grey(self, image_id: int) -> torch.Tensor:
        name = self.job.model.images[image_id].name

        def load() -> np.ndarray:
            return np.ascontiguousarray(read_rgb(self.job.workspace.images / name) @ _LUMA)

        return torch.from_numpy(self.job.cache.get(("grey", name), load)).to(self.job.device)

    def maps(self, image_id: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        name = self.job.model.images[image_id].name
        ws = self.job.workspace
        return self.job.cache.get((kind, name), lambda: (read_array(ws.depth_map(name, kind)), read_array(ws.normal_map(name, kind))))

    def view(self, image_id: int, kind: str | None = None) -> StereoView:
        image = self.job.model.images[image_id]
        depth = None if kind is None else torch.from_numpy(self.maps(image_id, kind)[0]).to(self.job.device)
        return StereoView(self.grey(image_id), self.job.model.cameras[image.camera_id].K, image.cam_from_world, depth)


def _done(job: StereoJob, image_id: int, kind: str) -> bool:
    name = job.model.images[image_id].name
    return job.workspace.depth_map(name, kind).is_file() and job.workspace.normal_map(name, kind).is_file()


def _write(job: StereoJob, image_id: int, kind: str, maps: DepthNormal) -> None:
    name = job.model.images[image_id].name
    write_array(job.workspace.depth_map(name, kind), maps.depth.cpu().numpy())
    write_array(job.workspace.normal_map(name, kind), maps.normal.cpu().numpy())
    job.cache.drop((kind, name))


def _one(job: StereoJob, reader: _Reader, image_id: int, geometric: bool, progress: Callable[[], None]) -> DepthNormal:
    source_kind = PHOTOMETRIC if geometric else None
    ref = reader.view(image_id)
    sources = [reader.view(s, source_kind) for s in job.sources[image_id]]
    init = None
    if geometric:
        depth, normal = reader.maps(image_id, PHOTOMETRIC)
        init = DepthNormal(torch.from_numpy(depth).to(job.device), torch.from_numpy(normal).to(job.device), torch.zeros(0))
    # The photometric maps stay unfiltered when the geometric pass follows; that pass filters (as COLMAP).
    filtered = geometric or not job.geometric_pass
    return patch_match(
        ref, sources, job.depth_ranges[image_id], job.config, init=init, geometric=geometric, filter=filtered,
        backend=job.backend, seed=job.seed + image_id + (1 << 20 if geometric else 0), progress=progress,
    )  # fmt: skip


def pending(job: StereoJob, kind: str) -> list[int]:
    """Image ids whose maps of `kind` are still to be computed (with sources; others get none)."""
    return [i for i in sorted(job.model.images) if job.sources[i] and not _done(job, i, kind)]


def sweeps_per_image(job: StereoJob, image_id: int, geometric: bool) -> int:
    camera = job.model.cameras[job.model.images[image_id].camera_id]
    return num_sweeps((camera.height, camera.width), job.config, geometric)


def _read_stats(job: StereoJob) -> dict:
    try:
        stats = json.loads(job.workspace.map_stats.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def run_pass(job: StereoJob, geometric: bool, progress: Callable[[], None], on_image: Callable[[str], None]) -> list[dict]:
    """Compute the missing maps of one pass; returns the statistics (image, pass, seconds, valid fraction) of every
    map of the pass, those of earlier runs included (`Workspace.map_stats`)."""
    kind = GEOMETRIC if geometric else PHOTOMETRIC
    reader = _Reader(job)
    stats = _read_stats(job)
    for image_id in pending(job, kind):
        name = job.model.images[image_id].name
        on_image(name)
        start = time.perf_counter()
        maps = _one(job, reader, image_id, geometric, progress)
        _write(job, image_id, kind, maps)
        valid = float((maps.depth > 0).float().mean())
        stats[f"{kind}/{name}"] = {"image": name, "pass": kind, "seconds": round(time.perf_counter() - start, 3),
                                   "valid_fraction": round(valid, 4)}  # fmt: skip
        write_json(job.workspace.map_stats, stats)
    names = [job.model.images[i].name for i in sorted(job.model.images)]
    return [stats[f"{kind}/{name}"] for name in names if f"{kind}/{name}" in stats]
