"""COLMAP sparse models, text and binary, byte for byte as COLMAP writes them.

A model folder holds `cameras`, `images` and `points3D` (`.bin` or `.txt`); COLMAP 4 adds `rigs` and `frames`.
When frames are present COLMAP takes every image's pose from its frame (`cam_from_world = sensor_from_rig *
rig_from_world`) and ignores the pose stored in the images file; `read_model` does the same, so models with
multi-camera rigs load with the poses COLMAP would use. `Reconstruction` has no rigs, so `write_model` writes
what COLMAP 4 creates for a model without them: one rig per camera (rig id = camera id) and one frame per image
(frame id = image id). COLMAP 3 readers ignore those two files.

Layouts (all little-endian): cameras.bin `u64 count; {u32 id, i32 model_id, u64 width, u64 height, f64 params[]}`;
images.bin `u64 count; {u32 id, f64 qw qx qy qz tx ty tz, u32 camera_id, name\\0, u64 n, {f64 x, f64 y, u64
point3D_id}[n]}` (2^64-1 = no point); points3D.bin `u64 count; {u64 id, f64 xyz[3], u8 rgb[3], f64 error, u64 n,
{u32 image_id, u32 point2D_idx}[n]}`; rigs.bin `u64 count; {u32 id, u32 num_sensors, [i32 ref_type, u32 ref_id],
{i32 type, u32 id, u8 has_pose, [f64 qw qx qy qz tx ty tz]}[num_sensors - 1]}`; frames.bin `u64 count; {u32 id,
u32 rig_id, f64 qw qx qy qz tx ty tz, u32 n, {i32 sensor_type, u32 sensor_id, u64 data_id}[n]}`.

Text files are parsed leniently where COLMAP would lose data: an image name is the rest of its line (COLMAP stops
at the first space), and a missing final keypoint line means no keypoints.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mapforge.errors import InputError, MapforgeError
from mapforge.geometry.cameras import CAMERA_MODELS, CameraModel, model_by_id
from mapforge.geometry.transforms import Rigid3
from mapforge.io.atomic import atomic_path
from mapforge.scene import Camera, Image, Point3D, Reconstruction, check_camera, check_finite

MODEL_FILES = ("cameras", "images", "points3D", "rigs", "frames")
INVALID_POINT3D_ID = 2**64 - 1
SENSOR_TYPES = {-1: "INVALID", 0: "CAMERA", 1: "IMU"}
_SENSOR_TYPE_IDS = {name: value for value, name in SENSOR_TYPES.items()}
_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}


@dataclass
class Rig:
    """A COLMAP 4 rig. Sensors are `(type, id)` pairs such as `("CAMERA", camera_id)`.

    `ref_sensor` defines the rig frame (None for an empty rig); `sensors` maps every other sensor to its
    `sensor_from_rig` pose, or None when it is not known yet.
    """

    ref_sensor: tuple[str, int] | None
    sensors: dict[tuple[str, int], Rigid3 | None] = field(default_factory=dict)

    def sensor_from_rig(self, sensor: tuple[str, int]) -> Rigid3 | None:
        """The pose of `sensor` in the rig (identity for the reference sensor), None when unknown or absent."""
        if sensor == self.ref_sensor:
            return Rigid3()
        return self.sensors.get(sensor)


@dataclass
class Frame:
    """A COLMAP 4 frame: one capture of a rig. `data_ids` are `(sensor_type, sensor_id, data_id)`, e.g.
    `("CAMERA", camera_id, image_id)`, sorted as COLMAP stores them."""

    rig_id: int
    rig_from_world: Rigid3
    data_ids: list[tuple[str, int, int]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# Finding and reading whole models


def model_folder(path: str | Path) -> Path:
    """The folder holding the model files for `path`: the folder itself, the folder of a model file, or a
    project folder's `sparse/0`, `sparse` or `0` subfolder."""
    path = Path(path)
    if path.is_file() and path.stem in MODEL_FILES:
        return path.parent
    if not path.is_dir():
        raise InputError(f"COLMAP model folder {path} does not exist")
    for candidate in (path, path / "sparse" / "0", path / "sparse", path / "0"):
        if model_format(candidate) is not None:
            return candidate
    raise InputError(f"{path} holds no COLMAP model (no cameras.bin or cameras.txt, nor in sparse/0)")


