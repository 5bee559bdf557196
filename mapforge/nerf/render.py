"""Rendering a trained model: the views of a data set split (with PSNR/SSIM), or a camera path to PNGs or a video."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.io.atomic import atomic_path, write_json
from mapforge.metrics.lpips import load_lpips
from mapforge.nerf.evaluate import evaluate, render_image
from mapforge.nerf.setup import SceneSetup
from mapforge.nerf.trainer import load_checkpoint
from mapforge.scene import Camera
from mapforge.training.checkpoint import find_checkpoint, read_run_config

VIDEO_FORMATS = (".mp4", ".gif")


def _checkpoint_and_config(run_dir: str | Path) -> tuple[Path, dict]:
    checkpoint = find_checkpoint(run_dir, "mapforge nerf train")
    return checkpoint, read_run_config(checkpoint.parent)


def render_model(
    run_dir: str | Path,
    data: str | Path | None,
    out_dir: str | Path,
    split: str = "test",
    downscale: int | None = None,
    device: str = "auto",
    lpips_weights: Sequence[str | Path] = (),
) -> dict:
    """Render every view of `split` of the data set `data` (default: the one recorded in the run's `config.json`)
    with the model trained in `run_dir` into `out_dir`: one PNG per view named like the view's image (see
    `mapforge.training.evaluation.render_names`), at the trained resolution (`downscale` defaults to the training
    one), and `metrics.json` (PSNR/SSIM against the images, and LPIPS with `lpips_weights`: one combined file, or
    the AlexNet and the linear weights files, see `mapforge.metrics.lpips`). Returns the metrics."""
    from mapforge.datasets import load_dataset

    checkpoint, trained = _checkpoint_and_config(run_dir)
    lpips = load_lpips(lpips_weights) if lpips_weights else None
    data = data if data is not None else trained.get("data")
    if data is None:
        raise InputError(f"{run_dir}: no data set recorded in config.json; give --data")
    model, config, setup, _ = load_checkpoint(checkpoint, device)
    dataset = load_dataset(data, downscale=downscale or int(trained.get("downscale", 1)))
    if split not in dataset.split:
        raise InputError(f"data set {dataset.name} has no split {split!r} (it has: {', '.join(dataset.split)})")
    if dataset.cam_from_world is None:
        raise InputError(f"data set {dataset.name} has no camera poses")
    out_dir = Path(out_dir)
    if lpips is not None:
        lpips = lpips.to(next(model.parameters()).device)
    metrics = evaluate(model, setup, dataset, dataset.subset(split), config.image_scale, out_dir, lpips=lpips)
    metrics.update({"split": split, "model": config.model, "checkpoint": str(checkpoint)})
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def orbit_path(cams_from_world: list[Rigid3], centre: np.ndarray, count: int = 120) -> list[Rigid3]:
    """`count` poses on a circle around `centre [3]` through the cameras' mean distance and height, looking at
    `centre`, with the cameras' mean up direction (the mean of their -y axes) as the circle's axis."""
    centres = np.stack([-p.rotation.T @ p.translation for p in cams_from_world])
    up = -np.mean([p.rotation[1] for p in cams_from_world], axis=0)
    up /= max(np.linalg.norm(up), 1e-12)
    offsets = centres - centre
    height = float(np.mean(offsets @ up))
    radial = offsets - np.outer(offsets @ up, up)
    radius = float(np.mean(np.linalg.norm(radial, axis=1)))
    first = radial[0] / max(np.linalg.norm(radial[0]), 1e-12)
    second = np.cross(up, first)
    poses = []
    for k in range(count):
        angle = 2 * math.pi * k / count
        eye = centre + height * up + radius * (math.cos(angle) * first + math.sin(angle) * second)
        poses.append(_look_at(eye, centre, up))
    return poses


def spiral_path(cams_from_world: list[Rigid3], count: int = 120, radius_fraction: float = 0.5) -> list[Rigid3]:
    """`count` poses for a forward-facing capture: the mean camera orientation, its centre moving on a circle in
    the image plane of radius `radius_fraction` times the spread of the camera centres, two turns with a
    forward-backward bob (as LLFF's spiral renders)."""
    rotations = np.stack([p.rotation for p in cams_from_world])
    centres = np.stack([-p.rotation.T @ p.translation for p in cams_from_world])
    mean = Rigid3(_mean_rotation(rotations), np.zeros(3))
    axes = mean.rotation  # rows: camera x, y, z in world coordinates
    spread = np.abs((centres - centres.mean(0)) @ axes.T).max(0)
    poses = []
    for k in range(count):
        angle = 4 * math.pi * k / count
        offset = radius_fraction * (spread[0] * math.cos(angle) * axes[0] + spread[1] * math.sin(angle) * axes[1]
                                    + spread[2] * math.sin(angle / 2) * axes[2])
        eye = centres.mean(0) + offset
        poses.append(Rigid3(axes, -axes @ eye))
    return poses


def _mean_rotation(rotations: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(rotations.sum(0))
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        rotation = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    return rotation


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> Rigid3:
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= max(np.linalg.norm(x), 1e-12)
    y = np.cross(z, x)
    rotation = np.stack([x, y, z])
    return Rigid3(rotation, -rotation @ eye)


def render_path(
    model: torch.nn.Module | str | Path,
    cameras: Camera | list[Camera],
    cams_from_world: list[Rigid3],
    out: str | Path,
    setup: SceneSetup | None = None,
    fps: int = 30,
    device: str = "auto",
) -> Path:
    """Render the poses `cams_from_world` with `cameras` (one, or one per pose) into `out`: a `.mp4` (H.264 via
    imageio-ffmpeg) or `.gif` file, or else a folder of `00000.png`, `00001.png`, ... `model` is a trained model
    (then `setup` is required) or a training output folder / checkpoint file. Returns `out`."""
    from mapforge.io.images import write_image

    if not isinstance(model, torch.nn.Module):
        checkpoint, _ = _checkpoint_and_config(model)
        model, _, setup, _ = load_checkpoint(checkpoint, device)
    if setup is None:
        raise InputError("render_path needs the scene set-up of a model given as a module")
    if not cams_from_world:
        raise InputError("the camera path is empty")
    if isinstance(cameras, Camera):
        cameras = [cameras] * len(cams_from_world)
    if len(cameras) != len(cams_from_world):
        raise InputError(f"{len(cameras)} cameras for {len(cams_from_world)} poses")
    out = Path(out)
    frames = (render_image(model, setup, camera, pose)["rgb"] for camera, pose in zip(cameras, cams_from_world))
    frames = tqdm(frames, total=len(cams_from_world), desc="rendering path", unit="frame", leave=False, disable=None)
    suffix = out.suffix.lower()
    with atomic_path(out) as tmp:
        if suffix == ".mp4":
            _write_mp4(tmp, frames, fps)
        elif suffix == ".gif":
            import imageio.v3 as iio

            iio.imwrite(tmp, [_to_uint8(f) for f in frames], extension=".gif", duration=1000 / fps, loop=0)
        else:
            tmp.mkdir(parents=True)
            for k, frame in enumerate(frames):
                write_image(tmp / f"{k:05d}.png", frame)
    return out


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    return np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)


def _write_mp4(path: Path, frames, fps: int) -> None:
    import imageio_ffmpeg

    writer = None
    for frame in frames:
        image = _to_uint8(frame)
        # H.264 with yuv420p needs even sizes: pad odd sizes by repeating the last row/column.
        image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
        if writer is None:
            writer = imageio_ffmpeg.write_frames(
                str(path), (image.shape[1], image.shape[0]), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                macro_block_size=1, output_params=["-f", "mp4"], ffmpeg_log_level="error",
            )
            writer.send(None)
        writer.send(np.ascontiguousarray(image))
    if writer is not None:
        writer.close()


def default_path(setup: SceneSetup, cams_from_world: list[Rigid3], count: int = 120) -> list[Rigid3]:
    """A camera path suited to the scene: a spiral for forward-facing (NDC) scenes, else an orbit around the
    centre of the scene box."""
    if setup.ndc:
        return spiral_path(cams_from_world, count)
    return orbit_path(cams_from_world, 0.5 * (setup.aabb[0] + setup.aabb[1]), count)


def render_run_path(
    run_dir: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    frames: int = 120,
    fps: int = 30,
    downscale: int | None = None,
    device: str = "auto",
) -> Path:
    """Render `default_path` around the training cameras of `data` (default: the run's data set) with the model
    in `run_dir` to `out` (see `render_path`), with the first training camera at the trained resolution."""
    from mapforge.datasets import load_dataset

    checkpoint, trained = _checkpoint_and_config(run_dir)
    data = data if data is not None else trained.get("data")
    if data is None:
        raise InputError(f"{run_dir}: no data set recorded in config.json; give --data")
    if frames < 1:
        raise InputError(f"a camera path needs at least one frame, got {frames}")
    model, config, setup, _ = load_checkpoint(checkpoint, device)
    dataset = load_dataset(data, downscale=downscale or int(trained.get("downscale", 1)))
    if dataset.cam_from_world is None:
        raise InputError(f"data set {dataset.name} has no camera poses")
    train = dataset.split["train"]
    camera = dataset.cameras[train[0]]
    if config.image_scale != 1.0:
        camera = camera.scaled(config.image_scale)
    poses = default_path(setup, [dataset.cam_from_world[i] for i in train], frames)
    return render_path(model, camera, poses, out, setup, fps)
