"""3DGS PLY and .splat files: layout, round trips, lower SH degrees, quantisation of .splat."""

from __future__ import annotations

import numpy as np
import plyfile
import pytest

from mapforge.errors import InputError, MapforgeError
from mapforge.geometry.rotations import quat_to_matrix
from mapforge.io.gaussians import SH_C0, GaussianData, read_gaussian_ply, read_splat, write_gaussian_ply, write_splat


def _gaussians(rng: np.random.Generator, n: int = 200, degree: int = 3) -> GaussianData:
    return GaussianData(
        means=rng.normal(size=(n, 3)),
        log_scales=rng.normal(-3, 1, size=(n, 3)),
        quats=rng.normal(size=(n, 4)),
        opacity_logits=rng.normal(size=n),
        sh=rng.normal(0, 0.5, size=(n, (degree + 1) ** 2, 3)),
    )


def test_dataclass_checks(rng):
    data = _gaussians(rng, degree=2)
    assert data.degree == 2 and len(data) == 200 and data.sh.dtype == np.float32
    with pytest.raises(MapforgeError, match="degree"):
        GaussianData(data.means, data.log_scales, data.quats, data.opacity_logits, data.sh[:, :5])
    with pytest.raises(MapforgeError, match="quats"):
        GaussianData(data.means, data.log_scales, data.quats[:, :3], data.opacity_logits, data.sh)


def test_ply_layout_matches_3dgs(tmp_path, rng):
    data = _gaussians(rng, degree=3)
    path = write_gaussian_ply(tmp_path / "point_cloud.ply", data)
    ply = plyfile.PlyData.read(str(path))
    assert ply.header.splitlines()[1] == "format binary_little_endian 1.0"
    vertex = ply["vertex"]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    expected += ["rot_0", "rot_1", "rot_2", "rot_3"]
    assert [p.name for p in vertex.properties] == expected
    assert all(p.val_dtype == "f4" for p in vertex.properties)
    v = vertex.data
    np.testing.assert_array_equal(v["nx"], 0)
    np.testing.assert_array_equal(v["f_dc_1"], data.sh[:, 0, 1])
    # channel-major rest: R coefficients 1..15, then G, then B
    np.testing.assert_array_equal(v["f_rest_0"], data.sh[:, 1, 0])
    np.testing.assert_array_equal(v["f_rest_14"], data.sh[:, 15, 0])
    np.testing.assert_array_equal(v["f_rest_15"], data.sh[:, 1, 1])
    np.testing.assert_array_equal(v["f_rest_44"], data.sh[:, 15, 2])
    np.testing.assert_array_equal(v["rot_0"], data.quats[:, 0])  # w first, not normalised
    np.testing.assert_array_equal(v["scale_2"], data.log_scales[:, 2])
    np.testing.assert_array_equal(v["opacity"], data.opacity_logits)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip(tmp_path, rng, degree):
    data = _gaussians(rng, degree=degree)
    back = read_gaussian_ply(write_gaussian_ply(tmp_path / "g.ply", data))
    assert back.degree == degree
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))


def test_reads_double_properties_in_any_order_with_extras(tmp_path, rng):
    data = _gaussians(rng, n=30, degree=1)
    names = ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "opacity", "x", "y", "z", "filter_3D"]
    names += [f"f_rest_{i}" for i in reversed(range(9))] + ["f_dc_0", "f_dc_1", "f_dc_2"]
    vertex = np.empty(30, dtype=[(n, "<f8") for n in names])
    for i, axis in enumerate("xyz"):
        vertex[axis] = data.means[:, i]
    for i in range(3):
        vertex[f"scale_{i}"] = data.log_scales[:, i]
        vertex[f"f_dc_{i}"] = data.sh[:, 0, i]
        for k in range(1, 4):
            vertex[f"f_rest_{i * 3 + k - 1}"] = data.sh[:, k, i]
    for i in range(4):
        vertex[f"rot_{i}"] = data.quats[:, i]
    vertex["opacity"] = data.opacity_logits
    vertex["filter_3D"] = 1.0
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "other.ply"))
    back = read_gaussian_ply(tmp_path / "other.ply")
    assert back.degree == 1 and back.means.dtype == np.float32
    np.testing.assert_array_equal(back.sh, data.sh)
    np.testing.assert_array_equal(back.quats, data.quats)