def model_format(folder: str | Path) -> str | None:
    """The format of the model in `folder`, "bin" or "txt" (binary wins when both are there, as in COLMAP), or
    None when there is no cameras file."""
    folder = Path(folder)
    for ext in ("bin", "txt"):
        if (folder / f"cameras.{ext}").is_file():
            return ext
    return None


def read_model(path: str | Path) -> Reconstruction:
    """Read a COLMAP model (binary or text, with or without COLMAP 4's rigs and frames files).

    `path` is the model folder or anything `model_folder` accepts. Image poses come from the frames when there
    are frames, exactly as COLMAP does. A missing points3D file reads as no points (a poses-only model; COLMAP
    itself refuses it). A model without an images file (such as the LLFF data's `sparse/0`) raises
    `InputError`, as there is nothing to reconstruct from; read its parts with `read_cameras_binary` /
    `read_points3D_binary` instead.
    """
    folder = model_folder(path)
    ext = model_format(folder)
    binary = ext == "bin"
    files = {name: folder / f"{name}.{ext}" for name in MODEL_FILES}
    if not files["images"].is_file():
        raise InputError(
            f"COLMAP model {folder} has cameras.{ext} but no images.{ext}; read the files that exist with "
            f"mapforge.io.colmap.read_cameras_{'binary' if binary else 'text'} and friends"
        )
    cameras = (read_cameras_binary if binary else read_cameras_text)(files["cameras"])
    images = (read_images_binary if binary else read_images_text)(files["images"])
    points3D = {}
    if files["points3D"].is_file():
        points3D = (read_points3D_binary if binary else read_points3D_text)(files["points3D"])
    if files["frames"].is_file():
        frames = (read_frames_binary if binary else read_frames_text)(files["frames"])
        rigs = (read_rigs_binary if binary else read_rigs_text)(files["rigs"]) if files["rigs"].is_file() else {}
        _apply_frame_poses(images, rigs, frames, files["frames"])
    rec = Reconstruction(cameras, images, points3D)
    _check_references(rec, files)
    return rec


def _apply_frame_poses(images: dict[int, Image], rigs: dict[int, Rig], frames: dict[int, Frame], where: Path) -> None:
    for frame_id, frame in frames.items():
        for sensor_type, sensor_id, data_id in frame.data_ids:
            if sensor_type != "CAMERA" or data_id not in images:
                continue
            image = images[data_id]
            if image.camera_id != sensor_id:
                raise InputError(f"{where}: frame {frame_id} lists image {data_id} under camera {sensor_id}, "
                                 f"but the image uses camera {image.camera_id}")
            if frame.rig_id not in rigs:
                if rigs:
                    raise InputError(f"{where}: frame {frame_id} refers to rig {frame.rig_id}, which does not exist")
                sensor_from_rig = Rigid3()  # no rigs file: every frame is a single camera
            else:
                sensor_from_rig = rigs[frame.rig_id].sensor_from_rig((sensor_type, sensor_id))
            if sensor_from_rig is not None:
                image.cam_from_world = sensor_from_rig * frame.rig_from_world


def _check_references(rec: Reconstruction, files: dict[str, Path]) -> None:
    for image_id, image in rec.images.items():
        if image.camera_id not in rec.cameras:
            raise InputError(f"{files['images']}: image {image_id} uses camera {image.camera_id}, which is not in "
                             f"{files['cameras'].name}")
    for point_id, point in rec.points3D.items():
        for image_id, keypoint in point.track:
            image = rec.images.get(int(image_id))
            if image is None or not 0 <= keypoint < len(image.keypoints):
                raise InputError(f"{files['points3D']}: point {point_id} is observed by image {image_id} keypoint "
                                 f"{keypoint}, which is not in {files['images'].name}")


