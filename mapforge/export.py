"""`mapforge export`: a run folder's results in the formats other tools read, and a fly-through video.

Formats: `colmap` (the sparse model, binary or text), `nerfstudio` (transforms.json + images + sparse points, a
folder nerfstudio trains from), `ply` (the MVS cloud when there is one, else the 3DGS PLY when Gaussians exist,
else the sparse points), `splat` (antimatter15 `.splat`), `mesh` (a mesh the run produced, the MVS mesh first).
The video follows a smooth path through the registered cameras, rendered from the trained Gaussians.

Like the orchestration, export sits above the stages and may use them (the splat rasterizer for the video).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.io.atomic import atomic_path
from mapforge.io.colmap import write_model
from mapforge.report.run_folder import MESH_FILES, RunFolder
from mapforge.scene import Reconstruction

FORMATS = ("colmap", "nerfstudio", "ply", "splat", "mesh")
_SUFFIXES = {"ply": ".ply", "splat": ".splat", "mesh": ".ply"}


def _require_model(run: RunFolder) -> Reconstruction:
    rec = run.reconstruction
    if rec is None and run.problems:
        raise InputError(run.problems[0])
    if rec is None:
        raise InputError(f"{run.root}: no sparse model (sfm/sparse/0); run structure from motion first")
    if not rec.images:
        raise InputError(f"{run.model_dir}: the sparse model has no registered images")
    return rec


def _check_suffix(dest: Path, fmt: str) -> None:
    suffix = _SUFFIXES.get(fmt)
    if suffix and dest.suffix.lower() != suffix:
        raise InputError(f"--format {fmt} writes a {suffix} file; got destination {dest}")


def export_colmap(out_dir: str | Path, dest: str | Path, text: bool = False) -> Path:
    """Write the run's sparse model to the folder `dest` (COLMAP binary, or text with `text`). Returns `dest`."""
    rec = _require_model(RunFolder(out_dir))
    return write_model(rec, dest, "txt" if text else "bin")


def export_nerfstudio(out_dir: str | Path, dest: str | Path) -> Path:
    """Write a nerfstudio data folder `dest`: `transforms.json` (nerfstudio flavour, OpenGL camera-to-world
    matrices, intrinsics with distortion), `images/` (copies of the registered photos, referenced by relative
    paths) and `sparse_pc.ply` (the sparse points, in the same world frame, named by the `ply_file_path` field
    that nerfstudio's splatfacto initialises from). Train with `ns-train splatfacto --data DEST`. Returns `dest`."""
    from mapforge.io.ply import write_point_cloud
    from mapforge.io.transforms_json import write_transforms

    run = RunFolder(out_dir)
    rec = _require_model(run)
    if run.image_dir is None:
        raise InputError(f"{run.root}: the input images are not found (no 'images' in run.toml, no OUT/images)")
    order = sorted(rec.images, key=lambda i: rec.images[i].name)
    sources = []
    for image_id in order:
        source = run.image_path(rec.images[image_id].name)
        if source is None:
            raise InputError(f"image {rec.images[image_id].name} of the model not found in {run.image_dir}")
        sources.append(source)
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        (tmp / "images").mkdir(parents=True)
        copies = []
        for image_id, source in zip(order, sources):
            copy = tmp / "images" / rec.images[image_id].name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
            copies.append(copy)
        extra = {}
        if rec.points3D:
            write_point_cloud(tmp / "sparse_pc.ply", rec.points_xyz(), rec.points_rgb())
            extra["ply_file_path"] = "sparse_pc.ply"
        try:
            write_transforms(
                tmp / "transforms.json",
                copies,
                [rec.cameras[rec.images[i].camera_id] for i in order],
                [rec.images[i].cam_from_world for i in order],
                flavour="nerfstudio",
                extra=extra,
            )
        except ValueError as exc:
            raise InputError(f"cannot export to nerfstudio: {exc}") from exc
    return dest


