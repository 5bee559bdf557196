"""COLMAP model I/O: round trips and malformed files, and parity with pycolmap 4 (the reference implementation) in
both directions and both formats."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.geometry.cameras import CAMERA_MODELS
from mapforge.geometry.rotations import quat_to_matrix
from mapforge.geometry.transforms import Rigid3
from mapforge.io import colmap
from mapforge.io.colmap import read_model, write_model
from mapforge.scene import Camera, Image, Point3D, Reconstruction
from tests.conftest import shared_dataset

try:
    import pycolmap
except ImportError:
    pycolmap = None
# Only the comparisons with the reference implementation need it; the round trips and error paths run without.
needs_pycolmap = pytest.mark.skipif(pycolmap is None, reason="pycolmap (a test dependency) is the reference implementation")

MODELS = {
    "SIMPLE_PINHOLE": [500.0, 320.0, 240.0],
    "PINHOLE": [500.0, 510.0, 320.5, 239.5],
    "SIMPLE_RADIAL": [480.0, 320.0, 240.0, 0.05],
    "RADIAL": [480.0, 320.0, 240.0, 0.05, -0.01],
    "OPENCV": [500.0, 505.0, 321.0, 241.0, 0.1, -0.02, 0.001, -0.002],
    "OPENCV_FISHEYE": [300.0, 301.0, 320.0, 240.0, 0.01, 0.002, -0.001, 0.0005],
    "FULL_OPENCV": [500.0, 505.0, 321.0, 241.0, 0.1, -0.02, 0.001, -0.002, 0.003, 0.01, 0.002, 0.001],
}


def _random_pose(rng: np.random.Generator) -> Rigid3:
    quat = rng.normal(size=4)
    return Rigid3(quat_to_matrix(quat / np.linalg.norm(quat)), rng.normal(size=3) * 3)


def _pycolmap_model(rng: np.random.Generator) -> pycolmap.Reconstruction:
    """Cameras of several models, images with keypoints (some without a 3D point), points with tracks."""
    rec = pycolmap.Reconstruction()
    for camera_id, (model, params) in enumerate(MODELS.items(), start=1):
        params = np.asarray(params) * (1 + 1e-3 * rng.random(len(params)))  # digits that need all 17 places
        rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=camera_id, model=model, width=640, height=480, params=params))
    for image_id in range(1, 10):
        camera_id = 1 + image_id % len(MODELS)
        keypoints = rng.random((40, 2)) * [640, 480]
        image = pycolmap.Image(name=f"dir/img {image_id:02d}.jpg", keypoints=keypoints, camera_id=camera_id, image_id=image_id * 3)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(_random_pose(rng).matrix()))
    image_ids = sorted(rec.images)
    for k in range(30):
        track = pycolmap.Track()
        for image_id in rng.choice(image_ids, size=2 + k % 3, replace=False):
            track.add_element(int(image_id), k)
        point_id = rec.add_point3D(rng.normal(size=3) * 5, track, rng.integers(0, 256, 3).astype(np.uint8))
        rec.point3D(point_id).error = float(rng.random())
    return rec


def _mapforge_model(rng: np.random.Generator) -> Reconstruction:
    cameras = {cid * 2: Camera(model, 800, 600, np.asarray(p) * 1.0001) for cid, (model, p) in enumerate(MODELS.items(), start=1)}
    images = {}
    for image_id in range(1, 8):
        camera_id = sorted(cameras)[image_id % len(cameras)]
        images[image_id] = Image(f"frame_{image_id}.png", camera_id, _random_pose(rng), rng.random((15, 2)) * 800, np.full(15, -1))
    points = {}
    for point_id in range(100, 125):
        track = []
        for image_id in rng.choice(sorted(images), size=3, replace=False):
            free = np.flatnonzero(images[image_id].point3D_ids < 0)
            keypoint = int(free[0])
            images[image_id].point3D_ids[keypoint] = point_id
            track.append((image_id, keypoint))
        points[point_id] = Point3D(rng.normal(size=3), rng.integers(0, 256, 3), rng.random(), np.array(track))
    images[7].keypoints = np.zeros((0, 2))  # an image without keypoints
    images[7].point3D_ids = np.zeros(0, dtype=np.int64)
    for point in points.values():
        point.track = point.track[point.track[:, 0] != 7]
    return Reconstruction(cameras, images, points)


def assert_same(ours: Reconstruction, ref: pycolmap.Reconstruction) -> None:
    """Cameras, poses, keypoints, points and tracks agree exactly (rotations to rounding of the quaternion)."""
    assert sorted(ours.cameras) == sorted(ref.cameras)
    for camera_id, camera in ours.cameras.items():
        other = ref.camera(camera_id)
        assert (camera.model, camera.width, camera.height) == (other.model_name, other.width, other.height)
        np.testing.assert_array_equal(camera.params, other.params)
    assert sorted(ours.images) == sorted(ref.images)
    for image_id, image in ours.images.items():
        other = ref.image(image_id)
        assert (image.name, image.camera_id) == (other.name, other.camera_id)
        pose = other.cam_from_world()
        np.testing.assert_allclose(image.cam_from_world.rotation, pose.rotation.matrix(), rtol=0, atol=1e-15)
        np.testing.assert_allclose(image.cam_from_world.translation, pose.translation, rtol=0, atol=1e-14)
        points2D = other.points2D
        np.testing.assert_array_equal(image.keypoints, np.array([p.xy for p in points2D]).reshape(-1, 2))
        ref_ids = [p.point3D_id if p.has_point3D() else -1 for p in points2D]
        np.testing.assert_array_equal(image.point3D_ids, ref_ids)
    assert sorted(ours.points3D) == sorted(ref.points3D)
    for point_id, point in ours.points3D.items():
        other = ref.point3D(point_id)
        np.testing.assert_array_equal(point.xyz, other.xyz)
        np.testing.assert_array_equal(point.rgb, other.color)
        assert point.error == other.error
        np.testing.assert_array_equal(point.track, [(e.image_id, e.point2D_idx) for e in other.track.elements])


def _write_pycolmap(rec: pycolmap.Reconstruction, folder: Path, format: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (rec.write_binary if format == "bin" else rec.write_text)(str(folder))
    return folder


@needs_pycolmap
@pytest.mark.parametrize("format", ["bin", "txt"])
def test_reads_what_pycolmap_writes(tmp_path, rng, format):
    ref = _pycolmap_model(rng)
    folder = _write_pycolmap(ref, tmp_path / "model", format)
    assert {p.name for p in folder.iterdir()} == {f"{n}.{format}" for n in colmap.MODEL_FILES}
    assert_same(colmap.read_model(folder), ref)


@needs_pycolmap
@pytest.mark.parametrize("format", ["bin", "txt"])
def test_pycolmap_reads_what_mapforge_writes(tmp_path, rng, format):
    ours = _mapforge_model(rng)
    folder = colmap.write_model(ours, tmp_path / "model", format)
    assert {p.name for p in folder.iterdir()} == {f"{n}.{format}" for n in colmap.MODEL_FILES}
    ref = pycolmap.Reconstruction(str(folder))
    assert ref.num_rigs() == len(ours.cameras) and ref.num_frames() == len(ours.images)
    assert_same(ours, ref)
    assert_same(colmap.read_model(folder), ref)


@needs_pycolmap
@pytest.mark.parametrize("format", ["bin", "txt"])
def test_files_are_byte_identical_to_colmaps(tmp_path, rng, format):
    """pycolmap, given a model mapforge wrote, writes it back byte for byte (headers, number format, layout)."""
    folder = colmap.write_model(_mapforge_model(rng), tmp_path / "ours", format)
    again = _write_pycolmap(pycolmap.Reconstruction(str(folder)), tmp_path / "theirs", format)
    for name in colmap.MODEL_FILES:
        assert (folder / f"{name}.{format}").read_bytes() == (again / f"{name}.{format}").read_bytes(), name


@needs_pycolmap
@pytest.mark.parametrize("format", ["bin", "txt"])
def test_pycolmap_files_rewritten_identically(tmp_path, rng, format):
    """Files without rotations survive a mapforge read/write byte for byte."""
    folder = _write_pycolmap(_pycolmap_model(rng), tmp_path / "theirs", format)
    ours = colmap.write_model(colmap.read_model(folder), tmp_path / "ours", format)
    for name in ("cameras", "points3D", "rigs"):
        assert (ours / f"{name}.{format}").read_bytes() == (folder / f"{name}.{format}").read_bytes(), name


def _rig_model(tmp_path: Path, format: str) -> tuple[pycolmap.Reconstruction, Path]:
    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs, options.num_cameras_per_rig, options.num_frames_per_rig, options.num_points3D = 2, 3, 2, 20
    pycolmap.set_random_seed(0)
    ref = pycolmap.synthesize_dataset(options)
    return ref, _write_pycolmap(ref, tmp_path / "rig", format)


@needs_pycolmap
@pytest.mark.parametrize("format", ["bin", "txt"])
def test_multi_camera_rigs(tmp_path, format):
    ref, folder = _rig_model(tmp_path, format)
    ext = format
    rigs = (colmap.read_rigs_binary if ext == "bin" else colmap.read_rigs_text)(folder / f"rigs.{ext}")
    frames = (colmap.read_frames_binary if ext == "bin" else colmap.read_frames_text)(folder / f"frames.{ext}")
    assert sorted(rigs) == sorted(ref.rigs) and sorted(frames) == sorted(ref.frames)
    for rig_id, rig in rigs.items():
        other = ref.rig(rig_id)
        assert rig.ref_sensor == (other.ref_sensor_id.type.name, other.ref_sensor_id.id)
        assert len(rig.sensors) == 2
        for (sensor_type, sensor_id), pose in rig.sensors.items():
            sensor = [s for s in other.non_ref_sensors if (s.type.name, s.id) == (sensor_type, sensor_id)][0]
            np.testing.assert_allclose(pose.matrix(), other.sensor_from_rig(sensor).matrix(), atol=1e-15)
    for frame_id, frame in frames.items():
        other = ref.frame(frame_id)
        assert frame.rig_id == other.rig_id
        assert frame.data_ids == sorted((d.sensor_id.type.name, d.sensor_id.id, d.id) for d in other.data_ids)
        np.testing.assert_allclose(frame.rig_from_world.matrix(), other.rig_from_world.matrix(), atol=1e-15)
    rec = colmap.read_model(folder)
    assert_same(rec, ref)
    assert rec.reprojection_errors().max() < 1e-9  # synthetic keypoints are exact projections


@needs_pycolmap
@pytest.mark.parametrize("format", ["bin", "txt"])
def test_frames_override_image_poses_like_colmap(tmp_path, format):
    """With frames present COLMAP ignores the poses in the images file; so must we."""
    ref, folder = _rig_model(tmp_path, format)
    images = colmap.read_model(folder).images
    for image in images.values():
        image.cam_from_world = Rigid3(translation=[9.0, 9.0, 9.0])
    (colmap.write_images_binary if format == "bin" else colmap.write_images_text)(images, folder / f"images.{format}")
    assert_same(colmap.read_model(folder), pycolmap.Reconstruction(str(folder)))
    assert_same(colmap.read_model(folder), ref)


@needs_pycolmap
@pytest.mark.parametrize("format", ["bin", "txt"])
def test_models_without_rigs_and_frames(tmp_path, rng, format):
    """COLMAP 3 models (no rigs or frames files) load in mapforge and pycolmap alike."""
    ours = _mapforge_model(rng)
    folder = colmap.write_model(ours, tmp_path / "model", format)
    (folder / f"rigs.{format}").unlink()
    (folder / f"frames.{format}").unlink()
    ref = pycolmap.Reconstruction(str(folder))
    assert_same(ours, ref)
    assert_same(colmap.read_model(folder), ref)


def test_rigs_and_frames_round_trip(tmp_path):
    rig = colmap.Rig(("CAMERA", 4), {("CAMERA", 2): Rigid3(translation=[0.1, 0, 0]), ("IMU", 1): None})
    rigs = {3: rig, 5: colmap.Rig(None)}
    frames = {2: colmap.Frame(3, Rigid3(translation=[1, 2, 3]), [("IMU", 1, 8), ("CAMERA", 4, 10), ("CAMERA", 2, 11)])}
    for ext in ("bin", "txt"):
        write_rigs = colmap.write_rigs_binary if ext == "bin" else colmap.write_rigs_text
        write_frames = colmap.write_frames_binary if ext == "bin" else colmap.write_frames_text
        read_rigs = colmap.read_rigs_binary if ext == "bin" else colmap.read_rigs_text
        read_frames = colmap.read_frames_binary if ext == "bin" else colmap.read_frames_text
        write_rigs(rigs, tmp_path / f"rigs.{ext}")
        write_frames(frames, tmp_path / f"frames.{ext}")
        back = read_rigs(tmp_path / f"rigs.{ext}")
        assert back[5].ref_sensor is None and back[3].ref_sensor == ("CAMERA", 4)
        assert back[3].sensors[("IMU", 1)] is None
        np.testing.assert_array_equal(back[3].sensors[("CAMERA", 2)].translation, [0.1, 0, 0])
        frame = read_frames(tmp_path / f"frames.{ext}")[2]
        assert frame.rig_id == 3 and frame.data_ids == [("CAMERA", 2, 11), ("CAMERA", 4, 10), ("IMU", 1, 8)]
    assert (tmp_path / "rigs.txt").read_text().splitlines()[3:] == ["3 3 CAMERA 4 CAMERA 2 1 1 0 0 0 0.10000000000000001 0 0 IMU 1 0", "5 0"]


def test_llff_fern_partial_model():
    folder = shared_dataset("llff_fern") / "sparse" / "0"
    cameras = colmap.read_cameras_binary(folder / "cameras.bin")
    assert list(cameras) == [1]
    camera = cameras[1]
    assert (camera.model, camera.width, camera.height) == ("SIMPLE_RADIAL", 4032, 3024)
    points = colmap.read_points3D_binary(folder / "points3D.bin")
    assert len(points) > 1000
    track_images = {int(i) for p in points.values() for i in p.track[:, 0]}
    assert track_images <= set(range(1, 21))  # the 20 fern views
    with pytest.raises(InputError, match="no images.bin"):
        colmap.read_model(folder)
    with pytest.raises(InputError, match="no images.bin"):
        colmap.read_model(folder.parent.parent)  # the project folder: sparse/0 is found


def test_model_folder_resolution(tmp_path, rng):
    rec = _mapforge_model(rng)
    colmap.write_model(rec, tmp_path / "project" / "sparse" / "0", "txt")
    for path in (tmp_path / "project", tmp_path / "project" / "sparse" / "0" / "cameras.txt"):
        assert colmap.model_folder(path) == tmp_path / "project" / "sparse" / "0"
        assert len(colmap.read_model(path).points3D) == len(rec.points3D)
    with pytest.raises(InputError, match="does not exist"):
        colmap.read_model(tmp_path / "missing")
    with pytest.raises(InputError, match="no COLMAP model"):
        colmap.read_model(tmp_path)
    assert len(read_model(tmp_path / "project").images) == len(rec.images)


def test_overwrite_keeps_other_files_and_drops_stale_model(tmp_path, rng):
    rec = _mapforge_model(rng)
    folder = colmap.write_model(rec, tmp_path / "model", "bin")
    (folder / "project.ini").write_text("[General]\n")
    write_model(rec, folder, "txt")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["project.ini", *(f"{n}.txt" for n in colmap.MODEL_FILES)])
    assert colmap.model_format(folder) == "txt"
    assert not [p for p in tmp_path.iterdir() if p.name != "model"]  # no temporary folders left behind


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@needs_pycolmap
@pytest.mark.parametrize("name", ["cameras", "images", "points3D", "rigs", "frames"])
def test_truncated_binary_files(tmp_path, name):
    ref, folder = _rig_model(tmp_path, "bin")
    data = (folder / f"{name}.bin").read_bytes()
    reader = getattr(colmap, f"read_{name}_binary")
    for cut in (3, len(data) // 2, len(data) - 1):
        bad = _write_bytes(tmp_path / f"{name}.bin", data[:cut])
        with pytest.raises(InputError, match=f"{name}.bin.*truncated"):
            reader(bad)
    bad = _write_bytes(tmp_path / f"{name}.bin", data + b"\0")
    with pytest.raises(InputError, match="1 unexpected bytes"):
        reader(bad)


def test_bad_binary_camera_model_id(tmp_path):
    data = struct.pack("<QIiQQ", 1, 1, 99, 640, 480) + np.zeros(4).tobytes()
    with pytest.raises(InputError, match="cameras.bin.*unknown camera model id 99"):
        colmap.read_cameras_binary(_write_bytes(tmp_path / "cameras.bin", data))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("cameras", "# c\n1 PINHOLE 640 480 500 500 320\n", r"cameras.txt:2: camera model PINHOLE takes 4 parameters, got 3"),
        ("cameras", "1 NOT_A_MODEL 640 480 500\n", r"cameras.txt:1: unknown camera model 'NOT_A_MODEL'"),
        ("cameras", "1 PINHOLE 640 480 500 x 320 240\n", r"cameras.txt:1: not a number"),
        ("cameras", "1 PINHOLE 640\n", r"cameras.txt:1: expected CAMERA_ID"),
        ("images", "1 1 0 0 0 0 0 0 1 a.png\n1 2 -1 3\n", r"images.txt:2: expected X Y POINT3D_ID triples"),
        ("images", "1 1 0 0 0 0 0 1 a.png\n\n", r"images.txt:1: expected IMAGE_ID"),
        ("images", "1 0 0 0 0 0 0 0 1 a.png\n\n", r"images.txt:1: the pose of image 1 has a zero quaternion"),
        ("images", "1 1 0 0 0 0 0 0 1 a.png\n1 2 x\n", r"images.txt:2: keypoints must be numbers"),
        ("points3D", "\n1 0 0 0 255 0 0 0.5 1\n", r"points3D.txt:2: expected POINT3D_ID"),
        ("points3D", "1 0 0 0 256 0 0 0.5\n", r"points3D.txt:1: colour \[256, 0, 0\] is outside"),
        ("rigs", "1 2 CAMERA 1 CAMERA 2 1 1 0 0\n", r"rigs.txt:1: expected RIG_ID"),
        ("rigs", "1 1 LIDAR 1\n", r"rigs.txt:1: unknown sensor type 'LIDAR'"),
        ("frames", "1 1 1 0 0 0 0 0 0 2 CAMERA 1 1\n", r"frames.txt:1: 2 data ids need 6 values"),
        ("cameras", "1 PINHOLE 640 480 nan 500 320 240\n", r"cameras.txt:1: NaN in the parameters of camera 1"),
        ("cameras", "2 PINHOLE 640 480 -500 500 320 240\n", r"cameras.txt:1: camera 2 has focal length -500"),
        ("cameras", "2 SIMPLE_PINHOLE 640 480 500 -320 240\n", r"cameras.txt:1: camera 2 has principal point \(-320, 240\)"),
        ("images", "3 1 0 0 0 nan 0 0 1 a.png\n\n", r"images.txt:1: NaN in the pose of image 3"),
        ("points3D", "7 0 nan 0 255 0 0 0.5\n", r"points3D.txt:1: NaN in the position of point 7"),
        ("rigs", "1 2 CAMERA 1 CAMERA 2 1 1 0 0 0 0 inf 0\n", r"rigs.txt:1: infinity in the pose of sensor CAMERA 2 of rig 1"),
        ("frames", "4 1 1 0 0 0 0 nan 0 0\n", r"frames.txt:1: NaN in the pose of frame 4"),
    ],
)
def test_malformed_text_files(tmp_path, name, content, message):
    path = tmp_path / f"{name}.txt"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        getattr(colmap, f"read_{name}_text")(path)


def test_non_finite_binary_model(tmp_path, rng):
    rec = _mapforge_model(rng)
    rec.images[3].cam_from_world.translation[1] = np.nan
    colmap.write_images_binary(rec.images, tmp_path / "images.bin")
    with pytest.raises(InputError, match=r"images.bin: NaN in the pose of image 3$"):
        colmap.read_images_binary(tmp_path / "images.bin")
    rec.cameras[2].params[0] = -1.0
    colmap.write_cameras_binary(rec.cameras, tmp_path / "cameras.bin")
    with pytest.raises(InputError, match=r"cameras.bin: camera 2 has focal length -1"):
        colmap.read_cameras_binary(tmp_path / "cameras.bin")


def test_dangling_references(tmp_path, rng):
    folder = colmap.write_model(_mapforge_model(rng), tmp_path / "model", "txt")
    with open(folder / "points3D.txt", "a") as file:
        file.write("999 0 0 0 0 0 0 1 3 500\n")
    with pytest.raises(InputError, match="point 999 is observed by image 3 keypoint 500"):
        colmap.read_model(folder)
    rec = _mapforge_model(rng)
    rec.images[1].camera_id = 12345
    with pytest.raises(Exception, match="missing camera 12345"):
        colmap.write_model(rec, tmp_path / "bad", "bin")
    assert not (tmp_path / "bad").exists()


def test_text_names_with_spaces_and_missing_last_keypoint_line(tmp_path):
    path = tmp_path / "images.txt"
    path.write_text("# header\n4 1 0 0 0 1 2 3 2 my photos/img 1.jpg")
    image = colmap.read_images_text(path)[4]
    assert image.name == "my photos/img 1.jpg" and image.camera_id == 2 and len(image.keypoints) == 0
    np.testing.assert_array_equal(image.cam_from_world.translation, [1, 2, 3])


@needs_pycolmap
@pytest.mark.parametrize("format", ["bin", "txt"])
def test_empty_model(tmp_path, format):
    folder = colmap.write_model(Reconstruction(), tmp_path / "empty", format)
    again = _write_pycolmap(pycolmap.Reconstruction(str(folder)), tmp_path / "theirs", format)
    for name in colmap.MODEL_FILES:
        assert (folder / f"{name}.{format}").read_bytes() == (again / f"{name}.{format}").read_bytes(), name
    rec = colmap.read_model(folder)
    assert not rec.cameras and not rec.images and not rec.points3D


@needs_pycolmap
def test_every_camera_model_matches_colmap(tmp_path):
    """Model ids and parameter counts agree with COLMAP's for every model mapforge knows."""
    cameras = {i: Camera(name, 100, 80, np.arange(m.num_params) + 1.5) for i, (name, m) in enumerate(CAMERA_MODELS.items(), 1)}
    for format in ("bin", "txt"):
        ref = pycolmap.Reconstruction(str(colmap.write_model(Reconstruction(cameras), tmp_path / format, format)))
        for camera_id, camera in cameras.items():
            other = ref.camera(camera_id)
            assert other.model_name == camera.model and int(other.model) == CAMERA_MODELS[camera.model].model_id
            np.testing.assert_array_equal(other.params, camera.params)


def test_poses_only_model_without_points(tmp_path, rng):
    rec = _mapforge_model(rng)
    folder = colmap.write_model(rec, tmp_path / "model", "txt")
    (folder / "points3D.txt").unlink()
    back = colmap.read_model(folder)
    assert not back.points3D and sorted(back.images) == sorted(rec.images)
    np.testing.assert_allclose(back.images[3].cam_from_world.matrix(), rec.images[3].cam_from_world.matrix(), atol=1e-15)