def write_model(rec: Reconstruction, path: str | Path, format: str = "bin") -> Path:
    """Write `rec` as a COLMAP 4 model folder (`format` "bin" or "txt"), atomically. Returns the folder.

    Writes cameras, images, points3D plus one rig per camera and one frame per image (see the module doc).
    Other files already in the folder (e.g. `project.ini`) are kept; old model files of either format are not.
    """
    if format not in ("bin", "txt"):
        raise MapforgeError(f"unknown COLMAP model format {format!r} (choose bin or txt)")
    _check_writable_model(rec)
    path = Path(path)
    rigs = {camera_id: Rig(("CAMERA", camera_id)) for camera_id in rec.cameras}
    frames = {
        image_id: Frame(image.camera_id, image.cam_from_world, [("CAMERA", image.camera_id, image_id)])
        for image_id, image in rec.images.items()
    }
    with atomic_path(path) as tmp:
        tmp.mkdir()
        _carry_over_other_files(path, tmp)
        if format == "bin":
            write_rigs_binary(rigs, tmp / "rigs.bin")
            write_cameras_binary(rec.cameras, tmp / "cameras.bin")
            write_frames_binary(frames, tmp / "frames.bin")
            write_images_binary(rec.images, tmp / "images.bin")
            write_points3D_binary(rec.points3D, tmp / "points3D.bin")
        else:
            write_rigs_text(rigs, tmp / "rigs.txt")
            write_cameras_text(rec.cameras, tmp / "cameras.txt")
            write_frames_text(frames, tmp / "frames.txt")
            write_images_text(rec.images, tmp / "images.txt")
            write_points3D_text(rec.points3D, tmp / "points3D.txt", _num_observations(rec.images))
    return path


def _check_writable_model(rec: Reconstruction) -> None:
    """COLMAP refuses models whose ids do not fit its types or whose references dangle; fail before writing."""
    for image_id, image in rec.images.items():
        if image.camera_id not in rec.cameras:
            raise MapforgeError(f"cannot write COLMAP model: image {image_id} uses missing camera {image.camera_id}")
    for point_id, point in rec.points3D.items():
        for image_id, keypoint in point.track:
            image = rec.images.get(int(image_id))
            if image is None or not 0 <= keypoint < len(image.keypoints):
                raise MapforgeError(f"cannot write COLMAP model: point {point_id} observed by missing image "
                                    f"{image_id} keypoint {keypoint}")
    for kind, ids, limit in (("camera", rec.cameras, 2**32 - 1), ("image", rec.images, 2**32 - 1),
                             ("point", rec.points3D, 2**63)):
        bad = [i for i in ids if not 0 <= i < limit]
        if bad:
            raise MapforgeError(f"cannot write COLMAP model: {kind} id {bad[0]} is outside 0..{limit - 1}")


def _carry_over_other_files(old: Path, new: Path) -> None:
    if not old.is_dir():
        return
    model_names = {f"{name}.{ext}" for name in MODEL_FILES for ext in ("bin", "txt")}
    for entry in old.iterdir():
        if entry.name in model_names:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, new / entry.name)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    if Path(src).is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _num_observations(images: dict[int, Image]) -> int:
    return int(sum(int((image.point3D_ids >= 0).sum()) for image in images.values()))


# ---------------------------------------------------------------------------------------------------------------
# Camera-model lookups


def _camera(camera_id: int, model: str, width: int, height: int, params: list[float] | np.ndarray, where: str) -> Camera:
    if model not in CAMERA_MODELS:
        raise InputError(f"{where}: unknown camera model {model!r}")
    expected = CAMERA_MODELS[model].num_params
    if len(params) != expected:
        raise InputError(f"{where}: camera model {model} takes {expected} parameters, got {len(params)}")
    return check_camera(Camera(model, width, height, np.asarray(params, dtype=np.float64)), f"camera {camera_id}", where)


def _model_from_id(model_id: int, where: str) -> CameraModel:
    try:
        return model_by_id(model_id)
    except InputError:
        raise InputError(f"{where}: unknown camera model id {model_id}") from None


def _model_id(model: str) -> int:
    return CAMERA_MODELS[model].model_id


# ---------------------------------------------------------------------------------------------------------------
# Binary files


