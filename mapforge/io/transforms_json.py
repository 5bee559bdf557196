"""`transforms.json` files of nerfstudio, instant-ngp and the original NeRF Blender scenes.

All three store per frame a `transform_matrix`: camera-to-world in OpenGL/Blender camera axes (x right, y up,
z back). This module is the one place where that becomes mapforge's `cam_from_world` in OpenCV axes (x right,
y down, z forward): negate the y and z columns of the rotation, then invert.

Intrinsics come as `fl_x, fl_y, cx, cy, w, h` (+ `k1..k4, p1, p2`, `camera_model` "OPENCV" or "OPENCV_FISHEYE"),
globally or per frame (per frame wins), or only as `camera_angle_x` (Blender: focal = 0.5 * W / tan(angle / 2),
principal point at the image centre, size read from the image files). nerfstudio generates the ray of pixel
(i, j) through (i + 0.5, j + 0.5) with `cx, cy` copied unchanged from COLMAP, so its `cx, cy` follow COLMAP's
convention (top-left pixel centre at (0.5, 0.5)) exactly like mapforge's; instant-ngp's colmap2nerf copies them
the same way. Values are therefore read and written without any half-pixel shift.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.io.atomic import write_json
from mapforge.io.images import IMAGE_EXTENSIONS, image_size
from mapforge.scene import Camera, check_camera, check_finite

FLAVOURS = ("nerfstudio", "instant-ngp", "blender")
# Flips y and z: OpenGL camera axes <-> OpenCV camera axes (its own inverse).
_GL_FROM_CV = np.diag([1.0, -1.0, -1.0])
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_INTRINSIC_KEYS = (
    "fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y", "camera_model", "is_fisheye", *_DISTORTION_KEYS
)
# nerfstudio accepts these COLMAP model names and reads k1..k4, p1, p2 whatever the name says.
_PERSPECTIVE_NAMES = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


@dataclass
class TransformsData:
    """What a transforms.json describes, in mapforge conventions.

    Attributes:
        image_paths: one absolute image path per frame (Blender's extension-less paths resolved on disk).
        cameras: one `Camera` per frame (frames with identical intrinsics share one object).
        cam_from_world: one pose per frame, OpenCV camera axes.
        flavour: "nerfstudio", "instant-ngp" or "blender" (how the file was recognised).
        metadata: the other top-level fields (aabb_scale, applied_transform, train_filenames, ...), as read.
    """

    image_paths: list[Path]
    cameras: list[Camera]
    cam_from_world: list[Rigid3]
    flavour: str
    metadata: dict = field(default_factory=dict)


def cam_from_world_from_opengl(transform_matrix: np.ndarray) -> Rigid3:
    """A `[4, 4]` or `[3, 4]` camera-to-world matrix in OpenGL camera axes -> `cam_from_world` in OpenCV axes."""
    matrix = np.asarray(transform_matrix, dtype=np.float64)
    world_from_cam = Rigid3(matrix[:3, :3] @ _GL_FROM_CV, matrix[:3, 3])
    return world_from_cam.inverse()


def opengl_from_cam_from_world(cam_from_world: Rigid3) -> np.ndarray:
    """`cam_from_world` (OpenCV axes) -> the `[4, 4]` camera-to-world matrix in OpenGL axes that transforms.json holds."""
    world_from_cam = cam_from_world.inverse()
    matrix = np.eye(4)
    matrix[:3, :3] = world_from_cam.rotation @ _GL_FROM_CV
    matrix[:3, 3] = world_from_cam.translation
    return matrix


def _number(source: dict, key: str, where: str, path: Path) -> float:
    value = source[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{path}: field {key!r} of {where} must be a finite number, got {value!r}")
    return float(value)


def _rigid_from_frame(frame: dict, index: int, path: Path) -> Rigid3:
    if "transform_matrix" not in frame:
        raise InputError(f"{path}: frame {index} has no 'transform_matrix'")
    try:
        matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: 'transform_matrix' of frame {index} is not a numeric matrix") from exc
    if matrix.shape not in ((4, 4), (3, 4)):
        raise InputError(f"{path}: 'transform_matrix' of frame {index} must be a 4x4 or 3x4 matrix, got shape {matrix.shape}")
    check_finite(matrix, f"the transform_matrix of frame {index}", str(path))
    rotation = matrix[:3, :3]
    if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3 or np.linalg.det(rotation) <= 0:
        raise InputError(f"{path}: 'transform_matrix' of frame {index} is not a rigid transform (rotation is not orthonormal)")
    # Files store float32-rounded matrices; snap to the nearest rotation so quaternions and inverses stay exact.
    u, _, vt = np.linalg.svd(rotation)
    matrix = matrix.copy()
    matrix[:3, :3] = u @ vt
    return cam_from_world_from_opengl(matrix)


def _resolve_image(root: Path, file_path: str, index: int, path: Path) -> Path:
    candidate = (root / file_path).resolve()
    if candidate.suffix.lower() in IMAGE_EXTENSIONS:
        return candidate
    # Blender scenes omit the extension ("./train/r_0"); look for the file on disk.
    for extension in (".png", *IMAGE_EXTENSIONS):
        for suffix in (extension, extension.upper()):
            with_suffix = candidate.with_name(candidate.name + suffix)
            if with_suffix.is_file():
                return with_suffix
    raise InputError(f"{path}: image of frame {index} ({file_path!r}) not found (tried common image extensions)")


def _camera_from_fields(fields: dict, image_path: Path, index: int, path: Path) -> Camera:
    where = f"frame {index} (or the top level)"
    if "w" in fields and "h" in fields:
        width, height = int(_number(fields, "w", where, path)), int(_number(fields, "h", where, path))
    else:
        width, height = image_size(image_path)
    if "fl_x" in fields:
        fx = _number(fields, "fl_x", where, path)
    elif "camera_angle_x" in fields:
        fx = 0.5 * width / math.tan(0.5 * _number(fields, "camera_angle_x", where, path))
    else:
        raise InputError(f"{path}: no focal length for frame {index}: need 'fl_x' or 'camera_angle_x'")
    if "fl_y" in fields:
        fy = _number(fields, "fl_y", where, path)
    elif "camera_angle_y" in fields and "fl_x" not in fields:
        fy = 0.5 * height / math.tan(0.5 * _number(fields, "camera_angle_y", where, path))
    else:
        fy = fx
    cx = _number(fields, "cx", where, path) if "cx" in fields else 0.5 * width
    cy = _number(fields, "cy", where, path) if "cy" in fields else 0.5 * height
    dist = {key: _number(fields, key, where, path) if key in fields else 0.0 for key in _DISTORTION_KEYS}
    model_name = fields.get("camera_model", "OPENCV_FISHEYE" if fields.get("is_fisheye") else "OPENCV")
    if model_name == "OPENCV_FISHEYE":
        return Camera("OPENCV_FISHEYE", width, height, [fx, fy, cx, cy, dist["k1"], dist["k2"], dist["k3"], dist["k4"]])
    if model_name not in _PERSPECTIVE_NAMES:
        raise InputError(f"{path}: camera_model {model_name!r} is not supported (use OPENCV or OPENCV_FISHEYE)")
    if dist["k4"] != 0.0:
        raise InputError(
            f"{path}: frame {index}: an r^8 radial term (k4) with camera_model {model_name} has no COLMAP equivalent"
        )
    if dist["k3"] != 0.0:
        params = [fx, fy, cx, cy, dist["k1"], dist["k2"], dist["p1"], dist["p2"], dist["k3"], 0.0, 0.0, 0.0]
        return Camera("FULL_OPENCV", width, height, params)
    if any(dist[key] != 0.0 for key in ("k1", "k2", "p1", "p2")):
        return Camera("OPENCV", width, height, [fx, fy, cx, cy, dist["k1"], dist["k2"], dist["p1"], dist["p2"]])
    return Camera("PINHOLE", width, height, [fx, fy, cx, cy])


def _flavour_of(meta: dict, frames: list) -> str:
    has_focal = "fl_x" in meta or any(isinstance(f, dict) and "fl_x" in f for f in frames)
    if not has_focal:
        return "blender"
    if "aabb_scale" in meta or "camera_angle_x" in meta:
        return "instant-ngp"
    return "nerfstudio"


def read_transforms(path: str | Path) -> TransformsData:
    """Read a nerfstudio / instant-ngp / Blender `transforms*.json`.

    Image paths are resolved relative to the file's folder. Raises `InputError` naming the file and the field
    for unreadable JSON, missing fields, missing images (Blender, whose sizes come from the images) or
    non-rigid matrices.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"transforms file not found: {path}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise InputError(f"{path}: expected a JSON object at the top level")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{path}: field 'frames' is missing or empty")
    flavour = _flavour_of(meta, frames)
    global_fields = {key: meta[key] for key in _INTRINSIC_KEYS if key in meta}
    root = path.parent
    image_paths, cameras, poses = [], [], []
    shared: dict[tuple, Camera] = {}
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise InputError(f"{path}: frame {index} is not a JSON object")
        if not isinstance(frame.get("file_path"), str):
            raise InputError(f"{path}: frame {index} has no 'file_path' string")
        image_path = _resolve_image(root, frame["file_path"], index, path)
        fields = {**global_fields, **{key: frame[key] for key in _INTRINSIC_KEYS if key in frame}}
        camera = _camera_from_fields(fields, image_path, index, path)
        check_camera(camera, f"the camera of frame {index}", str(path))
        key = (camera.model, camera.width, camera.height, tuple(camera.params))
        image_paths.append(image_path)
        cameras.append(shared.setdefault(key, camera))
        poses.append(_rigid_from_frame(frame, index, path))
    metadata = {key: value for key, value in meta.items() if key != "frames" and key not in _INTRINSIC_KEYS}
    return TransformsData(image_paths, cameras, poses, flavour, metadata)


