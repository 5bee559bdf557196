"""`mapforge run`: photos to a scene you can look at, stage by stage, resumable.

The only module that knows the order of the stages. Each stage writes its own folder under the output folder and
finishes by writing its summary file (`sfm/report.json`, `pointmap/report.json`, `dense/report.json`,
`splat/metrics.json`, `nerf/metrics.json`), so a stage whose summary exists is
complete and is skipped on a re-run; an interrupted stage resumes from its own caches and checkpoints. The
options of a run are written to `run.toml` beside the outputs, and `mapforge run --config run.toml` repeats it.
A re-run with other images or options first clears the stage folders they affect (`stages.json` records what
each folder was computed from), so the outputs always come from what `run.toml` says.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import tomli_w

from mapforge.datasets.base import Dataset
from mapforge.errors import InputError
from mapforge.geometry.cameras import CAMERA_MODELS
from mapforge.io.atomic import atomic_path, output_folder, write_json
from mapforge.provenance import changed_inputs, clear_outputs, file_stamp, images_fingerprint, read_records, write_records
from mapforge.report import write_report
from mapforge.scene import Reconstruction
from mapforge.sfm.features import MIN_IMAGE_SIZE
from mapforge.sfm.pairs import PAIR_METHODS

CONFIG_NAME = "run.toml"
# The options the outputs of each stage folder depend on, besides the images and the stages it starts from (see
# `stage_inputs`); a stage missing here depends on every option.
STAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "matches": ("weights",),
    "sfm": ("intrinsics", "camera_model", "features", "matcher", "max_image_size"),
    "pointmap": ("weights", "intrinsics"),
    "dense": (),
    "splat": ("init", "minutes", "iterations", "downscale"),
    "nerf": ("init", "minutes", "iterations", "downscale"),
}
# Options naming input files, whose contents matter as much as their names.
_FILE_OPTIONS = ("weights", "intrinsics")
METHODS = ("splat", "nerf", "none")
INITS = ("sfm", "pointmap")
FEATURES = ("sift", "xfeat", "mast3r")
# What each annotated field type of `RunConfig` accepts (a TOML integer is a fine number of minutes), and its name.
_FIELD_TYPES = {"str": ((str,), "a string"), "bool": ((bool,), "true or false"), "int": ((int,), "an integer"),
                "float": ((int, float), "a number")}


@dataclass
class RunConfig:
    """Every option of a run. Paths are stored as given.

    Attributes:
        images: folder of input photos.
        output: output folder.
        method: what to train after the poses: "splat" (3D Gaussian splatting), "nerf", or "none".
        init: where poses and the first points come from: "sfm", or "pointmap" (needs `weights`).
        weights: a DUSt3R/MASt3R checkpoint file for `init = "pointmap"`, or a MASt3R one for `features = "mast3r"`.
        dense: also run multi-view stereo.
        intrinsics: a 3x3 K text file or COLMAP cameras.txt; empty = look beside the images, else EXIF or a prior.
        camera_model: COLMAP model for unknown intrinsics; empty = SIMPLE_RADIAL, as COLMAP.
        features: SfM keypoints and matches: "sift" (default), "xfeat", or "mast3r" (MASt3R's dense reciprocal
            matches, written to `matches/database.db` by the pointmap stage's matcher, then verified and mapped by
            SfM; needs `weights`).
        matcher: pair selection for SfM: exhaustive, sequential or retrieval (not used by mast3r, which matches
            every pair).
        max_image_size: SfM features are extracted with the longer side shrunk to this (0 = the SfM default).
        minutes: wall-clock training budget of the splat/NeRF stage (0 = use `iterations`).
        iterations: training iterations when `minutes` is 0.
        downscale: train on images reduced this many times.
        ground_truth: a COLMAP model with true poses; when given, poses are scored against it.
        overwrite: recompute stages whose outputs are already complete.
    """

    images: str
    output: str
    method: str = "splat"
    init: str = "sfm"
    weights: str = ""
    dense: bool = False
    intrinsics: str = ""
    camera_model: str = ""
    features: str = "sift"
    matcher: str = "exhaustive"
    max_image_size: int = 0
    minutes: float = 5.0
    iterations: int = 30000
    downscale: int = 1
    ground_truth: str = ""
    overwrite: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            accepted, name = _FIELD_TYPES[f.type]
            if not isinstance(value, accepted) or (isinstance(value, bool) and f.type != "bool"):
                raise InputError(f"option {f.name} must be {name}, got {value!r}")
        self.minutes = float(self.minutes)
        if not math.isfinite(self.minutes) or self.minutes < 0:
            raise InputError(f"minutes must be 0 (use iterations) or a positive number, got {self.minutes!r}")
        if self.iterations < 1 or self.downscale < 1:
            raise InputError(f"iterations and downscale must be positive, got {self.iterations} and {self.downscale}")
        if self.max_image_size and self.max_image_size < MIN_IMAGE_SIZE:
            raise InputError(f"max_image_size must be 0 (the SfM default) or at least {MIN_IMAGE_SIZE}, "
                             f"got {self.max_image_size}")
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r} (choose from {', '.join(METHODS)})")
        if self.init not in INITS:
            raise InputError(f"unknown init {self.init!r} (choose from {', '.join(INITS)})")
        if self.init == "pointmap" and not self.weights:
            raise InputError("--init pointmap needs --weights FILE (a DUSt3R or MASt3R checkpoint)")
        if self.features not in FEATURES:
            raise InputError(f"unknown features {self.features!r} (choose from {', '.join(FEATURES)})")
        if self.features == "mast3r" and not self.weights:
            raise InputError("--features mast3r needs --weights FILE (a MASt3R checkpoint)")
        if self.matcher not in PAIR_METHODS:
            raise InputError(f"unknown matcher {self.matcher!r} (choose from {', '.join(PAIR_METHODS)})")
        if self.camera_model and self.camera_model not in CAMERA_MODELS:
            raise InputError(f"unknown camera model {self.camera_model!r} (known: {', '.join(CAMERA_MODELS)})")

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"config file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"config file {path} is not valid TOML: {exc}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
        missing = [name for name in ("images", "output") if name not in values]
        if missing:
            raise InputError(f"config file {path}: missing option(s) {', '.join(missing)}")
        try:
            return cls(**values)
        except InputError as exc:
            raise InputError(f"config file {path}: {exc}") from None

    def write(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp:
            tmp.write_text(tomli_w.dumps(asdict(self)), encoding="utf-8")
        return Path(path)


def _finished(stage: str, summary: str, config: RunConfig, out: Path) -> dict | None:
    """The summary of `stage` when its folder already holds one, else None. (`run` has cleared the folders of
    stages whose outputs came from other inputs, and all of them with --overwrite.)"""
    path = out / stage / summary
    if not path.is_file():
        return None
    print(f"{stage}: complete, skipped ({path})")
    return json.loads(path.read_text())


def _posed_dataset(config: RunConfig, out: Path) -> Dataset:
    """The photos with the poses and cameras of the SfM or pointmap stage, as a `Dataset`."""
    from mapforge.datasets import load_dataset

    return load_dataset(poses_dir(config, out), layout="colmap", image_dir=config.images, downscale=config.downscale)


def stage_matches(config: RunConfig, out: Path) -> dict:
    """MASt3R matches of every image pair into `out/matches/database.db`; returns its report."""
    from mapforge.pointmap.correspondences import run_matching

    if (done := _finished("matches", "report.json", config, out)) is not None:
        return done
    return run_matching(config.images, config.weights, out / "matches").report


def stage_sfm(config: RunConfig, out: Path) -> dict:
    """Structure-from-Motion into `out/sfm` (from `out/matches/database.db` with MASt3R features); returns its
    report."""
    from mapforge.sfm.features import FeatureConfig
    from mapforge.sfm.matching import MatchingConfig
    from mapforge.sfm.pipeline import SfMConfig, run_sfm

    if (done := _finished("sfm", "report.json", config, out)) is not None:
        return done
    sfm_config = SfMConfig(intrinsics=config.intrinsics or None, camera_model=config.camera_model or None)
    if config.features == "mast3r":
        sfm_config.database = out / "matches" / "database.db"
    else:
        sfm_config.features = FeatureConfig(method=config.features)
        sfm_config.matching = MatchingConfig.for_features(config.features, pairs=config.matcher)
    if config.max_image_size:
        sfm_config.features.max_image_size = config.max_image_size
    return run_sfm(config.images, out / "sfm", sfm_config).report


def stage_pointmap(config: RunConfig, out: Path) -> dict:
    """Poses, intrinsics and dense points from a pointmap network into `out/pointmap`; returns its report."""
    from mapforge.pointmap.pipeline import PointmapRunConfig, run_pointmap

    if (done := _finished("pointmap", "report.json", config, out)) is not None:
        return done
    pointmap_config = PointmapRunConfig(intrinsics=config.intrinsics or None)
    return run_pointmap(config.images, config.weights, out / "pointmap", pointmap_config).report


def poses_dir(config: RunConfig, out: Path) -> Path:
    """The stage folder whose `sparse/0` holds the poses the later stages start from."""
    return out / ("sfm" if config.init == "sfm" else "pointmap")


def stage_splat(config: RunConfig, out: Path) -> dict:
    """Gaussian splatting on the posed images (SfM or pointmap model) into `out/splat`; returns test metrics."""
    from mapforge.splat.config import SplatConfig
    from mapforge.splat.trainer import train

    if (done := _finished("splat", "metrics.json", config, out)) is not None:
        return done
    dataset = _posed_dataset(config, out)
    # Pointmap poses are good but not SfM-exact, and pointmaps are already dense: refine the poses jointly with the
    # Gaussians and skip density control, as InstantSplat does.
    from_pointmap = config.init == "pointmap"
    train_config = SplatConfig(minutes=config.minutes or None, iterations=config.iterations,
                               optimize_poses=from_pointmap, density_control=not from_pointmap)
    extra = {"data": str(poses_dir(config, out).resolve()), "downscale": config.downscale}
    return train(dataset, train_config, out / "splat", resume=not config.overwrite, extra=extra).metrics


def stage_nerf(config: RunConfig, out: Path) -> dict:
    """The fast (hash-grid) NeRF on the posed images into `out/nerf`; returns the test metrics."""
    from mapforge.nerf.config import FastNeRFConfig
    from mapforge.nerf.trainer import train

    if (done := _finished("nerf", "metrics.json", config, out)) is not None:
        return done
    dataset = _posed_dataset(config, out)
    train_config = FastNeRFConfig(minutes=config.minutes or None, iterations=config.iterations)
    extra = {"data": str(poses_dir(config, out).resolve()), "downscale": config.downscale}
    return train(dataset, train_config, out / "nerf", resume=not config.overwrite, extra=extra).metrics


def stage_mvs(config: RunConfig, out: Path) -> dict:
    """Multi-view stereo on the SfM or pointmap model into the dense workspace `out/dense`; returns its report."""
    from mapforge.mvs.pipeline import MVSConfig, run_mvs

    if (done := _finished("dense", "report.json", config, out)) is not None:
        return done
    model, images = mvs_inputs(out)
    return run_mvs(model, images, out / "dense", MVSConfig()).report


def mvs_inputs(path: str | Path, images: str | Path | None = None) -> tuple[Reconstruction, Path]:
    """The posed model and photos for multi-view stereo: from a run folder (its SfM or pointmap model and its
    photos), from a `mapforge sfm` output folder (its model and the photos its report names), else from a COLMAP
    project or model folder (see `mvs.pipeline.load_model`)."""
    from mapforge.io.colmap import read_model
    from mapforge.mvs.pipeline import load_model

    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        return load_model(path, images or _sfm_image_dir(path))
    config = RunConfig.from_file(path / CONFIG_NAME)
    model_dir = poses_dir(config, path) / "sparse" / "0"
    if not model_dir.is_dir():
        raise InputError(f"run folder {path} has no posed model yet ({model_dir}); run its SfM or pointmap stage first")
    return read_model(model_dir), Path(images or config.images)


def _sfm_image_dir(path: Path) -> Path | None:
    """The photos of a `mapforge sfm` output folder, from its report (None for other folders)."""
    try:
        image_dir = json.loads((path / "report.json").read_text(encoding="utf-8")).get("image_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(image_dir) if isinstance(image_dir, str) and Path(image_dir).is_dir() else None


def stage_ground_truth(config: RunConfig, out: Path) -> dict:
    """Score the estimated poses against the ground-truth model; writes `out/ground_truth.json`."""
    from mapforge.io.colmap import read_model
    from mapforge.metrics.pose import evaluate_poses

    est = read_model(poses_dir(config, out) / "sparse" / "0")
    gt = read_model(config.ground_truth)
    evaluation = evaluate_poses(
        {image.name: image.cam_from_world for image in est.images.values()},
        {image.name: image.cam_from_world for image in gt.images.values()},
    )
    result = {
        "num_images": evaluation.num_images,
        "num_registered": evaluation.num_registered,
        "median_rot_err_deg": evaluation.median_rot_err_deg,
        "median_trans_err_deg": evaluation.median_trans_err_deg,
        "accuracy": evaluation.accuracy,
        "auc": evaluation.auc,
        "ate_rmse": evaluation.ate_rmse,
        "camera_centers": {image.name: image.center.tolist() for image in gt.images.values()},
        "summary": evaluation.summary(),
    }
    write_json(out / "ground_truth.json", result)
    return result


def _upstream(config: RunConfig, stage: str) -> list[str]:
    """The stages whose outputs `stage` starts from, in order."""
    if stage in ("matches", "pointmap"):
        return []
    if stage == "sfm":
        return ["matches"] if config.features == "mast3r" else []
    return ["pointmap"] if config.init == "pointmap" else [*_upstream(config, "sfm"), "sfm"]


def stage_inputs(config: RunConfig, stage: str, images: str) -> dict:
    """Everything the outputs of `stage` depend on under `config`: the images (`images`, their fingerprint), its
    options and those of the stages it starts from; input files are named with their size and modification time."""
    every = tuple(f.name for f in fields(RunConfig) if f.name not in ("images", "output", "overwrite"))
    names = sorted({name for s in (*_upstream(config, stage), stage) for name in STAGE_OPTIONS.get(s, every)})
    inputs: dict[str, object] = {"images": images}
    for name in names:
        value = getattr(config, name)
        inputs[name] = file_stamp(value) if name in _FILE_OPTIONS and value else value
    return inputs


def clear_stale_stages(config: RunConfig, out: Path) -> None:
    """Clear every stage folder of `out` whose outputs came from other images or options than `config` gives it
    (all of them with --overwrite), and record what each stage is computed from now.

    A stage this run does not compute (splat after a switch to NeRF) is kept while its inputs are unchanged, and
    removed otherwise: nothing in `out` may come from options other than those of `run.toml`."""
    records = read_records(out)
    images = images_fingerprint(config.images)
    computed = [name for name, _ in _stages(config)]
    for stage in STAGE_OPTIONS:
        inputs = stage_inputs(config, stage, images)
        folder = out / stage
        changed = changed_inputs(records.get(stage), inputs)
        if folder.is_dir() and any(folder.iterdir()) and (changed or config.overwrite):
            why = "--overwrite" if config.overwrite else f"{', '.join(changed)} changed since its outputs were made"
            print(f"{stage}: {why}; {'recomputing' if stage in computed else 'removed (not part of this run)'}")
            clear_outputs(folder)
        records[stage] = inputs
    write_records(out, records)


def _stages(config: RunConfig) -> list[tuple[str, Callable[[RunConfig, Path], dict]]]:
    """The stages `config` asks for, in the order they run."""
    if config.init == "pointmap":
        stages = [("pointmap", stage_pointmap)]
    elif config.features == "mast3r":
        stages = [("matches", stage_matches), ("sfm", stage_sfm)]
    else:
        stages = [("sfm", stage_sfm)]
    if config.ground_truth:
        stages.append(("ground_truth", stage_ground_truth))
    if config.dense:
        stages.append(("dense", stage_mvs))
    if config.method == "splat":
        stages.append(("splat", stage_splat))
    elif config.method == "nerf":
        stages.append(("nerf", stage_nerf))
    return stages


def run(config: RunConfig) -> dict:
    """Run every stage the config asks for; returns what each stage reported, by stage name."""
    out = Path(config.output)
    if not Path(config.images).is_dir():
        raise InputError(f"image folder {config.images} does not exist")
    output_folder(out)
    clear_stale_stages(config, out)
    config.write(out / CONFIG_NAME)

    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    for name, stage in _stages(config):
        start = time.perf_counter()
        results[name] = stage(config, out)
        timings[name] = time.perf_counter() - start
    write_json(out / "timings.json", timings)
    results["timings"] = timings
    results["report"] = str(write_report(out))
    return results


def summary_text(results: dict) -> str:
    """The closing summary of a run."""
    lines = []
    pointmap = results.get("pointmap")
    if pointmap:
        lines.append(
            f"pointmap: registered {pointmap['registered_images']}/{pointmap['num_images']} images, "
            f"{pointmap['dense_points']} dense points"
        )
    matches = results.get("matches")
    if matches:
        lines.append(
            f"MASt3R matches: {matches['num_pairs_matched']} image pairs, median "
            f"{matches['matches_per_pair']['median']:.0f} matches per pair"
        )
    sfm = results.get("sfm")
    if sfm:
        best = sfm["models"][0]
        lines.append(
            f"SfM: registered {best['registered_images']}/{sfm['num_images']} images, {best['points']} points, "
            f"reprojection error {best['mean_reprojection_error_px']:.3f} px"
        )
    gt = results.get("ground_truth")
    if gt:
        auc = ", ".join(f"{k} {100 * v:.1f}" for k, v in gt["auc"].items())
        lines.append(
            f"poses vs ground truth: median relative rotation error {gt['median_rot_err_deg']:.3f} deg, "
            f"translation direction {gt['median_trans_err_deg']:.3f} deg; {auc}"
        )
    dense = results.get("dense")
    if dense:
        mesh = f", mesh of {dense['mesh']['triangles']} triangles" if dense.get("mesh") else ""
        lines.append(f"dense: {dense['fused_points']} fused points from {dense['num_images']} images{mesh}")
    for method in ("splat", "nerf"):
        metrics = results.get(method)
        if metrics:
            extra = f", {metrics['num_gaussians']} Gaussians" if "num_gaussians" in metrics else ""
            lines.append(
                f"{method}: test PSNR {metrics.get('psnr', float('nan')):.2f} dB, "
                f"SSIM {metrics.get('ssim', float('nan')):.4f}{extra}"
            )
    timings = results.get("timings", {})
    if timings:
        lines.append("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    if "report" in results:
        lines.append(f"report: {results['report']}")
    return "\n".join(lines)


def run_demo(out: str | Path, minutes: float = 4.0) -> dict:
    """The main job on the built-in synthetic scene: render it, then `run` on its images against its ground truth."""
    from mapforge.datasets.synthetic import make_scene, write_scene

    out = Path(out)
    scene = out / "scene"
    if not (scene / "sparse_gt").is_dir():
        print("rendering the built-in scene ...")
        write_scene(make_scene(), scene)
    config = RunConfig(
        images=str(scene / "images"),
        output=str(out),
        intrinsics=str(scene / "sparse_gt" / "cameras.txt"),
        ground_truth=str(scene / "sparse_gt"),
        minutes=minutes,
    )
    return run(config)
