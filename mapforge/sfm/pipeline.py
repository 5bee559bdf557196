"""`run_sfm`: photographs to a COLMAP model, as a chain of flat steps (hloc style).

read images and intrinsics -> extract features (cached per image) -> select pairs -> match -> verify -> map ->
write. Each step is a plain function that can be called on its own. With `SfMConfig.database`, keypoints and raw
matches come from a COLMAP database instead of extraction and matching (COLMAP's own, hloc's, or the MASt3R matches
of `mapforge pointmap --matches-only`); verification and mapping are the same.

Outputs in `out_dir`:
- `sparse/0` (COLMAP binary; further disconnected models in `sparse/1`, ...), `sparse_txt/0` (the same as text:
  COLMAP reads binary first when both sit in one folder, so the text copy lives beside it),
- `points.ply` (the largest model's points with colours), `report.json` (counts, errors, time per stage),
- `cache/features/` (per-image features; a re-run skips images already extracted).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mapforge.datasets.folder import load_folder
from mapforge.errors import InputError, ReconstructionError
from mapforge.geometry.cameras import CAMERA_MODELS
from mapforge.io.atomic import start_outputs, write_json
from mapforge.io.colmap import write_model
from mapforge.io.colmap_database import read_database
from mapforge.io.images import read_rgb
from mapforge.io.ply import write_point_cloud
from mapforge.scene import Camera, Reconstruction
from mapforge.sfm.executor import LocalExecutor
from mapforge.sfm.features import FeatureConfig, Features, extract_features, features_at
from mapforge.sfm.mapper import MapperConfig, incremental_mapping
from mapforge.sfm.matching import MatchingConfig, match_pairs
from mapforge.sfm.pairs import select_pairs
from mapforge.sfm.verification import TwoViewGeometry, verify_pairs

# Model used for unknown intrinsics, as COLMAP's feature extractor does by default.
DEFAULT_UNKNOWN_MODEL = "SIMPLE_RADIAL"


@dataclass
class SfMConfig:
    """Settings of `run_sfm`.

    Attributes:
        features, matching, mapper: the stages' configs.
        intrinsics: a 3x3 K text file or a COLMAP cameras.txt/.bin; None looks for `K.txt` / `cameras.txt` in the
            image folder, else uses EXIF focal lengths or 1.2 x max(width, height) (COLMAP's prior).
        camera_model: model for unknown intrinsics (default SIMPLE_RADIAL, like COLMAP); with known intrinsics the
            file's model is used. Set e.g. "OPENCV" to refine more distortion terms.
        refine_known_intrinsics: refine focal lengths and distortion of known intrinsics too (default: keep them).
        workers: worker threads for extraction, matching and verification (None: every core).
        database: a COLMAP database (`database.db`) whose keypoints and raw matches replace feature extraction and
            matching. Its images are found in the image folder by name; cameras still come from `intrinsics`, the
            folder, EXIF or the prior, as without it.
    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    intrinsics: str | Path | None = None
    camera_model: str | None = None
    refine_known_intrinsics: bool = False
    workers: int | None = None
    database: str | Path | None = None


@dataclass
class SfMResult:
    """What `run_sfm` produced: the models (largest first), the output paths and the report dictionary."""

    reconstructions: list[Reconstruction]
    model_dirs: list[Path]
    report: dict

    @property
    def reconstruction(self) -> Reconstruction:
        return self.reconstructions[0]


@dataclass
class ImageSet:
    """Images to reconstruct: paths `[N]`, names `[N]`, cameras `[N]` (shared objects = one camera), and whether
    the intrinsics are known (from a file) or priors."""

    paths: list[Path]
    names: list[str]
    cameras: list[Camera]
    known_intrinsics: bool


def read_images(image_dir: str | Path, intrinsics: str | Path | None = None, camera_model: str | None = None) -> ImageSet:
    """List the images of a folder and their cameras (see `mapforge.datasets.folder`)."""
    dataset = load_folder(image_dir, intrinsics=intrinsics)
    paths = list(dataset.image_paths)
    if len(paths) < 2:
        raise ReconstructionError(f"SfM needs at least 2 images, {image_dir} has {len(paths)}")
    known = all(source == "file" for source in dataset.metadata["focal_source"])
    if camera_model is not None and camera_model not in CAMERA_MODELS:
        raise InputError(f"unknown camera model {camera_model!r} (known: {', '.join(CAMERA_MODELS)})")
    cameras = list(dataset.cameras)
    if not known or camera_model is not None:
        cameras = _convert_cameras(cameras, camera_model or DEFAULT_UNKNOWN_MODEL)
    return ImageSet(paths, list(dataset.image_names), cameras, known)


def _convert_cameras(cameras: list[Camera], model: str) -> list[Camera]:
    """Same focal lengths and principal points in `model` (distortion starting at zero), sharing kept."""
    target = CAMERA_MODELS[model]
    if not target.focal_idxs:
        raise InputError(f"camera model {model} has no focal length; choose a perspective or fisheye model")
    converted: dict[int, Camera] = {}
    out = []
    for camera in cameras:
        if id(camera) not in converted:
            if camera.model == model:
                converted[id(camera)] = camera
            else:
                K = camera.K
                params = np.zeros(target.num_params)
                if len(target.focal_idxs) == 1:
                    params[target.focal_idxs[0]] = 0.5 * (K[0, 0] + K[1, 1])
                else:
                    params[list(target.focal_idxs)] = [K[0, 0], K[1, 1]]
                params[list(target.principal_point_idxs)] = [K[0, 2], K[1, 2]]
                converted[id(camera)] = Camera(model, camera.width, camera.height, params)
        out.append(converted[id(camera)])
    return out


def extract(images: ImageSet, config: SfMConfig, cache_dir: Path | None, executor: LocalExecutor) -> list[Features]:
    return extract_features(images.paths, config.features, cache_dir=cache_dir, executor=executor)


def match(
    features: list[Features], config: SfMConfig, executor: LocalExecutor | None = None
) -> dict[tuple[int, int], np.ndarray]:
    m = config.matching
    pairs = select_pairs(features, m.pairs, m.overlap, m.num_neighbors, m.loop_closure)
    return match_pairs(features, pairs, m, executor)


def _features_task(task: tuple[Path, np.ndarray]) -> Features:
    return features_at(read_rgb(task[0]), task[1])


def import_database(
    images: ImageSet, database: str | Path, executor: LocalExecutor
) -> tuple[list[Features], dict[tuple[int, int], np.ndarray]]:
    """Keypoints and raw matches of `images` from a COLMAP database: features `[N]` (without descriptors, colours
    sampled from the photos) and `{(i, j): [M, 2]}` matches with `i < j` indexing `images`.

    Images of the folder that the database lacks get no keypoints. Raises `InputError` when the database names an
    image the folder does not have, or has keypoints outside their image (features of a resized copy).
    """
    db = read_database(database)
    position = {name: k for k, name in enumerate(images.names)}
    unknown = [name for name in db.names if name not in position]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise InputError(f"{database}: image {unknown[0]}{more} is not in the image folder")
    keypoints = [np.zeros((0, 2)) for _ in images.names]
    for name, xy in zip(db.names, db.keypoints):
        k = position[name]
        camera = images.cameras[k]
        if len(xy) and ((xy < -1).any() or (xy > np.array([camera.width, camera.height]) + 1).any()):
            raise InputError(f"{database}: keypoints of {name} lie outside its {camera.width}x{camera.height} pixels "
                             "(were they detected on a resized copy?)")
        keypoints[k] = xy
    tasks = [(path, xy) for path, xy in zip(images.paths, keypoints)]
    features = executor.map(_features_task, tasks, desc="database keypoints")
    matches = {}
    for (a, b), m in db.matches.items():
        i, j = position[db.names[a]], position[db.names[b]]
        matches[(i, j) if i < j else (j, i)] = m if i < j else m[:, ::-1].copy()
    return features, matches


def verify(
    features: list[Features], matches: dict[tuple[int, int], np.ndarray], images: ImageSet, config: SfMConfig,
    executor: LocalExecutor,
) -> dict[tuple[int, int], TwoViewGeometry]:  # fmt: skip
    # Priors are not trusted for E: unknown intrinsics verify with F and H only (the mapper estimates poses).
    cameras = images.cameras if images.known_intrinsics else None
    return verify_pairs(features, matches, cameras, config.matching, executor)


def reconstruct(
    features: list[Features], geometries: dict[tuple[int, int], TwoViewGeometry], images: ImageSet, config: SfMConfig
) -> list[Reconstruction]:
    mapper = config.mapper
    if images.known_intrinsics and not config.refine_known_intrinsics:
        mapper = MapperConfig(**{**asdict(mapper), "ba_refine_focal": False, "ba_refine_principal_point": False,
                                 "ba_refine_extra_params": False})  # fmt: skip
    return incremental_mapping(features, geometries, images.cameras, mapper, images.names)


def model_summary(rec: Reconstruction) -> dict:
    """Counts and errors of one model for the report."""
    errors = rec.reprojection_errors()
    lengths = rec.track_lengths()
    return {
        "registered_images": len(rec.images),
        "points": len(rec.points3D),
        "observations": int(lengths.sum()),
        "mean_track_length": float(lengths.mean()) if lengths.size else 0.0,
        "mean_reprojection_error_px": float(errors.mean()) if errors.size else 0.0,
        "cameras": {int(k): {"model": c.model, "params": [float(p) for p in c.params]} for k, c in rec.cameras.items()},
        "images": sorted(image.name for image in rec.images.values()),
    }


def write_outputs(models: list[Reconstruction], out_dir: Path) -> list[Path]:
    """Write every model (binary under `sparse/`, text under `sparse_txt/`) and the largest one's points as PLY."""
    dirs = []
    for k, rec in enumerate(models):
        dirs.append(write_model(rec, out_dir / "sparse" / str(k), "bin"))
        write_model(rec, out_dir / "sparse_txt" / str(k), "txt")
    write_point_cloud(out_dir / "points.ply", models[0].points_xyz(), models[0].points_rgb())
    return dirs


def run_sfm(image_dir: str | Path, out_dir: str | Path, config: SfMConfig | None = None) -> SfMResult:
    """Reconstruct the images in `image_dir` into `out_dir` (see the module doc for the layout).

    Raises:
        InputError: missing folder, unreadable image or intrinsics file.
        ReconstructionError: fewer than 2 images, no overlapping pair, no initial pair.
    """
    config = config or SfMConfig()
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    images = read_images(image_dir, config.intrinsics, config.camera_model)
    timings["read"] = time.perf_counter() - start
    start_outputs(out_dir, "report.json")
    executor = LocalExecutor(config.workers)

    def timed(name: str, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        timings[name] = time.perf_counter() - t0
        return result

    if config.database is not None:
        features, matches = timed("import", import_database, images, config.database, executor)
    else:
        features = timed("extract", extract, images, config, out_dir / "cache" / "features", executor)
        matches = timed("match", match, features, config, executor)
    geometries = timed("verify", verify, features, matches, images, config, executor)
    num_verified = sum(1 for g in geometries.values() if g.num_inliers >= config.mapper.min_num_matches)
    if num_verified == 0:
        raise ReconstructionError(
            f"no image pair of {image_dir} has {config.mapper.min_num_matches} or more verified matches; the photos "
            "do not overlap enough (or have too little texture)"
        )
    models = timed("map", reconstruct, features, geometries, images, config)
    model_dirs = timed("write", write_outputs, models, out_dir)
    timings["total"] = time.perf_counter() - start

    report = {
        "image_dir": str(image_dir),
        "num_images": len(images.paths),
        "known_intrinsics": images.known_intrinsics,
        "features": str(config.database) if config.database is not None else config.features.method,
        "num_pairs_matched": len(matches),
        "num_pairs_verified": num_verified,
        "num_models": len(models),
        "models": [model_summary(rec) for rec in models],
        "unregistered_images": sorted(set(images.names) - {img.name for rec in models for img in rec.images.values()}),
        "seconds": timings,
    }
    write_json(out_dir / "report.json", report)
    print(summary_text(report))
    return SfMResult(models, model_dirs, report)


def summary_text(report: dict) -> str:
    """The short summary printed at the end of `run_sfm`."""
    best = report["models"][0]
    lines = [
        f"registered {best['registered_images']}/{report['num_images']} images"
        + (f" ({report['num_models']} models)" if report["num_models"] > 1 else ""),
        f"{best['points']} points, mean track length {best['mean_track_length']:.2f}, "
        f"mean reprojection error {best['mean_reprojection_error_px']:.3f} px",
        "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in report["seconds"].items()),
    ]
    return "\n".join(lines)