class _BinaryReader:
    """Sequential little-endian reads over a whole file, with errors that name the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        self.offset = 0

    def unpack(self, fmt: struct.Struct) -> tuple:
        if self.offset + fmt.size > len(self.data):
            self._truncated()
        values = fmt.unpack_from(self.data, self.offset)
        self.offset += fmt.size
        return values

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        dtype = np.dtype(dtype)
        if count < 0 or self.offset + count * dtype.itemsize > len(self.data):
            self._truncated()
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset).copy()  # writable, owns memory
        self.offset += count * dtype.itemsize
        return out

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            self._truncated()
        text = self.data[self.offset : end].decode(**_ENCODING)
        self.offset = end + 1
        return text

    def count(self) -> int:
        return self.unpack(_U64)[0]

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise InputError(f"{self.path}: {len(self.data) - self.offset} unexpected bytes after the last record "
                             "(corrupt file or a record layout COLMAP does not write)")

    def _truncated(self):
        raise InputError(f"{self.path}: file is truncated (ends at byte {len(self.data)} in the middle of a record)")


_U64 = struct.Struct("<Q")
_CAMERA = struct.Struct("<IiQQ")
_POSE = struct.Struct("<7d")
_IMAGE_ID = struct.Struct("<I")
_U32 = struct.Struct("<I")
_POINT3D = struct.Struct("<Q3d3BdQ")
_SENSOR = struct.Struct("<iI")
_U8 = struct.Struct("<B")
_FRAME_HEAD = struct.Struct("<II")
_DATA_ID = np.dtype([("type", "<i4"), ("sensor", "<u4"), ("id", "<u8")])
_KEYPOINT = np.dtype([("x", "<f8"), ("y", "<f8"), ("point3D_id", "<u8")])


def _pose_from_values(values: tuple | list, what: str, where: str) -> Rigid3:
    """`QW QX QY QZ TX TY TZ` -> a pose, or `InputError` ("`where`: NaN in the pose of `what`")."""
    check_finite(values, f"the pose of {what}", where)
    quat = np.asarray(values[:4], dtype=np.float64)
    if np.linalg.norm(quat) < 1e-12:
        raise InputError(f"{where}: the pose of {what} has a zero quaternion {quat.tolist()}")
    return Rigid3.from_quat(quat, values[4:7])


def _pose_values(pose: Rigid3) -> list[float]:
    return [*pose.quat.tolist(), *pose.translation.tolist()]


def _sensor_type(value: int, where: str) -> str:
    if value not in SENSOR_TYPES:
        raise InputError(f"{where}: unknown sensor type {value}")
    return SENSOR_TYPES[value]


def read_cameras_binary(path: str | Path) -> dict[int, Camera]:
    """Read `cameras.bin` into `{camera_id: Camera}`."""
    reader = _BinaryReader(path)
    cameras = {}
    for _ in range(reader.count()):
        camera_id, model_id, width, height = reader.unpack(_CAMERA)
        model = _model_from_id(model_id, f"{reader.path} (camera {camera_id})")
        params = reader.array("<f8", model.num_params)
        cameras[camera_id] = _camera(camera_id, model.name, width, height, params, str(reader.path))
    reader.finish()
    return cameras


def read_images_binary(path: str | Path) -> dict[int, Image]:
    """Read `images.bin` into `{image_id: Image}` (poses as stored in the file; see `read_model` for frames)."""
    reader = _BinaryReader(path)
    images = {}
    for _ in range(reader.count()):
        (image_id,) = reader.unpack(_IMAGE_ID)
        pose = reader.unpack(_POSE)
        (camera_id,) = reader.unpack(_U32)
        name = reader.cstring()
        keypoints = reader.array(_KEYPOINT, reader.count())
        cam_from_world = _pose_from_values(pose, f"image {image_id}", str(reader.path))
        images[image_id] = Image(name, camera_id, cam_from_world, np.stack([keypoints["x"], keypoints["y"]], axis=1),
                                 _point_ids_from_u64(keypoints["point3D_id"]))
    reader.finish()
    return images


def _point_ids_from_u64(ids: np.ndarray) -> np.ndarray:
    out = ids.astype(np.int64)
    out[ids == INVALID_POINT3D_ID] = -1
    return out


def read_points3D_binary(path: str | Path) -> dict[int, Point3D]:
    """Read `points3D.bin` into `{point3D_id: Point3D}`."""
    reader = _BinaryReader(path)
    points = {}
    for _ in range(reader.count()):
        point_id, x, y, z, r, g, b, error, track_length = reader.unpack(_POINT3D)
        check_finite([x, y, z], f"the position of point {point_id}", str(reader.path))
        track = reader.array("<u4", 2 * track_length).reshape(-1, 2)
        points[point_id] = Point3D(np.array([x, y, z]), np.array([r, g, b], dtype=np.uint8), error, track)
    reader.finish()
    return points


def read_rigs_binary(path: str | Path) -> dict[int, Rig]:
    """Read COLMAP 4's `rigs.bin` into `{rig_id: Rig}`."""
    reader = _BinaryReader(path)
    rigs = {}
    for _ in range(reader.count()):
        rig_id, num_sensors = reader.unpack(_FRAME_HEAD)
        where = f"{reader.path} (rig {rig_id})"
        rig = Rig(None)
        if num_sensors > 0:
            sensor_type, sensor_id = reader.unpack(_SENSOR)
            rig.ref_sensor = (_sensor_type(sensor_type, where), sensor_id)
        for _ in range(max(num_sensors - 1, 0)):
            sensor_type, sensor_id = reader.unpack(_SENSOR)
            (has_pose,) = reader.unpack(_U8)
            sensor = (_sensor_type(sensor_type, where), sensor_id)
            what = f"sensor {sensor[0]} {sensor[1]} of rig {rig_id}"
            rig.sensors[sensor] = _pose_from_values(reader.unpack(_POSE), what, str(reader.path)) if has_pose else None
        rigs[rig_id] = rig
    reader.finish()
    return rigs


