"""COLMAP feature databases (`database.db`, SQLite): images, cameras, keypoints and raw matches.

The database is how keypoints and matches travel between tools: COLMAP's own feature extractor and matcher write
it, hloc and other learned matchers import into it, and COLMAP's mapper reads it. mapforge writes one (for example
from MASt3R's reciprocal matches, `mapforge pointmap --matches-only`) that `mapforge sfm --database` and COLMAP both
read, and reads the keypoints and matches of any COLMAP 3 or 4 database.

Layout (COLMAP 4; COLMAP 3 lacks the rig and frame tables): `cameras(camera_id, model, width, height, params f64[],
prior_focal_length)`, `images(image_id, name, camera_id)`, `keypoints(image_id, rows, cols, data f32[rows, cols])`
whose first two columns are x, y in COLMAP's pixel convention, and `matches(pair_id, rows, 2, data u32[rows, 2])`
with `pair_id = 2147483647 * id1 + id2` for `id1 < id2`. Single-camera rigs and frames are written the way
COLMAP's image import creates them (rig and frame ids equal to camera and image ids). Descriptors and two-view
geometries are not written: verification runs in the SfM stage.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.cameras import CAMERA_MODELS, model_by_id
from mapforge.io.atomic import atomic_path
from mapforge.scene import Camera

MAX_IMAGE_ID = 2**31 - 1
_CAMERA_SENSOR = 0

_SCHEMA = """
CREATE TABLE rigs (rig_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, ref_sensor_id INTEGER NOT NULL,
    ref_sensor_type INTEGER NOT NULL);