def _intrinsic_fields(camera: Camera, flavour: str) -> dict:
    """transforms.json intrinsics of `camera`; ValueError when the format cannot hold its model."""
    p = camera.params
    model = camera.model
    fields: dict = {"w": camera.width, "h": camera.height}
    if model == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        dist = {}
    elif model == "PINHOLE":
        fx, fy, cx, cy = p
        dist = {}
    elif model in ("SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        dist = {"k1": p[3], "k2": p[4] if model == "RADIAL" else 0.0}
    elif model == "OPENCV":
        fx, fy, cx, cy = p[:4]
        dist = {"k1": p[4], "k2": p[5], "p1": p[6], "p2": p[7]}
    elif model == "FULL_OPENCV" and not p[9:].any():
        fx, fy, cx, cy = p[:4]
        dist = {"k1": p[4], "k2": p[5], "p1": p[6], "p2": p[7], "k3": p[8]}
    elif model == "OPENCV_FISHEYE":
        fx, fy, cx, cy = p[:4]
        dist = {"k1": p[4], "k2": p[5], "k3": p[6], "k4": p[7]}
    else:
        raise ValueError(f"camera model {model} cannot be written to transforms.json (use an OPENCV-family camera)")
    if flavour == "blender":
        if dist and any(v != 0.0 for v in dist.values()):
            raise ValueError("the Blender format holds no lens distortion; undistort the images first")
        centred = math.isclose(cx, camera.width / 2, abs_tol=1e-6) and math.isclose(cy, camera.height / 2, abs_tol=1e-6)
        if not (math.isclose(fx, fy, rel_tol=1e-6) and centred):
            raise ValueError("the Blender format needs square pixels and a centred principal point; use nerfstudio")
        return {"camera_angle_x": 2.0 * math.atan(0.5 * camera.width / fx)}
    fields.update({"fl_x": float(fx), "fl_y": float(fy), "cx": float(cx), "cy": float(cy)})
    fields["camera_model"] = "OPENCV_FISHEYE" if model == "OPENCV_FISHEYE" else "OPENCV"
    for key in _DISTORTION_KEYS:
        if key in dist:
            fields[key] = float(dist[key])
        elif flavour == "nerfstudio" or key in ("k1", "k2", "p1", "p2"):
            fields[key] = 0.0
    if flavour == "instant-ngp":
        fields["camera_angle_x"] = 2.0 * math.atan(0.5 * camera.width / fx)
        fields["camera_angle_y"] = 2.0 * math.atan(0.5 * camera.height / fy)
        if model == "OPENCV_FISHEYE":
            fields["is_fisheye"] = True
    return fields


def _shared_fields(per_camera: list[dict]) -> dict:
    """The intrinsic fields equal for every camera, which go to the top level; the rest are written per frame.

    nerfstudio takes all distortion coefficients from the top level as soon as one is there, so they are
    shared together or not at all.
    """
    first = per_camera[0]
    shared = {key: value for key, value in first.items() if all(fields.get(key) == value for fields in per_camera)}
    if any(key in first and key not in shared for key in _DISTORTION_KEYS):
        shared = {key: value for key, value in shared.items() if key not in _DISTORTION_KEYS}
    return shared


def write_transforms(
    path: str | Path,
    image_paths: list[str | Path],
    cameras: list[Camera],
    cam_from_world: list[Rigid3],
    flavour: str = "nerfstudio",
    extra: dict | None = None,
) -> Path:
    """Write a transforms.json (atomically) that nerfstudio, instant-ngp or a Blender-scene NeRF can train from.

    Args:
        path: the file to write; image paths are stored relative to its folder (POSIX separators).
        image_paths: `[N]` image files (absolute, or relative to the file's folder).
        cameras: `[N]` cameras; fields equal for all (size, focal, ...) are written once at the top level, the
            others per frame. One file holds one camera_model (OPENCV or OPENCV_FISHEYE).
        cam_from_world: `[N]` poses in OpenCV axes (written as OpenGL camera-to-world `transform_matrix`).
        flavour: "nerfstudio" (camera_model, fl_x..h, k1..k4, p1, p2), "instant-ngp" (fl_x..h, k1, k2, p1, p2,
            camera_angle_x/y, aabb_scale defaulting to 16 as in instant-ngp's colmap2nerf examples) or "blender"
            (camera_angle_x only, extension-less paths; needs one pinhole camera with a centred principal point).
        extra: more top-level fields (e.g. `train_filenames`, `aabb_scale`), written as given.
    """
    path = Path(path)
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    if not (len(image_paths) == len(cameras) == len(cam_from_world)) or not image_paths:
        raise ValueError("image_paths, cameras and cam_from_world must be non-empty and of equal length")
    per_camera = [_intrinsic_fields(camera, flavour) for camera in cameras]
    meta = _shared_fields(per_camera)
    if flavour == "blender" and "camera_angle_x" not in meta:
        raise ValueError("the Blender format holds a single camera_angle_x; the cameras differ")
    if flavour != "blender" and "camera_model" not in meta:
        raise ValueError(f"{flavour} takes one camera_model per file; write fisheye and perspective cameras separately")
    if flavour == "instant-ngp":
        meta["aabb_scale"] = 16
    meta.update(extra or {})
    root = path.parent.resolve()
    frames = []
    for image_path, fields, pose in zip(image_paths, per_camera, cam_from_world):
        image_path = Path(image_path)
        absolute = image_path if image_path.is_absolute() else root / image_path
        relative = Path(os.path.relpath(absolute, root)).as_posix()
        if flavour == "blender":
            relative = "./" + relative[: -len(Path(relative).suffix)] if Path(relative).suffix else "./" + relative
        frame = {"file_path": relative, "transform_matrix": opengl_from_cam_from_world(pose).tolist()}
        frame.update({key: value for key, value in fields.items() if key not in meta})
        frames.append(frame)
    meta["frames"] = frames
    write_json(path, meta)
    return path