def read_frames_binary(path: str | Path) -> dict[int, Frame]:
    """Read COLMAP 4's `frames.bin` into `{frame_id: Frame}`."""
    reader = _BinaryReader(path)
    frames = {}
    for _ in range(reader.count()):
        frame_id, rig_id = reader.unpack(_FRAME_HEAD)
        where = f"{reader.path} (frame {frame_id})"
        rig_from_world = _pose_from_values(reader.unpack(_POSE), f"frame {frame_id}", str(reader.path))
        (num_data,) = reader.unpack(_U32)
        data = reader.array(_DATA_ID, num_data)
        data_ids = [
            (_sensor_type(int(t), where), int(s), int(i)) for t, s, i in zip(data["type"], data["sensor"], data["id"])
        ]
        frames[frame_id] = Frame(rig_id, rig_from_world, data_ids)
    reader.finish()
    return frames


def _write_binary(path: str | Path, chunks: list[bytes]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(chunks))


def write_cameras_binary(cameras: dict[int, Camera], path: str | Path) -> None:
    """Write `{camera_id: Camera}` as `cameras.bin`."""
    chunks = [_U64.pack(len(cameras))]
    for camera_id in sorted(cameras):
        camera = cameras[camera_id]
        chunks.append(_CAMERA.pack(camera_id, _model_id(camera.model), camera.width, camera.height))
        chunks.append(np.asarray(camera.params, dtype="<f8").tobytes())
    _write_binary(path, chunks)


def write_images_binary(images: dict[int, Image], path: str | Path) -> None:
    """Write `{image_id: Image}` as `images.bin`."""
    chunks = [_U64.pack(len(images))]
    for image_id in sorted(images):
        image = images[image_id]
        keypoints = np.empty(len(image.keypoints), dtype=_KEYPOINT)
        keypoints["x"], keypoints["y"] = image.keypoints[:, 0], image.keypoints[:, 1]
        keypoints["point3D_id"] = image.point3D_ids.astype(np.uint64)  # two's complement: -1 -> INVALID_POINT3D_ID
        chunks += [
            _IMAGE_ID.pack(image_id),
            _POSE.pack(*_pose_values(image.cam_from_world)),
            _U32.pack(image.camera_id),
            image.name.encode(**_ENCODING) + b"\0",
            _U64.pack(len(keypoints)),
            keypoints.tobytes(),
        ]
    _write_binary(path, chunks)


def write_points3D_binary(points3D: dict[int, Point3D], path: str | Path) -> None:
    """Write `{point3D_id: Point3D}` as `points3D.bin`."""
    chunks = [_U64.pack(len(points3D))]
    for point_id in sorted(points3D):
        point = points3D[point_id]
        chunks.append(_POINT3D.pack(point_id, *point.xyz.tolist(), *point.rgb.tolist(), point.error, len(point.track)))
        chunks.append(point.track.astype("<u4").tobytes())
    _write_binary(path, chunks)


def write_rigs_binary(rigs: dict[int, Rig], path: str | Path) -> None:
    """Write `{rig_id: Rig}` as COLMAP 4's `rigs.bin`."""
    chunks = [_U64.pack(len(rigs))]
    for rig_id in sorted(rigs):
        rig = rigs[rig_id]
        num_sensors = 0 if rig.ref_sensor is None else 1 + len(rig.sensors)
        chunks.append(_FRAME_HEAD.pack(rig_id, num_sensors))
        if rig.ref_sensor is None:
            continue
        chunks.append(_SENSOR.pack(_SENSOR_TYPE_IDS[rig.ref_sensor[0]], rig.ref_sensor[1]))
        for sensor in _sorted_sensors(rig.sensors):
            pose = rig.sensors[sensor]
            chunks.append(_SENSOR.pack(_SENSOR_TYPE_IDS[sensor[0]], sensor[1]))
            chunks.append(_U8.pack(pose is not None))
            if pose is not None:
                chunks.append(_POSE.pack(*_pose_values(pose)))
    _write_binary(path, chunks)