def export_ply(out_dir: str | Path, dest: str | Path) -> tuple[Path, str]:
    """Write the run's point result to the PLY file `dest`: the fused MVS cloud (dense/fused.ply, with its
    normals and colours) when the run has one, else the trained Gaussians (standard 3DGS layout; `--format splat`
    exports them from any run), else the sparse points. Returns `(dest, what was written)`."""
    from mapforge.io.gaussians import read_gaussian_ply, write_gaussian_ply
    from mapforge.io.ply import read_point_cloud, write_point_cloud

    run, dest = RunFolder(out_dir), Path(dest)
    _check_suffix(dest, "ply")
    if run.dense_ply is not None:
        xyz, rgb, normals = read_point_cloud(run.dense_ply, normals=True)
        write_point_cloud(dest, xyz, rgb, normals)
        return dest, f"{len(xyz)} fused MVS points"
    if run.gaussians_ply is not None:
        data = read_gaussian_ply(run.gaussians_ply)
        write_gaussian_ply(dest, data)
        return dest, f"{len(data)} Gaussians (3DGS PLY)"
    points = run.sparse_points()
    if points is None or len(points[0]) == 0:
        raise InputError(f"{run.root}: nothing to export as PLY (no Gaussians, no dense cloud, no sparse points)")
    write_point_cloud(dest, points[0], points[1])
    return dest, f"{len(points[0])} sparse points"


def export_splat(out_dir: str | Path, dest: str | Path) -> tuple[Path, str]:
    """Write the trained Gaussians as an antimatter15 `.splat` file `dest`. Returns `(dest, description)`."""
    from mapforge.io.gaussians import read_gaussian_ply, write_splat

    run, dest = RunFolder(out_dir), Path(dest)
    _check_suffix(dest, "splat")
    if run.gaussians_ply is None:
        raise InputError(f"{run.root}: no trained Gaussians (splat/point_cloud.ply); train the splat stage first")
    data = read_gaussian_ply(run.gaussians_ply)
    write_splat(dest, data)
    return dest, f"{len(data)} Gaussians (.splat)"


def export_mesh(out_dir: str | Path, dest: str | Path) -> tuple[Path, str]:
    """Write the run's mesh (the first of `MESH_FILES`: the MVS stage's dense/meshed-poisson.ply, then
    nerf/mesh.ply, dense/mesh.ply, mesh.ply) to the PLY file `dest`."""
    from mapforge.io.ply import read_mesh, write_mesh

    run, dest = RunFolder(out_dir), Path(dest)
    _check_suffix(dest, "mesh")
    if run.mesh_ply is None:
        raise InputError(f"{run.root}: the run has no mesh (looked for {', '.join(MESH_FILES)})")
    vertices, faces, colors = read_mesh(run.mesh_ply)
    write_mesh(dest, vertices, faces, colors)
    return dest, f"mesh with {len(vertices)} vertices and {len(faces)} triangles"


def export(out_dir: str | Path, fmt: str, dest: str | Path, text: bool = False) -> tuple[Path, str]:
    """Export run folder `out_dir` as `fmt` (one of `FORMATS`) to `dest`. Returns `(dest, description)`."""
    if fmt == "colmap":
        path = export_colmap(out_dir, dest, text)
        return path, f"COLMAP model ({'text' if text else 'binary'})"
    if fmt == "nerfstudio":
        path = export_nerfstudio(out_dir, dest)
        return path, "nerfstudio data folder (transforms.json, images/)"
    if fmt == "ply":
        return export_ply(out_dir, dest)
    if fmt == "splat":
        return export_splat(out_dir, dest)
    if fmt == "mesh":
        return export_mesh(out_dir, dest)
    raise InputError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")


# ---------------------------------------------------------------------------------------------------------------
# Video


@dataclass
class VideoConfig:
    """The fly-through video.

    Attributes:
        frames_per_camera: frames between consecutive registered cameras (10: at 30 fps a third of a second each).
        fps: frames per second (30, the common video rate).
        max_size: longest image side in pixels (640: a few frames per second on a laptop CPU).
        background: `[3]` colour behind the Gaussians (black, as 3DGS renders unmasked scenes).
        max_frames: cap on the number of frames (600: 20 s at 30 fps, however many cameras there are).
    """

    frames_per_camera: int = 10
    fps: int = 30
    max_size: int = 640
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    max_frames: int = 600


def camera_path(poses: list[Rigid3], num_frames: int) -> list[Rigid3]:
    """`num_frames` `cam_from_world` poses through `poses` (in order): centres on a Catmull-Rom spline through
    the camera centres, rotations slerped between consecutive cameras. Needs at least 2 poses."""
    from scipy.spatial.transform import Rotation, Slerp

    if len(poses) < 2:
        raise InputError(f"a camera path needs at least 2 registered cameras, got {len(poses)}")
    centers = np.stack([-p.rotation.T @ p.translation for p in poses])
    world_from_cam = Rotation.from_matrix(np.stack([p.rotation.T for p in poses]))
    times = np.arange(len(poses), dtype=np.float64)
    slerp = Slerp(times, world_from_cam)
    t = np.linspace(0.0, len(poses) - 1, max(int(num_frames), 2))
    padded = np.concatenate([2 * centers[:1] - centers[1:2], centers, 2 * centers[-1:] - centers[-2:-1]])
    segment = np.minimum(np.floor(t).astype(int), len(poses) - 2)
    u = (t - segment)[:, None]
    p0, p1, p2, p3 = (padded[segment + k] for k in range(4))
    positions = 0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * u**3)
    rotations = slerp(t).as_matrix()
    out = []
    for rotation, position in zip(rotations, positions):
        cam_from_world_rotation = rotation.T
        out.append(Rigid3(cam_from_world_rotation, -cam_from_world_rotation @ position))
    return out


