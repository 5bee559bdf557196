"""MASt3R matches of a set of photographs, written as a COLMAP feature database for the SfM stage.

load a MASt3R checkpoint -> prepare the images -> scene graph -> per pair: inference, fast reciprocal nearest
neighbours on the two descriptor maps -> keypoints shared across pairs -> `database.db`.

A match lands on a pixel of the network image, so every keypoint is a network pixel: the same pixel found in two
pairs is one keypoint, which is what lets SfM chain matches into tracks across images. Keypoints are stored at the
pixel's centre mapped back to the ORIGINAL photograph (COLMAP convention), so `mapforge sfm IMAGES --database
OUT/database.db` (or COLMAP itself) reconstructs the photographs directly. The database's cameras are priors
(SIMPLE_RADIAL, focal 1.2 x the longer side, as COLMAP assumes without EXIF); the SfM stage takes its intrinsics
from its own options.

Outputs in `out_dir`: `database.db` and `report.json` (matches per pair, keypoints per image, time per stage).
Only the descriptors of the pair being matched are held in memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mapforge import __version__
from mapforge.devices import select_device
from mapforge.errors import InputError, ReconstructionError
from mapforge.io.atomic import check_output_folder, start_outputs, write_json
from mapforge.io.colmap_database import FeatureDatabase, write_database
from mapforge.io.images import image_size
from mapforge.pointmap.checkpoint import load_checkpoint
from mapforge.pointmap.graph import make_pairs, parse_scene_graph
from mapforge.pointmap.inference import iter_pair_predictions
from mapforge.pointmap.matching import PixelMapping, reciprocal_matches
from mapforge.pointmap.pipeline import image_names
from mapforge.pointmap.preprocess import image_paths, load_images
from mapforge.scene import Camera

# COLMAP's focal length prior for photographs without EXIF: 1.2 x the longer side.
PRIOR_FOCAL_FACTOR = 1.2


@dataclass
class MatchConfig:
    """Settings of `run_matching`; defaults follow upstream MASt3R's sparse pipeline unless said otherwise.

    Attributes:
        image_size: network input size, None = the checkpoint's training size (512).
        scene_graph: which image pairs are matched ("complete", "swin-k", "logwin-k", "oneref-k"; see
            `mapforge.pointmap.graph`).
        symmetric: run each pair in both directions and keep the union of the two directions' matches (upstream);
            False halves the network time.
        subsample: reciprocal matching starts from every `subsample`-th pixel (upstream: 8).
        border: drop matches within this many network pixels of an image edge (upstream's demo: 3), where the
            descriptors of the zero-padded patches are unreliable.
        batch_size: pairs per network call.
        device: "cpu", "cuda", ...; None picks CUDA when available.
        progress: show progress bars.
    """

    image_size: int | None = None
    scene_graph: str = "complete"
    symmetric: bool = True
    subsample: int = 8
    border: int = 3
    batch_size: int = 1
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 16:
            raise InputError(f"image size must be at least 16 pixels, got {self.image_size}")
        parse_scene_graph(self.scene_graph)
        if self.subsample < 1 or self.batch_size < 1 or self.border < 0:
            raise InputError("subsample and batch size must be at least 1, border at least 0")


class KeypointTable:
    """Keypoints of one image as network pixels, each pixel numbered once however many pairs find it."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._ids: dict[int, int] = {}

    def ids(self, xy: np.ndarray) -> np.ndarray:
        """Keypoint ids `[M]` of network pixel centres `[M, 2]` (COLMAP convention), new pixels numbered on."""
        pixels = np.floor(xy).astype(np.int64)
        flat = pixels[:, 1] * self.width + pixels[:, 0]
        return np.array([self._ids.setdefault(int(p), len(self._ids)) for p in flat], dtype=np.int64)

    def pixel_centres(self) -> np.ndarray:
        """`[K, 2]` network pixel centres of the keypoints, in id order."""
        flat = np.fromiter(self._ids, dtype=np.int64, count=len(self._ids))  # dicts keep insertion (= id) order
        return np.stack([flat % self.width, flat // self.width], axis=1).astype(np.float64) + 0.5


@dataclass
class MatchResult:
    """What `run_matching` produced: the database contents, its path and the report dictionary."""

    database: FeatureDatabase
    path: Path
    report: dict


def _prior_camera(width: int, height: int) -> Camera:
    return Camera("SIMPLE_RADIAL", width, height, [PRIOR_FOCAL_FACTOR * max(width, height), width / 2, height / 2, 0.0])


def run_matching(
    images: str | Path | Sequence[str | Path],
    weights: str | Path,
    out_dir: str | Path,
    config: MatchConfig | None = None,
) -> MatchResult:
    """Match photographs with a MASt3R checkpoint and write `out_dir/database.db` (see the module doc).

    Raises:
        InputError: missing or unreadable images or weights, fewer than 2 images, a DUSt3R checkpoint (it has no
            descriptors).
        ReconstructionError: no pair of images has a single match.
    """
    config = config or MatchConfig()
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    check_output_folder(out_dir)
    paths = image_paths(images)
    if len(paths) < 2:
        raise InputError(f"matching needs at least 2 images, got {len(paths)}")
    names = image_names(paths)
    sizes = [image_size(p) for p in paths]
    pairs = make_pairs(len(paths), config.scene_graph, symmetrize=config.symmetric)
    device = select_device(config.device)

    t0 = time.perf_counter()
    model = load_checkpoint(weights, device)
    if not model.config.is_mast3r:
        raise InputError(f"{weights} is a DUSt3R checkpoint; matching needs MASt3R's descriptors (a MASt3R checkpoint)")
    size = config.image_size or model.config.img_size
    timings["load_model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    views = load_images(paths, size, patch_size=model.config.patch_size)
    mappings = [PixelMapping.from_preprocessing(w, h, size, patch_size=model.config.patch_size) for w, h in sizes]
    tables = [KeypointTable(int(view["img"].shape[-1])) for view in views]
    timings["load_images"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    found: dict[tuple[int, int], set[tuple[int, int]]] = {}
    for batch in iter_pair_predictions(model, views, pairs, config.batch_size, device, config.progress):
        for b, (i, j) in enumerate(zip(batch["view1"]["idx"], batch["view2"]["idx"])):
            xy_i, xy_j = reciprocal_matches(batch["pred1"]["desc"][b], batch["pred2"]["desc"][b],
                                            subsample=config.subsample, border=config.border)
            ids_i, ids_j = tables[i].ids(xy_i), tables[j].ids(xy_j)
            if i > j:
                i, j, ids_i, ids_j = j, i, ids_j, ids_i
            found.setdefault((i, j), set()).update(zip(ids_i.tolist(), ids_j.tolist()))
    del model
    timings["match"] = time.perf_counter() - t0

    matches = {pair: np.array(sorted(m), dtype=np.int64).reshape(-1, 2) for pair, m in sorted(found.items()) if m}
    if not matches:
        raise ReconstructionError("MASt3R found no matches between any two images (wrong or untrained weights?)")
    keypoints = [mapping.to_original(table.pixel_centres()) for table, mapping in zip(tables, mappings)]
    cameras = [_prior_camera(w, h) for w, h in sizes]
    database = FeatureDatabase(names, cameras, keypoints, matches, [False] * len(names))
    t0 = time.perf_counter()
    start_outputs(out_dir, "report.json")
    path = write_database(database, out_dir / "database.db")
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start

    counts = [len(m) for m in matches.values()]
    report = {
        "mapforge_version": __version__,
        "weights": str(weights),
        "config": asdict(config),
        "image_size": size,
        "device": str(device),
        "num_images": len(paths),
        "num_pairs_run": len(pairs),
        "num_pairs_matched": len(matches),
        "matches_per_pair": {"median": float(np.median(counts)), "min": int(min(counts)), "max": int(max(counts))},
        "keypoints": {name: len(k) for name, k in zip(names, keypoints)},
        "pairs": [{"images": [names[i], names[j]], "matches": len(m)} for (i, j), m in matches.items()],
        "seconds": timings,
    }
    write_json(out_dir / "report.json", report)
    print(f"{sum(counts)} matches in {len(matches)}/{len(pairs) // (2 if config.symmetric else 1)} image pairs, "
          f"{sum(len(k) for k in keypoints)} keypoints in {len(paths)} images; time: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return MatchResult(database, path, report)