def test_malformed_gaussian_ply(tmp_path, rng):
    with pytest.raises(InputError, match="does not exist"):
        read_gaussian_ply(tmp_path / "missing.ply")
    vertex = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "plain.ply"))
    with pytest.raises(InputError, match="not a 3D Gaussian splatting PLY"):
        read_gaussian_ply(tmp_path / "plain.ply")
    path = write_gaussian_ply(tmp_path / "g.ply", _gaussians(rng, n=10))
    (tmp_path / "cut.ply").write_bytes(path.read_bytes()[:-7])
    with pytest.raises(InputError, match="cut.ply: malformed PLY"):
        read_gaussian_ply(tmp_path / "cut.ply")


def test_splat_round_trip_within_quantisation(tmp_path, rng):
    data = _gaussians(rng, n=300, degree=2)
    path = write_splat(tmp_path / "scene.splat", data)
    raw = path.read_bytes()
    assert len(raw) == 32 * len(data)
    back = read_splat(path)
    assert back.degree == 0 and len(back) == len(data)
    # sorted by decreasing volume * opacity
    importance = np.exp(data.log_scales.sum(1)) / (1 + np.exp(-data.opacity_logits))
    order = np.argsort(-importance, kind="stable")
    np.testing.assert_array_equal(back.means, data.means[order])
    np.testing.assert_allclose(back.log_scales, data.log_scales[order], atol=1e-5)
    colour = np.clip(0.5 + SH_C0 * data.sh[order, 0], 0, 1)
    back_colour = 0.5 + SH_C0 * back.sh[:, 0]
    assert np.all(np.abs(back_colour - colour) <= 1 / 255 + 1e-6)
    alpha = 1 / (1 + np.exp(-data.opacity_logits[order]))
    back_alpha = 1 / (1 + np.exp(-back.opacity_logits))
    assert np.all(np.abs(back_alpha - alpha) <= 1 / 255 + 1e-6)
    rotations = quat_to_matrix(data.quats[order].astype(np.float64))
    back_rotations = quat_to_matrix(back.quats.astype(np.float64))
    cos = (np.einsum("nij,nij->n", rotations, back_rotations) - 1) / 2
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 3.0  # 8-bit components: about 1 degree typical


def test_splat_record_layout(tmp_path):
    data = GaussianData(
        means=[[1, 2, 3], [4, 5, 6]],
        log_scales=np.log([[0.1, 0.1, 0.1], [1.0, 2.0, 3.0]]),
        quats=[[2, 0, 0, 0], [0, 0, 0, -1]],
        opacity_logits=[0.0, 100.0],
        sh=[[[0.0, 10.0, -10.0]], [[(0.25 - 0.5) / SH_C0, 0, 0]]],
    )
    raw = write_splat(tmp_path / "two.splat", data).read_bytes()
    big = np.frombuffer(raw[:24], "<f4")  # the larger, opaque Gaussian comes first
    np.testing.assert_allclose(big, [4, 5, 6, 1, 2, 3], rtol=1e-6)
    assert list(raw[24:32]) == [63, 127, 127, 255, 128, 128, 128, 0]
    assert list(raw[56:64]) == [127, 255, 0, 127, 255, 128, 128, 128]


def test_malformed_splat(tmp_path):
    (tmp_path / "bad.splat").write_bytes(b"\0" * 33)
    with pytest.raises(InputError, match="32-byte"):
        read_splat(tmp_path / "bad.splat")
    with pytest.raises(InputError, match="does not exist"):
        read_splat(tmp_path / "missing.splat")
