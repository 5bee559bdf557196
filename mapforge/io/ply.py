"""PLY point clouds and triangle meshes (binary little-endian by default, ASCII on request), through plyfile.

Writers use the names most tools expect: `x y z` (float, or double on request), `nx ny nz` (float), `red green
blue` (uchar) and faces as `list uchar int vertex_indices`. Readers accept any numeric type for coordinates and
the common variants of the other names (`r g b`, `diffuse_red ...`, `normal_x ...`, `vertex_index`), colours
stored as floats in [0, 1] or as 16-bit values, and polygons (fan-triangulated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plyfile

from mapforge.errors import InputError, MapforgeError
from mapforge.io.atomic import atomic_path

_COLOR_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_NORMAL_NAMES = (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))
_FACE_NAMES = ("vertex_indices", "vertex_index")


# ---------------------------------------------------------------------------------------------------------------
# Writing


def write_point_cloud(
    path: str | Path,
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    *,
    binary: bool = True,
    double: bool = False,
) -> Path:
    """Write points `xyz: [N, 3]` with optional colours `rgb: [N, 3]` uint8 and `normals: [N, 3]` as a PLY file.

    Coordinates are stored as float32 unless `double` (use it for georeferenced coordinates, which float32
    rounds to centimetres or worse). Written atomically; returns `path`.
    """
    vertices = _vertex_array(xyz, rgb, normals, double)
    _write(path, [vertices], binary)
    return Path(path)


def write_mesh(
    path: str | Path,
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    normals: np.ndarray | None = None,
    binary: bool = True,
    double: bool = False,
) -> Path:
    """Write a triangle mesh: `vertices: [V, 3]`, `faces: [F, 3]` vertex indices, optional per-vertex
    `colors: [V, 3]` uint8 and `normals: [V, 3]`. Written atomically; returns `path`."""
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise MapforgeError(f"faces must have shape [F, 3], got {list(faces.shape)}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise MapforgeError(f"faces must hold integer vertex indices, got {faces.dtype}")
    vertex_data = _vertex_array(vertices, colors, normals, double)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertex_data)):
        raise MapforgeError(f"face indices must lie in [0, {len(vertex_data) - 1}], got [{faces.min()}, {faces.max()}]")
    if faces.max(initial=0) >= 2**31:
        raise MapforgeError("meshes with more than 2^31 vertices cannot be written as PLY int indices")
    _write(path, [vertex_data, faces.astype(np.int32)], binary)
    return Path(path)


def _vertex_array(xyz: np.ndarray, rgb: np.ndarray | None, normals: np.ndarray | None, double: bool) -> np.ndarray:
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise MapforgeError(f"points must have shape [N, 3], got {list(xyz.shape)}")
    n = len(xyz)
    coord = "<f8" if double else "<f4"
    fields = [("x", coord), ("y", coord), ("z", coord)]
    columns = list(xyz.T)
    if normals is not None:
        normals = _check_shape(normals, n, "normals")
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        columns += list(normals.T)
    if rgb is not None:
        rgb = _check_shape(rgb, n, "colours")
        if rgb.dtype != np.uint8:
            raise MapforgeError(f"colours must be uint8, got {rgb.dtype}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        columns += list(rgb.T)
    out = np.empty(n, dtype=fields)
    for (name, _), column in zip(fields, columns):
        out[name] = column
    return out


def _check_shape(values: np.ndarray, n: int, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n, 3):
        raise MapforgeError(f"{what} must have shape [{n}, 3], got {list(values.shape)}")
    return values


def _write(path: str | Path, arrays: list[np.ndarray], binary: bool) -> None:
    vertices = plyfile.PlyElement.describe(arrays[0], "vertex")
    if len(arrays) == 1:
        elements = [vertices]
    elif binary:
        # plyfile writes list properties row by row; the fixed-length body is written below in one go instead
        face_property = plyfile.PlyListProperty(_FACE_NAMES[0], "uchar", "int")
        elements = [vertices, plyfile.PlyElement("face", [face_property], len(arrays[1]))]
    else:
        faces = np.empty(len(arrays[1]), dtype=[(_FACE_NAMES[0], "<i4", (3,))])
        faces[_FACE_NAMES[0]] = arrays[1]
        elements = [vertices, plyfile.PlyElement.describe(faces, "face")]
    ply = plyfile.PlyData(elements, text=not binary, byte_order="<", comments=["written by mapforge"])
    with atomic_path(path) as tmp:
        if binary and len(arrays) == 2:
            faces = np.empty(len(arrays[1]), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
            faces["count"] = 3
            faces["indices"] = arrays[1]
            with open(tmp, "wb") as file:
                file.write(ply.header.encode("ascii") + b"\n")
                file.write(arrays[0].tobytes())
                file.write(faces.tobytes())
        else:
            ply.write(str(tmp))


# ---------------------------------------------------------------------------------------------------------------
# Reading


def read_point_cloud(path: str | Path, normals: bool = False) -> tuple[np.ndarray, ...]:
    """Read the vertices of a PLY file as `(xyz [N, 3] float64, rgb [N, 3] uint8 or None)`.

    With `normals=True` returns `(xyz, rgb, normals)` where normals is `[N, 3]` float64 or None.
    """
    path = Path(path)
    vertex = _vertex_element(_read(path), path)
    xyz = _xyz(vertex, path)
    rgb = _colors(vertex)
    if normals:
        return xyz, rgb, _normals(vertex)
    return xyz, rgb


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a PLY mesh as `(vertices [V, 3] float64, faces [F, 3] int64, colors [V, 3] uint8 or None)`.

    Polygons with more than three corners are split into triangle fans; a file without faces is an error.
    """
    path = Path(path)
    ply = _read(path)
    vertex = _vertex_element(ply, path)
    vertices = _xyz(vertex, path)
    faces = _faces(ply, path)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InputError(f"{path}: face indices [{faces.min()}, {faces.max()}] outside the {len(vertices)} vertices")
    return vertices, faces, _colors(vertex)


