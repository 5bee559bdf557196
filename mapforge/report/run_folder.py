"""The output folder of `mapforge run`, read part by part: every part is optional and absent parts read as None.

Layout (what the orchestration writes; see ARCHITECTURE.md):

    OUT/run.toml                     the run's configuration; key `images` is the input image folder
    OUT/timings.json                 {stage: seconds}
    OUT/ground_truth.json            optional: pose evaluation of the built-in scene (see `ground_truth`)
    OUT/sfm/sparse/0/                COLMAP model;  OUT/sfm/points.ply, OUT/sfm/report.json
    OUT/pointmap/sparse/0/           the same from pointmaps (when there is no SfM)
    OUT/splat/sparse/0/              the pose-refined model, when the splat stage optimised poses
    OUT/splat/point_cloud.ply        3DGS PLY;  OUT/splat/scene.splat
    OUT/<method>/metrics.json        test metrics (method: splat, nerf)
    OUT/<method>/history.json        training curve: [{iteration, loss, psnr, num_gaussians, seconds}, ...]
    OUT/<method>/renders/test/*.png  test renders named like the views
    OUT/dense/                       the MVS stage's COLMAP dense workspace (see `mapforge.io.colmap_dense`):
        images/NAME                  undistorted photos;  sparse/ the model of their PINHOLE cameras
        stereo/{depth,normal}_maps/NAME.{geometric,photometric}.bin   COLMAP array files
        fused.ply                    fused cloud (positions, normals, colours);  meshed-poisson.ply its mesh
        report.json                  the stage summary, written last
    OUT/nerf/mesh.ply                the NeRF's mesh (OUT/dense/mesh.ply, OUT/mesh.ply: other meshes)
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mapforge.errors import InputError
from mapforge.io.colmap import model_format, read_model
from mapforge.io.colmap_dense import MAP_KINDS, map_path
from mapforge.io.images import IMAGE_EXTENSIONS
from mapforge.scene import Reconstruction

METHODS = ("splat", "nerf")
MESH_FILES = ("dense/meshed-poisson.ply", "nerf/mesh.ply", "dense/mesh.ply", "mesh.ply")


@dataclass(frozen=True)
class DenseMaps:
    """The depth and normal map files of image `name` in the dense workspace (geometric pass where there is
    one, else photometric; None when missing)."""

    name: str
    depth: Path | None
    normal: Path | None


def world_up(rotations_world_from_cam: np.ndarray) -> np.ndarray:
    """The world's up direction `[3]` estimated from cameras `[N, 3, 3]` (world_from_cam rotations) held roughly
    upright: the mean of their -y axes (OpenCV camera y points down). Falls back to +z when they cancel out."""
    up = -np.asarray(rotations_world_from_cam, dtype=np.float64)[:, :, 1].mean(axis=0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])


def _read_json(path: Path) -> object | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


class RunFolder:
    """Lazy, read-only access to the parts of a run's output folder `root`.

    Raises `InputError` when `root` is not a folder; parts that are missing read as None (or empty).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"run folder {self.root} does not exist")
        self.problems: list[str] = []

    # --- structure from motion -----------------------------------------------------------------------------

    @cached_property
    def model_dir(self) -> Path | None:
        """The COLMAP model folder with the best poses, or None: the splat stage's pose-refined model
        (OUT/splat/sparse/0, written when poses were optimised), else SfM's, else the pointmap stage's."""
        candidates = []
        for stage in ("splat", "sfm", "pointmap"):
            sparse = self.root / stage / "sparse"
            candidates.append(sparse / "0")
            if sparse.is_dir():
                candidates += sorted(p for p in sparse.iterdir() if p.is_dir())
        return next((c for c in candidates if model_format(c) is not None), None)

    @cached_property
    def reconstruction(self) -> Reconstruction | None:
        """The sparse model, or None when there is none or it cannot be read (the reason is added to `problems`)."""
        if self.model_dir is None:
            return None
        try:
            return read_model(self.model_dir)
        except InputError as exc:
            self.problems.append(f"unreadable sparse model: {exc}")
            return None

    @cached_property
    def sfm_report(self) -> dict | None:
        report = _read_json(self.root / "sfm" / "report.json")
        return report if isinstance(report, dict) else None

    def sparse_points(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Sparse points `(xyz [N, 3], rgb [N, 3] uint8 | None)` from the model, else OUT/sfm/points.ply, else None."""
        rec = self.reconstruction
        if rec is not None and rec.points3D:
            return rec.points_xyz(), rec.points_rgb()
        path = self.root / "sfm" / "points.ply"
        if path.is_file():
            from mapforge.io.ply import read_point_cloud

            return read_point_cloud(path)
        return None

    def dense_points(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The MVS cloud `(xyz [N, 3], rgb [N, 3] uint8 | None)` from OUT/dense/fused.ply, or None."""
        path = self.dense_ply
        if path is None:
            return None
        from mapforge.io.ply import read_point_cloud

        return read_point_cloud(path)

    @property
    def dense_ply(self) -> Path | None:
        path = self.root / "dense" / "fused.ply"
        return path if path.is_file() else None

    @property
    def mesh_ply(self) -> Path | None:
        """The first mesh found among `MESH_FILES` (the MVS mesh OUT/dense/meshed-poisson.ply first), or None."""
        return self._first_file(MESH_FILES)

    @property
    def dense_mesh_ply(self) -> Path | None:
        """The MVS stage's mesh (OUT/dense/meshed-poisson.ply, else OUT/dense/mesh.ply), or None."""
        return self._first_file(m for m in MESH_FILES if m.startswith("dense/"))

    def _first_file(self, names) -> Path | None:
        return next((self.root / name for name in names if (self.root / name).is_file()), None)

    # --- multi-view stereo ---------------------------------------------------------------------------------

    @property
    def dense_dir(self) -> Path | None:
        """The MVS workspace OUT/dense, or None."""
        path = self.root / "dense"
        return path if path.is_dir() else None

    @cached_property
    def dense_report(self) -> dict | None:
        """The MVS stage summary OUT/dense/report.json, or None."""
        report = _read_json(self.root / "dense" / "report.json")
        return report if isinstance(report, dict) else None

    def dense_maps(self) -> list[DenseMaps]:
        """The depth and normal maps of the dense workspace, one entry per image that has either, by name."""
        if self.dense_dir is None:
            return []
        names = set()
        for map_type in ("depth", "normal"):
            folder = self.dense_dir / "stereo" / f"{map_type}_maps"
            files = [p.relative_to(folder).as_posix() for p in folder.rglob("*.bin")] if folder.is_dir() else []
            for kind in MAP_KINDS:
                suffix = f".{kind}.bin"
                names |= {file[: -len(suffix)] for file in files if file.endswith(suffix)}
        return [DenseMaps(name, self._dense_map(name, "depth"), self._dense_map(name, "normal"))
                for name in sorted(names)]

    def _dense_map(self, name: str, map_type: str) -> Path | None:
        paths = (map_path(self.dense_dir, map_type, name, kind) for kind in ("geometric", "photometric"))
        return next((path for path in paths if path.is_file()), None)

    @cached_property
    def dense_model(self) -> Reconstruction | None:
        """The undistorted model of the dense workspace (OUT/dense/sparse), or None when absent or unreadable."""
        folder = self.root / "dense" / "sparse"
        if model_format(folder) is None:
            return None
        try:
            return read_model(folder)
        except InputError as exc:
            self.problems.append(f"unreadable dense model: {exc}")
            return None

    def undistorted_image(self, name: str) -> Path | None:
        """The undistorted photo OUT/dense/images/NAME that the maps of image `name` belong to, or None."""
        path = self.root / "dense" / "images" / name
        return path if path.is_file() else None

    # --- images --------------------------------------------------------------------------------------------

    @cached_property
    def config(self) -> dict | None:
        path = self.root / "run.toml"
        if not path.is_file():
            return None
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid TOML ({exc})") from exc

    @cached_property
    def image_dir(self) -> Path | None:
        """The input image folder: `images` of run.toml (relative paths: to the working folder, then to OUT),
        else OUT/images; None when neither exists."""
        recorded = (self.config or {}).get("images")
        if isinstance(recorded, str):
            for candidate in (Path(recorded), self.root / recorded):
                if candidate.is_dir():
                    return candidate
        fallback = self.root / "images"
        return fallback if fallback.is_dir() else None

    def image_path(self, name: str) -> Path | None:
        """The file of image `name` (a model image name) in the image folder, or None."""
        if self.image_dir is None:
            return None
        path = self.image_dir / name
        return path if path.is_file() else None

    def input_image_count(self) -> int | None:
        """Number of image files in the input folder (recursively), or None without a folder."""
        if self.image_dir is None:
            return None
        return sum(1 for p in self.image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())

    # --- learned scenes ------------------------------------------------------------------------------------

    @property
    def gaussians_ply(self) -> Path | None:
        path = self.root / "splat" / "point_cloud.ply"
        return path if path.is_file() else None

    @property
    def splat_file(self) -> Path | None:
        path = self.root / "splat" / "scene.splat"
        return path if path.is_file() else None

    def gaussians(self):
        """The trained Gaussians (`mapforge.io.gaussians.GaussianData`) or None."""
        from mapforge.io.gaussians import read_gaussian_ply, read_splat

        if self.gaussians_ply is not None:
            return read_gaussian_ply(self.gaussians_ply)
        if self.splat_file is not None:
            return read_splat(self.splat_file)
        return None

    def methods(self) -> list[str]:
        """The novel-view methods that left output (of `METHODS`)."""
        return [m for m in METHODS if (self.root / m).is_dir()]

    def metrics(self, method: str) -> dict | None:
        metrics = _read_json(self.root / method / "metrics.json")
        return metrics if isinstance(metrics, dict) else None

    def history(self, method: str) -> list[dict] | None:
        """The training curve of `method`: a list of dicts (iteration, loss, psnr, ...), or None."""
        history = _read_json(self.root / method / "history.json")
        if isinstance(history, dict):  # tolerate {"history": [...]}
            history = history.get("history")
        if not isinstance(history, list):
            return None
        return [entry for entry in history if isinstance(entry, dict)] or None

    def test_renders(self, method: str) -> list[Path]:
        """Test renders of `method`, sorted by name."""
        folder = self.root / method / "renders" / "test"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))

    def photo_for_render(self, render: Path) -> Path | None:
        """The input photo a test render shows: an image of the model or folder with the same stem."""
        stem = render.stem
        rec = self.reconstruction
        names = [image.name for image in rec.images.values()] if rec is not None else []
        for name in names:
            if Path(name).stem == stem or Path(name).with_suffix("").as_posix().replace("/", "_") == stem:
                path = self.image_path(name)
                if path is not None:
                    return path
        if self.image_dir is not None:
            for ext in IMAGE_EXTENSIONS:
                for candidate in (self.image_dir / f"{stem}{ext}", self.image_dir / f"{stem}{ext.upper()}"):
                    if candidate.is_file():
                        return candidate
        return None

    # --- run-level files ----------------------------------------------------------------------------------

    @cached_property
    def timings(self) -> dict[str, float] | None:
        timings = _read_json(self.root / "timings.json")
        if not isinstance(timings, dict):
            return None
        return {str(k): float(v) for k, v in timings.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    @cached_property
    def ground_truth(self) -> dict | None:
        """OUT/ground_truth.json: `camera_centers` {image name: [x, y, z]} (ground-truth camera centres) and any
        pose-evaluation fields (`PoseEvaluation`'s scalars and dicts: num_registered, ate_rmse, accuracy, ...)."""
        truth = _read_json(self.root / "ground_truth.json")
        return truth if isinstance(truth, dict) else None

    def ground_truth_centers(self) -> dict[str, np.ndarray]:
        """Ground-truth camera centres `{name: [3]}` (empty when unknown)."""
        centers = (self.ground_truth or {}).get("camera_centers") or {}
        out = {}
        if isinstance(centers, dict):
            for name, xyz in centers.items():
                try:
                    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1)
                except (TypeError, ValueError):
                    continue
                if xyz.shape == (3,) and np.isfinite(xyz).all():
                    out[str(name)] = xyz
        return out
