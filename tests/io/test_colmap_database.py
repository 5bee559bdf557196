"""COLMAP feature databases: round trips through pycolmap in both directions, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.io.colmap_database import FeatureDatabase, image_ids_from_pair_id, pair_id, read_database, write_database
from mapforge.scene import Camera


def _example(rng: np.random.Generator) -> FeatureDatabase:
    shared = Camera("SIMPLE_RADIAL", 640, 480, [500.0, 320.0, 240.0, 0.01])
    own = Camera("PINHOLE", 800, 600, [700.0, 710.0, 400.5, 299.5])
    keypoints = [rng.uniform(0, 480, size=(n, 2)) for n in (30, 25, 40)]
    matches = {(0, 1): np.array([[0, 3], [5, 7], [29, 24]]), (1, 2): np.array([[1, 2], [2, 39]])}
    return FeatureDatabase(["a.jpg", "sub/b.jpg", "c.png"], [shared, shared, own], keypoints, matches,
                           [True, True, False])


def test_pair_ids_follow_colmap() -> None:
    assert pair_id(1, 2) == pair_id(2, 1) == 2147483649
    assert image_ids_from_pair_id(pair_id(7, 3)) == (3, 7)


def test_round_trip(tmp_path, rng) -> None:
    db = _example(rng)
    back = read_database(write_database(db, tmp_path / "database.db"))
    assert back.names == db.names
    assert back.cameras[0] is back.cameras[1] and back.cameras[2] is not back.cameras[0]
    assert back.cameras[2].model == "PINHOLE" and np.allclose(back.cameras[2].params, db.cameras[2].params)
    assert back.known_focal == [True, True, False]
    for a, b in zip(back.keypoints, db.keypoints):
        np.testing.assert_allclose(a, b.astype(np.float32))
    assert set(back.matches) == set(db.matches)
    for key in db.matches:
        np.testing.assert_array_equal(back.matches[key], db.matches[key])


def test_pycolmap_reads_what_we_write(tmp_path, rng) -> None:
    pycolmap = pytest.importorskip("pycolmap")
    db = _example(rng)
    write_database(db, tmp_path / "database.db")
    theirs = pycolmap.Database.open(str(tmp_path / "database.db"))
    try:
        assert theirs.num_images() == 3 and theirs.num_cameras() == 2 and theirs.num_frames() == 3
        image = theirs.read_image_with_name("sub/b.jpg")
        np.testing.assert_allclose(theirs.read_keypoints(image.image_id), db.keypoints[1].astype(np.float32))
        np.testing.assert_array_equal(theirs.read_matches(1, 2), db.matches[(0, 1)])
        np.testing.assert_array_equal(theirs.read_matches(3, 2), db.matches[(1, 2)][:, ::-1])
        camera = theirs.read_camera(image.camera_id)
        assert camera.model.name == "SIMPLE_RADIAL" and camera.has_prior_focal_length
    finally:
        theirs.close()


def test_we_read_what_pycolmap_writes(tmp_path, rng) -> None:
    pycolmap = pytest.importorskip("pycolmap")
    path = tmp_path / "database.db"
    theirs = pycolmap.Database.open(str(path))
    try:
        camera_id = theirs.write_camera(pycolmap.Camera(model="SIMPLE_PINHOLE", width=100, height=80, params=[90, 50, 40]))
        ids = [theirs.write_image(pycolmap.Image(name=name, camera_id=camera_id)) for name in ("x.jpg", "y.jpg")]
        keypoints = [rng.uniform(0, 80, size=(n, 6)).astype(np.float32) for n in (5, 4)]
        for image_id, kp in zip(ids, keypoints):
            theirs.write_keypoints(image_id, kp)
        theirs.write_matches(ids[1], ids[0], np.array([[0, 4], [3, 1]], dtype=np.uint32))
    finally:
        theirs.close()
    db = read_database(path)
    assert db.names == ["x.jpg", "y.jpg"] and db.cameras[0].model == "SIMPLE_PINHOLE"
    np.testing.assert_allclose(db.keypoints[1], keypoints[1][:, :2])
    np.testing.assert_array_equal(db.matches[(0, 1)], [[4, 0], [1, 3]])


def test_bad_files_give_input_errors(tmp_path, rng) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_database(tmp_path / "missing.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="not a readable COLMAP database"):
        read_database(garbage)
    with pytest.raises(InputError, match="index missing keypoints"):
        db = _example(rng)
        FeatureDatabase(db.names, db.cameras, db.keypoints, {(0, 1): np.array([[0, 99]])}, db.known_focal)