def _read(path: Path) -> plyfile.PlyData:
    if not path.is_file():
        raise InputError(f"PLY file {path} does not exist")
    triangles = {"face": {name: 3 for name in _FACE_NAMES}}
    try:
        try:
            # memory-mapped reading with a known list length parses triangle faces in one go (and still checks it)
            return plyfile.PlyData.read(str(path), known_list_len=triangles)
        except plyfile.PlyElementParseError as exc:
            if "unexpected list length" not in str(exc):
                raise
            return plyfile.PlyData.read(str(path))  # polygons other than triangles
    except plyfile.PlyParseError as exc:
        raise InputError(f"{path}: malformed PLY file: {exc}") from exc
    except (ValueError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"{path}: malformed PLY file: {exc}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _vertex_element(ply: plyfile.PlyData, path: Path) -> np.ndarray:
    names = [element.name for element in ply.elements]
    if "vertex" not in names:
        raise InputError(f"{path}: PLY file has no 'vertex' element (elements: {', '.join(names) or 'none'})")
    return ply["vertex"].data


def _columns(data: np.ndarray, variants: tuple[tuple[str, ...], ...]) -> tuple[np.ndarray, ...] | None:
    available = set(data.dtype.names or ())
    for names in variants:
        if set(names) <= available:
            return tuple(data[name] for name in names)
    return None


def _xyz(vertex: np.ndarray, path: Path) -> np.ndarray:
    columns = _columns(vertex, (("x", "y", "z"),))
    if columns is None:
        raise InputError(f"{path}: PLY vertices have no x, y, z properties (found: {', '.join(vertex.dtype.names)})")
    return np.stack(columns, axis=1).astype(np.float64)


def _colors(vertex: np.ndarray) -> np.ndarray | None:
    columns = _columns(vertex, _COLOR_NAMES)
    if columns is None:
        return None
    rgb = np.stack(columns, axis=1)
    if np.issubdtype(rgb.dtype, np.floating):
        return np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    if rgb.dtype.itemsize == 2:
        return (rgb.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _normals(vertex: np.ndarray) -> np.ndarray | None:
    columns = _columns(vertex, _NORMAL_NAMES)
    return None if columns is None else np.stack(columns, axis=1).astype(np.float64)


def _faces(ply: plyfile.PlyData, path: Path) -> np.ndarray:
    names = [element.name for element in ply.elements]
    if "face" not in names:
        raise InputError(f"{path}: PLY file has no 'face' element, so it is not a mesh")
    data = ply["face"].data
    name = next((n for n in _FACE_NAMES if n in (data.dtype.names or ())), None)
    if name is None:
        raise InputError(f"{path}: PLY faces have no vertex_indices property (found: {', '.join(data.dtype.names)})")
    column = data[name]
    if column.dtype != object:  # fixed length 3, parsed in one go
        return column.reshape(-1, 3).astype(np.int64)
    triangles = []
    for polygon in column:
        polygon = np.asarray(polygon, dtype=np.int64)
        if len(polygon) < 3:
            raise InputError(f"{path}: a face has {len(polygon)} corners (a triangle needs 3)")
        triangles.append(np.stack([np.full(len(polygon) - 2, polygon[0]), polygon[1:-1], polygon[2:]], axis=1))
    return np.concatenate(triangles) if triangles else np.zeros((0, 3), dtype=np.int64)