CREATE UNIQUE INDEX rig_ref_sensor_assignment ON rigs(ref_sensor_id, ref_sensor_type);
CREATE TABLE rig_sensors (rig_id INTEGER NOT NULL, sensor_id INTEGER NOT NULL, sensor_type INTEGER NOT NULL,
    sensor_from_rig BLOB, FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX rig_sensor_assignment ON rig_sensors(sensor_id, sensor_type);
CREATE TABLE cameras (camera_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, model INTEGER NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, params BLOB, prior_focal_length INTEGER NOT NULL);
CREATE TABLE frames (frame_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, rig_id INTEGER NOT NULL,
    FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE TABLE frame_data (frame_id INTEGER NOT NULL, data_id INTEGER NOT NULL, sensor_id INTEGER NOT NULL,
    sensor_type INTEGER NOT NULL, FOREIGN KEY(frame_id) REFERENCES frames(frame_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX frame_sensor_assignment ON frame_data(data_id, sensor_type);
CREATE TABLE images (image_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, name TEXT NOT NULL UNIQUE,
    camera_id INTEGER NOT NULL, CONSTRAINT image_id_check CHECK(image_id >= 0 and image_id < 2147483647),
    FOREIGN KEY(camera_id) REFERENCES cameras(camera_id));
CREATE UNIQUE INDEX index_name ON images(name);
CREATE TABLE pose_priors (pose_prior_id INTEGER PRIMARY KEY NOT NULL, corr_data_id INTEGER NOT NULL,
    corr_sensor_id INTEGER NOT NULL, corr_sensor_type INTEGER NOT NULL, position BLOB, position_covariance BLOB,
    gravity BLOB, coordinate_system INTEGER NOT NULL);
CREATE UNIQUE INDEX pose_prior_data_assignment ON pose_priors(corr_data_id, corr_sensor_id, corr_sensor_type);
CREATE TABLE keypoints (image_id INTEGER PRIMARY KEY NOT NULL, rows INTEGER NOT NULL, cols INTEGER NOT NULL,
    data BLOB, FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE descriptors (image_id INTEGER PRIMARY KEY NOT NULL, type INTEGER NOT NULL, rows INTEGER NOT NULL,
    cols INTEGER NOT NULL, data BLOB, FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE matches (pair_id INTEGER PRIMARY KEY NOT NULL, rows INTEGER NOT NULL, cols INTEGER NOT NULL,
    data BLOB);
CREATE TABLE two_view_geometries (pair_id INTEGER PRIMARY KEY NOT NULL, rows INTEGER NOT NULL,
    cols INTEGER NOT NULL, data BLOB, config INTEGER NOT NULL, F BLOB, E BLOB, H BLOB, qvec BLOB, tvec BLOB,
    camera1 BLOB, camera2 BLOB);
"""


@dataclass
class FeatureDatabase:
    """Keypoints and raw matches of a set of images, indexed by position in `names`.

    Attributes:
        names: `[N]` image names (paths relative to the image folder, as in a COLMAP model).
        cameras: `[N]` cameras; images sharing one camera share the object.
        keypoints: `[N]` arrays `[K_i, 2]` float64 (x, y), COLMAP pixel convention.
        matches: `{(i, j): [M, 2] int64}` keypoint indices of image i and image j, with i < j.
        known_focal: `[N]` whether each camera's focal length is trusted (COLMAP's `prior_focal_length`).
    """

    names: list[str]
    cameras: list[Camera]
    keypoints: list[np.ndarray]
    matches: dict[tuple[int, int], np.ndarray]
    known_focal: list[bool]

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.cameras) == len(self.keypoints) == len(self.known_focal) == n):
            raise InputError("a feature database needs one camera, keypoint array and focal flag per image")
        if len(set(self.names)) != n:
            raise InputError("image names in a feature database must be unique")
        for (i, j), m in self.matches.items():
            if not 0 <= i < j < n:
                raise InputError(f"match pair ({i}, {j}) must index two different images with i < j")
            m = np.asarray(m)
            if len(m) and (m.min() < 0 or m[:, 0].max() >= len(self.keypoints[i])
                           or m[:, 1].max() >= len(self.keypoints[j])):
                raise InputError(f"matches of {self.names[i]} and {self.names[j]} index missing keypoints")


def pair_id(image_id1: int, image_id2: int) -> int:
    """COLMAP's pair id of two image ids (order-independent)."""
    a, b = sorted((int(image_id1), int(image_id2)))
    return MAX_IMAGE_ID * a + b


def image_ids_from_pair_id(value: int) -> tuple[int, int]:
    """The two image ids (smaller first) of a COLMAP pair id."""
    return int(value) // MAX_IMAGE_ID, int(value) % MAX_IMAGE_ID


def write_database(db: FeatureDatabase, path: str | Path) -> Path:
    """Write `db` as a new COLMAP database at `path` (atomically; an existing file is replaced).

    Image ids are positions + 1; camera ids number the distinct camera objects in order of first use.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        connection = sqlite3.connect(tmp)
        try:
            connection.executescript(_SCHEMA)
            camera_ids: dict[int, int] = {}
            for k, camera in enumerate(db.cameras):
                if id(camera) in camera_ids:
                    continue
                camera_id = len(camera_ids) + 1
                camera_ids[id(camera)] = camera_id
                model = CAMERA_MODELS[camera.model]
                params = np.asarray(camera.params, dtype=np.float64)
                connection.execute("INSERT INTO cameras VALUES (?, ?, ?, ?, ?, ?)",
                                   (camera_id, model.model_id, int(camera.width), int(camera.height),
                                    params.tobytes(), int(db.known_focal[k])))
                connection.execute("INSERT INTO rigs VALUES (?, ?, ?)", (camera_id, camera_id, _CAMERA_SENSOR))
            for k, (name, camera, keypoints) in enumerate(zip(db.names, db.cameras, db.keypoints)):
                image_id, camera_id = k + 1, camera_ids[id(camera)]
                connection.execute("INSERT INTO images VALUES (?, ?, ?)", (image_id, name, camera_id))
                connection.execute("INSERT INTO frames VALUES (?, ?)", (image_id, camera_id))
                connection.execute("INSERT INTO frame_data VALUES (?, ?, ?, ?)",
                                   (image_id, image_id, camera_id, _CAMERA_SENSOR))
                xy = np.ascontiguousarray(np.asarray(keypoints, dtype=np.float32).reshape(-1, 2))
                connection.execute("INSERT INTO keypoints VALUES (?, ?, ?, ?)", (image_id, len(xy), 2, xy.tobytes()))
            for (i, j), m in sorted(db.matches.items()):
                m = np.ascontiguousarray(np.asarray(m, dtype=np.uint32).reshape(-1, 2))
                connection.execute("INSERT INTO matches VALUES (?, ?, ?, ?)", (pair_id(i + 1, j + 1), len(m), 2, m.tobytes()))
            connection.commit()
        finally:
            connection.close()
    return path


def _blob_array(blob: bytes | None, rows: int, cols: int, dtype: type, where: str) -> np.ndarray:
    if rows == 0 or blob is None:
        return np.zeros((0, max(cols, 0)), dtype=dtype)
    data = np.frombuffer(blob, dtype=dtype)
    if cols < 1 or data.size != rows * cols:
        raise InputError(f"{where}: {rows}x{cols} values announced, {data.size} stored")
    return data.reshape(rows, cols)


def read_database(path: str | Path) -> FeatureDatabase:
    """Read the images, cameras, keypoints and raw matches of a COLMAP database.

    Images are ordered by image id. Raises `InputError` for a missing file, a file that is not a COLMAP database,
    or inconsistent contents (unknown camera model, a blob whose size does not match its shape, matches that name
    unknown images or keypoints).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"COLMAP database {path} does not exist")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return _read(connection, path)
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path} is not a readable COLMAP database ({exc})") from None


def _read(connection: sqlite3.Connection, path: Path) -> FeatureDatabase:
    cameras: dict[int, tuple[Camera, bool]] = {}
    for camera_id, model_id, width, height, blob, prior in connection.execute(
            "SELECT camera_id, model, width, height, params, prior_focal_length FROM cameras"):
        model = model_by_id(model_id)
        params = _blob_array(blob, 1, model.num_params, np.float64, f"{path}: camera {camera_id}")[0]
        cameras[camera_id] = (Camera(model.name, int(width), int(height), params.copy()), bool(prior))
    names, image_cameras, known, index = [], [], [], {}
    for image_id, name, camera_id in connection.execute("SELECT image_id, name, camera_id FROM images ORDER BY image_id"):
        if camera_id not in cameras:
            raise InputError(f"{path}: image {name} refers to missing camera {camera_id}")
        index[image_id] = len(names)
        names.append(name)
        image_cameras.append(cameras[camera_id][0])
        known.append(cameras[camera_id][1])
    keypoints = [np.zeros((0, 2)) for _ in names]
    for image_id, rows, cols, blob in connection.execute("SELECT image_id, rows, cols, data FROM keypoints"):
        if image_id not in index:
            raise InputError(f"{path}: keypoints of unknown image id {image_id}")
        data = _blob_array(blob, rows, cols, np.float32, f"{path}: keypoints of image {image_id}")
        if data.shape[1] < 2:
            raise InputError(f"{path}: keypoints of image {image_id} have {cols} columns, need at least 2")
        keypoints[index[image_id]] = data[:, :2].astype(np.float64)
    matches: dict[tuple[int, int], np.ndarray] = {}
    for value, rows, cols, blob in connection.execute("SELECT pair_id, rows, cols, data FROM matches"):
        id1, id2 = image_ids_from_pair_id(value)
        if id1 not in index or id2 not in index:
            raise InputError(f"{path}: matches of unknown image ids {id1} and {id2}")
        if rows == 0:
            continue
        if cols != 2:
            raise InputError(f"{path}: matches of images {id1} and {id2} have {cols} columns, expected 2")
        m = _blob_array(blob, rows, cols, np.uint32, f"{path}: matches of images {id1} and {id2}").astype(np.int64)
        i, j = index[id1], index[id2]
        if i > j:  # image ids and positions agree in order, but a database may number images arbitrarily
            i, j, m = j, i, m[:, ::-1].copy()
        matches[(i, j)] = m
    return FeatureDatabase(names, image_cameras, keypoints, matches, known)