def render_gaussians(
    gaussians, K: np.ndarray, width: int, height: int, cam_from_world: Rigid3, background: np.ndarray | None = None
) -> np.ndarray:
    """Render `gaussians` (`GaussianData`) into a pinhole view: `K [3, 3]`, size `width` x `height`,
    `cam_from_world`. Returns `[H, W, 3]` float32 in [0, 1]."""
    import torch

    from mapforge.splat.rasterize import rasterize
    from mapforge.splat.sh import sh_to_color

    means = torch.from_numpy(gaussians.means)
    center = torch.from_numpy((-cam_from_world.rotation.T @ cam_from_world.translation).astype(np.float32))
    colors = sh_to_color(torch.from_numpy(gaussians.sh), means, center, gaussians.degree)
    with torch.no_grad():
        image, _, _, _ = rasterize(
            means,
            torch.from_numpy(gaussians.quats),
            torch.exp(torch.from_numpy(gaussians.log_scales)),
            torch.sigmoid(torch.from_numpy(gaussians.opacity_logits)),
            colors,
            torch.from_numpy(cam_from_world.matrix4()).float(),
            torch.from_numpy(np.asarray(K, dtype=np.float32)),
            int(width),
            int(height),
            background=None if background is None else torch.as_tensor(background, dtype=torch.float32),
        )
    return image.clamp(0.0, 1.0).numpy()


def video_camera(rec: Reconstruction, image_id: int, max_size: int) -> tuple[np.ndarray, int, int]:
    """The pinhole intrinsics `(K [3, 3], width, height)` of image `image_id`'s camera, shrunk so its longest side
    is at most `max_size`, with even sizes (H.264 with 4:2:0 chroma needs them). Distortion is dropped."""
    camera = rec.cameras[rec.images[image_id].camera_id]
    factor = min(1.0, max_size / max(camera.width, camera.height))
    width = max(2, 2 * int(round(camera.width * factor / 2)))
    height = max(2, 2 * int(round(camera.height * factor / 2)))
    K = camera.K.copy()
    K[0] *= width / camera.width
    K[1] *= height / camera.height
    return K, width, height


def export_video(out_dir: str | Path, dest: str | Path, config: VideoConfig | None = None) -> tuple[Path, str]:
    """Render an H.264 `.mp4` fly-through of the trained Gaussians along the registered cameras (ordered by image
    name, as photos are usually named in capture order). Returns `(dest, description)`."""
    import imageio_ffmpeg
    from tqdm import tqdm

    config = config or VideoConfig()
    run, dest = RunFolder(out_dir), Path(dest)
    if dest.suffix.lower() != ".mp4":
        raise InputError(f"the video is written as .mp4; got destination {dest}")
    rec = _require_model(run)
    gaussians = run.gaussians()
    if gaussians is None:
        raise InputError(f"{run.root}: the video needs trained Gaussians (splat/point_cloud.ply); train the splat stage")
    order = sorted(rec.images, key=lambda i: rec.images[i].name)
    num_frames = min(config.max_frames, config.frames_per_camera * (len(order) - 1) + 1)
    path = camera_path([rec.images[i].cam_from_world for i in order], num_frames)
    K, width, height = video_camera(rec, order[0], config.max_size)
    background = np.asarray(config.background, dtype=np.float32)
    with atomic_path(dest) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (width, height), fps=config.fps, codec="libx264", macro_block_size=2,
            output_params=["-f", "mp4", "-movflags", "+faststart"],
        )
        writer.send(None)
        try:
            for pose in tqdm(path, desc="video", unit="frame"):
                image = render_gaussians(gaussians, K, width, height, pose, background)
                writer.send(np.ascontiguousarray(np.round(image * 255).astype(np.uint8)))
        finally:
            writer.close()
    return dest, f"{len(path)} frames of {width}x{height} at {config.fps} fps"