def _sorted_sensors(sensors: dict[tuple[str, int], Rigid3 | None]) -> list[tuple[str, int]]:
    return sorted(sensors, key=lambda s: (_SENSOR_TYPE_IDS[s[0]], s[1]))


def _sorted_data_ids(data_ids: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    return sorted(data_ids, key=lambda d: (_SENSOR_TYPE_IDS[d[0]], d[1], d[2]))


def write_frames_binary(frames: dict[int, Frame], path: str | Path) -> None:
    """Write `{frame_id: Frame}` as COLMAP 4's `frames.bin`."""
    chunks = [_U64.pack(len(frames))]
    for frame_id in sorted(frames):
        frame = frames[frame_id]
        data_ids = _sorted_data_ids(frame.data_ids)
        data = np.empty(len(data_ids), dtype=_DATA_ID)
        for k, (sensor_type, sensor_id, data_id) in enumerate(data_ids):
            data[k] = (_SENSOR_TYPE_IDS[sensor_type], sensor_id, data_id)
        chunks += [
            _FRAME_HEAD.pack(frame_id, frame.rig_id),
            _POSE.pack(*_pose_values(frame.rig_from_world)),
            _U32.pack(len(data)),
            data.tobytes(),
        ]
    _write_binary(path, chunks)


# ---------------------------------------------------------------------------------------------------------------
# Text files


def _g(value: float) -> str:
    """A double as COLMAP prints it (C++ stream precision 17)."""
    return "%.17g" % value


def _text_lines(path: str | Path) -> list[str]:
    path = Path(path)
    try:
        with open(path, newline=None, **_ENCODING) as file:
            return file.read().split("\n")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _data_lines(path: str | Path):
    """Yield `(line_number, tokens)` for every line that is neither empty nor a comment."""
    for number, line in enumerate(_text_lines(path), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line.split()


def _parse_error(path: str | Path, number: int, message: str) -> InputError:
    return InputError(f"{path}:{number}: {message}")


def _floats(tokens: list[str], path: str | Path, number: int) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError as exc:
        raise _parse_error(path, number, f"not a number: {exc}") from None


def _pose_from_tokens(tokens: list[str], path: str | Path, number: int, what: str) -> Rigid3:
    return _pose_from_values(_floats(tokens, path, number), what, f"{path}:{number}")


def _sensor_from_token(token: str, path: str | Path, number: int) -> str:
    if token not in _SENSOR_TYPE_IDS:
        raise _parse_error(path, number, f"unknown sensor type {token!r}")
    return token


def read_cameras_text(path: str | Path) -> dict[int, Camera]:
    """Read `cameras.txt` (`CAMERA_ID MODEL WIDTH HEIGHT PARAMS...` per line) into `{camera_id: Camera}`."""
    cameras = {}
    for number, tokens in _data_lines(path):
        if len(tokens) < 4:
            raise _parse_error(path, number, "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
        try:
            camera_id, width, height = int(tokens[0]), int(tokens[2]), int(tokens[3])
        except ValueError:
            raise _parse_error(path, number, "camera id, width and height must be integers") from None
        cameras[camera_id] = _camera(camera_id, tokens[1], width, height, _floats(tokens[4:], path, number),
                                     f"{path}:{number}")
    return cameras


def read_images_text(path: str | Path) -> dict[int, Image]:
    """Read `images.txt` (two lines per image) into `{image_id: Image}` (poses as stored in the file)."""
    lines = _text_lines(path)
    images = {}
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        number = index
        parts = line.split(maxsplit=9)
        if len(parts) < 10:
            raise _parse_error(path, number, "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        try:
            image_id, camera_id = int(parts[0]), int(parts[8])
        except ValueError:
            raise _parse_error(path, number, "image and camera ids must be integers") from None
        cam_from_world = _pose_from_tokens(parts[1:8], path, number, f"image {image_id}")
        points_line = lines[index].strip() if index < len(lines) else ""
        index += 1
        tokens = points_line.split()
        if len(tokens) % 3:
            raise _parse_error(path, number + 1, f"expected X Y POINT3D_ID triples, got {len(tokens)} values")
        try:
            keypoints = np.array(tokens[0::3] + tokens[1::3], dtype=np.float64).reshape(2, -1).T
            point_ids = np.array([int(t) for t in tokens[2::3]], dtype=np.int64)
        except (ValueError, OverflowError):
            raise _parse_error(path, number + 1, "keypoints must be numbers and point ids integers") from None
        images[image_id] = Image(parts[9].strip(), camera_id, cam_from_world, keypoints, point_ids)
    return images


def read_points3D_text(path: str | Path) -> dict[int, Point3D]:
    """Read `points3D.txt` (`ID X Y Z R G B ERROR TRACK[]` per line) into `{point3D_id: Point3D}`."""
    points = {}
    for number, tokens in _data_lines(path):
        if len(tokens) < 8 or (len(tokens) - 8) % 2:
            raise _parse_error(path, number, "expected POINT3D_ID X Y Z R G B ERROR (IMAGE_ID POINT2D_IDX)...")
        try:
            point_id = int(tokens[0])
            rgb = [int(t) for t in tokens[4:7]]
            track = np.array([int(t) for t in tokens[8:]], dtype=np.int64).reshape(-1, 2)
        except ValueError:
            raise _parse_error(path, number, "point id, colour and track must be integers") from None
        if not all(0 <= c <= 255 for c in rgb):
            raise _parse_error(path, number, f"colour {rgb} is outside 0..255")
        values = _floats(tokens[1:4] + tokens[7:8], path, number)
        check_finite(values[:3], f"the position of point {point_id}", f"{path}:{number}")
        points[point_id] = Point3D(np.array(values[:3]), np.array(rgb, dtype=np.uint8), values[3], track)
    return points


def read_rigs_text(path: str | Path) -> dict[int, Rig]:
    """Read COLMAP 4's `rigs.txt` into `{rig_id: Rig}`."""
    rigs = {}
    for number, tokens in _data_lines(path):
        try:
            rig_id, num_sensors = int(tokens[0]), int(tokens[1])
            rig = Rig(None)
            at = 2
            if num_sensors > 0:
                rig.ref_sensor = (_sensor_from_token(tokens[at], path, number), int(tokens[at + 1]))
                at += 2
            for _ in range(num_sensors - 1):
                sensor = (_sensor_from_token(tokens[at], path, number), int(tokens[at + 1]))
                has_pose = tokens[at + 2] == "1"
                at += 3
                pose = None
                if has_pose:
                    if at + 7 > len(tokens):
                        raise IndexError
                    what = f"sensor {sensor[0]} {sensor[1]} of rig {rig_id}"
                    pose = _pose_from_tokens(tokens[at : at + 7], path, number, what)
                    at += 7
                rig.sensors[sensor] = pose
        except (ValueError, IndexError):
            raise _parse_error(path, number, "expected RIG_ID NUM_SENSORS REF_SENSOR_TYPE REF_SENSOR_ID "
                                             "(SENSOR_TYPE SENSOR_ID HAS_POSE [QW QX QY QZ TX TY TZ])...") from None
        if at != len(tokens):
            raise _parse_error(path, number, f"{len(tokens) - at} values left over after {num_sensors} sensors")
        rigs[rig_id] = rig
    return rigs


def read_frames_text(path: str | Path) -> dict[int, Frame]:
    """Read COLMAP 4's `frames.txt` into `{frame_id: Frame}`."""
    frames = {}
    for number, tokens in _data_lines(path):
        try:
            frame_id, rig_id = int(tokens[0]), int(tokens[1])
            if len(tokens) < 10:
                raise IndexError
            rig_from_world = _pose_from_tokens(tokens[2:9], path, number, f"frame {frame_id}")
            num_data = int(tokens[9])
            if len(tokens) != 10 + 3 * num_data:
                raise _parse_error(
                    path, number, f"{num_data} data ids need {3 * num_data} values, got {len(tokens) - 10}"
                )
            data_ids = [
                (_sensor_from_token(tokens[k], path, number), int(tokens[k + 1]), int(tokens[k + 2]))
                for k in range(10, len(tokens), 3)
            ]
        except (ValueError, IndexError):
            raise _parse_error(path, number, "expected FRAME_ID RIG_ID QW QX QY QZ TX TY TZ NUM_DATA_IDS "
                                             "(SENSOR_TYPE SENSOR_ID DATA_ID)...") from None
        frames[frame_id] = Frame(rig_id, rig_from_world, data_ids)
    return frames


def _write_text(path: str | Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="\n", **_ENCODING) as file:
            file.write("\n".join(lines) + "\n")


def write_cameras_text(cameras: dict[int, Camera], path: str | Path) -> None:
    """Write `{camera_id: Camera}` as `cameras.txt` with COLMAP's header."""
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(cameras)}",
    ]
    for camera_id in sorted(cameras):
        camera = cameras[camera_id]
        lines.append(" ".join([str(camera_id), camera.model, str(camera.width), str(camera.height),
                               *map(_g, camera.params.tolist())]))
    _write_text(path, lines)


def write_images_text(images: dict[int, Image], path: str | Path) -> None:
    """Write `{image_id: Image}` as `images.txt` with COLMAP's header."""
    mean = _num_observations(images) / len(images) if images else 0.0
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(images)}, mean observations per image: {_g(mean)}",
    ]
    for image_id in sorted(images):
        image = images[image_id]
        pose = map(_g, _pose_values(image.cam_from_world))
        lines.append(" ".join([str(image_id), *pose, str(image.camera_id), image.name]))
        xy = image.keypoints.tolist()
        ids = image.point3D_ids.tolist()
        lines.append("".join(f"{_g(x)} {_g(y)} {i} " for (x, y), i in zip(xy, ids)))  # COLMAP ends it with a space
    _write_text(path, lines)


