"""PLY point clouds and meshes: round trips, name and type variants other tools write, malformed files."""

from __future__ import annotations

import numpy as np
import plyfile
import pytest

from mapforge.errors import InputError, MapforgeError
from mapforge.io.ply import read_mesh, read_point_cloud, write_mesh, write_point_cloud


@pytest.mark.parametrize("binary", [True, False])
def test_point_cloud_round_trip(tmp_path, rng, binary):
    xyz = rng.normal(size=(500, 3)) * 10
    rgb = rng.integers(0, 256, (500, 3)).astype(np.uint8)
    normals = rng.normal(size=(500, 3))
    path = write_point_cloud(tmp_path / "points.ply", xyz, rgb, normals, binary=binary)
    back, back_rgb, back_normals = read_point_cloud(path, normals=True)
    np.testing.assert_allclose(back, xyz, rtol=1e-6)  # float32 on disk
    np.testing.assert_array_equal(back_rgb, rgb)
    np.testing.assert_allclose(back_normals, normals, rtol=1e-6)
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert ("binary_little_endian" if binary else "ascii") in header
    assert "property float x" in header and "property uchar red" in header and "property float nx" in header


def test_point_cloud_double_and_without_colours(tmp_path, rng):
    xyz = rng.normal(size=(50, 3)) + [4.5e6, 5.4e6, 300.0]  # georeferenced: float32 would round to ~0.5 m
    write_point_cloud(tmp_path / "geo.ply", xyz, double=True)
    back, rgb = read_point_cloud(tmp_path / "geo.ply")
    np.testing.assert_array_equal(back, xyz)
    assert rgb is None
    assert read_point_cloud(tmp_path / "geo.ply", normals=True)[2] is None


def test_empty_point_cloud(tmp_path):
    write_point_cloud(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    xyz, rgb = read_point_cloud(tmp_path / "empty.ply")
    assert xyz.shape == (0, 3) and rgb.shape == (0, 3)


def _plyfile_write(path, fields: dict[str, np.ndarray], text: bool = False, faces=None) -> None:
    vertex = np.empty(len(next(iter(fields.values()))), dtype=[(name, col.dtype) for name, col in fields.items()])
    for name, col in fields.items():
        vertex[name] = col
    elements = [plyfile.PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        elements.append(faces)
    plyfile.PlyData(elements, text=text).write(str(path))


@pytest.mark.parametrize("names", [("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")])
def test_reads_colour_name_variants(tmp_path, rng, names):
    xyz = rng.normal(size=(20, 3))
    rgb = rng.integers(0, 256, (20, 3)).astype(np.uint8)
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}  # float64 = "double" properties
    fields.update({name: rgb[:, i] for i, name in enumerate(names)})
    _plyfile_write(tmp_path / "v.ply", fields)
    back, back_rgb = read_point_cloud(tmp_path / "v.ply")
    np.testing.assert_array_equal(back, xyz)
    np.testing.assert_array_equal(back_rgb, rgb)


def test_reads_float_and_16_bit_colours(tmp_path, rng):
    rgb = rng.integers(0, 256, (20, 3)).astype(np.uint8)
    xyz = rng.normal(size=(20, 3)).astype(np.float32)
    base = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    _plyfile_write(tmp_path / "f.ply", {**base, **{n: (rgb[:, i] / 255).astype(np.float32) for i, n in enumerate("rgb")}})
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "f.ply")[1], rgb)
    _plyfile_write(tmp_path / "s.ply", {**base, **{n: rgb[:, i].astype(np.uint16) * 257 for i, n in enumerate(("red", "green", "blue"))}})
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "s.ply")[1], rgb)


@pytest.mark.parametrize("binary", [True, False])
def test_mesh_round_trip(tmp_path, rng, binary):
    vertices = rng.normal(size=(100, 3))
    faces = rng.integers(0, 100, (300, 3))
    colors = rng.integers(0, 256, (100, 3)).astype(np.uint8)
    path = write_mesh(tmp_path / "mesh.ply", vertices, faces, colors, binary=binary)
    back_vertices, back_faces, back_colors = read_mesh(path)
    np.testing.assert_allclose(back_vertices, vertices, rtol=1e-6)
    np.testing.assert_array_equal(back_faces, faces)
    np.testing.assert_array_equal(back_colors, colors)
    # the file is what plyfile itself makes of the same data
    ply = plyfile.PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["vertex", "face"]
    np.testing.assert_array_equal(np.stack(list(ply["face"]["vertex_indices"])), faces)


def test_mesh_with_polygons_is_triangulated(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 2, 0]], dtype=np.float32)
    polygons = np.empty(2, dtype=object)
    polygons[:] = [np.array([0, 1, 2, 3], np.int32), np.array([3, 2, 4], np.int32)]
    faces = plyfile.PlyElement.describe(np.rec.fromarrays([polygons], names="vertex_index"), "face")
    _plyfile_write(tmp_path / "quads.ply", {"x": vertices[:, 0], "y": vertices[:, 1], "z": vertices[:, 2]}, faces=faces)
    _, triangles, colors = read_mesh(tmp_path / "quads.ply")
    np.testing.assert_array_equal(triangles, [[0, 1, 2], [0, 2, 3], [3, 2, 4]])
    assert colors is None


def test_malformed_files(tmp_path, rng):
    with pytest.raises(InputError, match="does not exist"):
        read_point_cloud(tmp_path / "missing.ply")
    (tmp_path / "garbage.ply").write_bytes(b"not a ply at all")
    with pytest.raises(InputError, match="garbage.ply: malformed PLY"):
        read_point_cloud(tmp_path / "garbage.ply")
    path = write_mesh(tmp_path / "mesh.ply", rng.normal(size=(10, 3)), rng.integers(0, 10, (20, 3)))
    data = path.read_bytes()
    for cut in (len(data) - 5, len(data) - 200):
        (tmp_path / "cut.ply").write_bytes(data[:cut])
        with pytest.raises(InputError, match="cut.ply: malformed PLY"):
            read_mesh(tmp_path / "cut.ply")
    write_point_cloud(tmp_path / "cloud.ply", rng.normal(size=(10, 3)))
    with pytest.raises(InputError, match="no 'face' element"):
        read_mesh(tmp_path / "cloud.ply")
    _plyfile_write(tmp_path / "noxyz.ply", {"u": np.zeros(3), "v": np.zeros(3)})
    with pytest.raises(InputError, match="no x, y, z"):
        read_point_cloud(tmp_path / "noxyz.ply")


def test_bad_arguments(tmp_path):
    with pytest.raises(MapforgeError, match="shape"):
        write_point_cloud(tmp_path / "a.ply", np.zeros((5, 2)))
    with pytest.raises(MapforgeError, match="uint8"):
        write_point_cloud(tmp_path / "a.ply", np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(MapforgeError, match="face indices"):
        write_mesh(tmp_path / "a.ply", np.zeros((3, 3)), [[0, 1, 3]])
    assert not list(tmp_path.iterdir())