def write_points3D_text(
    points3D: dict[int, Point3D], path: str | Path, num_observations: int | None = None
) -> None:
    """Write `{point3D_id: Point3D}` as `points3D.txt` with COLMAP's header.

    `num_observations` (keypoints with a 3D point, over all images) only feeds the "mean track length" comment, as
    COLMAP computes it; by default it is the sum of the track lengths, which is the same for a consistent model.
    """
    if num_observations is None:
        num_observations = sum(len(p.track) for p in points3D.values())
    mean = num_observations / len(points3D) if points3D else 0.0
    lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(points3D)}, mean track length: {_g(mean)}",
    ]
    for point_id in sorted(points3D):
        point = points3D[point_id]
        fields = [str(point_id), *map(_g, point.xyz.tolist()), *map(str, point.rgb.tolist()), _g(point.error)]
        # COLMAP separates the track with a space even when it is empty
        lines.append(" ".join(fields) + " " + " ".join(map(str, point.track.reshape(-1).tolist())))
    _write_text(path, lines)


def write_rigs_text(rigs: dict[int, Rig], path: str | Path) -> None:
    """Write `{rig_id: Rig}` as COLMAP 4's `rigs.txt`."""
    lines = [
        "# Rig calib list with one line of data per calib:",
        "#   RIG_ID, NUM_SENSORS, REF_SENSOR_TYPE, REF_SENSOR_ID, SENSORS[] as (SENSOR_TYPE, SENSOR_ID, HAS_POSE, "
        "[QW, QX, QY, QZ, TX, TY, TZ])",
        f"# Number of rigs: {len(rigs)}",
    ]
    for rig_id in sorted(rigs):
        rig = rigs[rig_id]
        if rig.ref_sensor is None:
            lines.append(f"{rig_id} 0")
            continue
        fields = [str(rig_id), str(1 + len(rig.sensors)), rig.ref_sensor[0], str(rig.ref_sensor[1])]
        for sensor in _sorted_sensors(rig.sensors):
            pose = rig.sensors[sensor]
            fields += [sensor[0], str(sensor[1])]
            fields += ["0"] if pose is None else ["1", *map(_g, _pose_values(pose))]
        lines.append(" ".join(fields))
    _write_text(path, lines)


def write_frames_text(frames: dict[int, Frame], path: str | Path) -> None:
    """Write `{frame_id: Frame}` as COLMAP 4's `frames.txt`."""
    lines = [
        "# Frame list with one line of data per frame:",
        "#   FRAME_ID, RIG_ID, RIG_FROM_WORLD[QW, QX, QY, QZ, TX, TY, TZ], NUM_DATA_IDS, DATA_IDS[] as "
        "(SENSOR_TYPE, SENSOR_ID, DATA_ID)",
        f"# Number of frames: {len(frames)}",
    ]
    for frame_id in sorted(frames):
        frame = frames[frame_id]
        data_ids = _sorted_data_ids(frame.data_ids)
        fields = [str(frame_id), str(frame.rig_id), *map(_g, _pose_values(frame.rig_from_world)), str(len(data_ids))]
        for sensor_type, sensor_id, data_id in data_ids:
            fields += [sensor_type, str(sensor_id), str(data_id)]
        lines.append(" ".join(fields))
    _write_text(path, lines)
