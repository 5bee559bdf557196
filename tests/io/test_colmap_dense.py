from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from mapforge.errors import InputError, MapforgeError
from mapforge.io.colmap_dense import (
    PatchMatchProblem,
    map_path,
    read_array,
    read_fusion_cfg,
    read_patch_match_cfg,
    write_array,
    write_fusion_cfg,
    write_patch_match_cfg,
)


def _normals(height: int, width: int) -> np.ndarray:
    """Unit normals facing an OpenCV camera, different at every pixel: `[H, W, 3]` float32."""
    yy, xx = np.mgrid[0:height, 0:width]
    n = np.stack([(xx - width / 2) / width, (yy - height / 2) / height, -np.ones((height, width))], axis=-1)
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def test_round_trips_one_and_three_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 9.0, size=(5, 7)).astype(np.float32)
    depth[1, 2] = 0.0
    assert write_array(tmp_path / "d.bin", depth) == tmp_path / "d.bin"
    back = read_array(tmp_path / "d.bin")
    assert back.dtype == np.float32 and back.shape == (5, 7)
    np.testing.assert_array_equal(back, depth)
    normals = _normals(4, 6)
    write_array(tmp_path / "n.bin", normals)
    back = read_array(tmp_path / "n.bin")
    assert back.shape == (4, 6, 3) and back.flags.c_contiguous
    np.testing.assert_array_equal(back, normals)
    write_array(tmp_path / "one.bin", depth[:, :, None].astype(np.float64))  # [H, W, 1] reads back as [H, W]
    np.testing.assert_array_equal(read_array(tmp_path / "one.bin"), depth)
    assert not list(tmp_path.glob(".*.tmp"))


def test_byte_layout_is_colmaps_channel_planar_mat(tmp_path: Path) -> None:
    # value(row, col, c) = data[c * W * H + row * W + col], after the header "W&H&C&"
    height, width, channels = 2, 3, 2
    values = {(r, c, k): 100 * k + 10 * r + c for r in range(height) for c in range(width) for k in range(channels)}
    data = [0.0] * (height * width * channels)
    for (r, c, k), value in values.items():
        data[k * width * height + r * width + c] = value
    hand_built = b"3&2&2&" + struct.pack(f"<{len(data)}f", *data)
    (tmp_path / "hand.bin").write_bytes(hand_built)
    array = read_array(tmp_path / "hand.bin")
    for (r, c, k), value in values.items():
        assert array[r, c, k] == value
    write_array(tmp_path / "ours.bin", array)
    assert (tmp_path / "ours.bin").read_bytes() == hand_built


def test_header_edge_cases(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    # the first value's bytes hold '&' (0x26) and digits: the header ends at the third '&', not later
    value = struct.unpack("<f", b"&&12")[0]
    path.write_bytes(b"1&1&1&" + struct.pack("<f", value))
    np.testing.assert_array_equal(read_array(path), [[value]])
    # multi-digit sizes, and whitespace around the numbers as COLMAP's stream reader skips it
    big = np.arange(12 * 10, dtype=np.float32).reshape(10, 12)
    path.write_bytes(b" 12 &\n10& 1&" + big.tobytes())
    np.testing.assert_array_equal(read_array(path), big)
    write_array(path, big)
    assert path.read_bytes().startswith(b"12&10&1&") and path.stat().st_size == 8 + 4 * 120


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no 'width&height&channels&' header"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "no 'width&height&channels&' header"),
        (b"3&2&", "no 'width&height&channels&' header"),
        (b"3,2,1," + bytes(24), "no 'width&height&channels&' header"),
        (b"-3&2&1&" + bytes(24), "no 'width&height&channels&' header"),
        (b"3&0&1&", "empty size 3x0x1"),
        (b"3&2&1&" + bytes(23), "truncated"),
        (b"3&2&1&" + bytes(28), "longer than its header says"),
        (b"99999999999&99999999999&3&" + bytes(8), "truncated"),
    ],
)
def test_malformed_array_files_are_one_line_input_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read_array(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_file_and_bad_arrays(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_array(tmp_path / "absent.bin")
    for bad in (np.zeros(4, np.float32), np.zeros((0, 3), np.float32), np.zeros((2, 2), np.int32)):
        with pytest.raises(MapforgeError):
            write_array(tmp_path / "x.bin", bad)
    assert not (tmp_path / "x.bin").exists()


def test_map_paths_follow_colmaps_workspace() -> None:
    assert map_path("W", "depth", "a/b.jpg", "geometric") == Path("W/stereo/depth_maps/a/b.jpg.geometric.bin")
    assert map_path("W", "normal", "c.png", "photometric") == Path("W/stereo/normal_maps/c.png.photometric.bin")
    with pytest.raises(MapforgeError):
        map_path("W", "depth", "c.png", "fused")


def test_patch_match_cfg_round_trip_and_colmaps_parsing(tmp_path: Path) -> None:
    problems = [
        PatchMatchProblem("a.jpg", sources=("b.jpg", "sub dir/c.jpg")),
        PatchMatchProblem("b.jpg", auto=20),
        PatchMatchProblem("sub dir/c.jpg", use_all=True),
    ]
    path = write_patch_match_cfg(tmp_path / "patch-match.cfg", problems)
    assert path.read_text() == "a.jpg\nb.jpg, sub dir/c.jpg\nb.jpg\n__auto__, 20\nsub dir/c.jpg\n__all__\n"
    assert read_patch_match_cfg(path) == problems
    # what COLMAP also accepts: comments, blank lines, CRLF, ';' separators, stray spaces and empty items
    path.write_bytes(b"# written by hand\r\n\r\n  a.jpg \r\nb.jpg;sub dir/c.jpg ,\r\n\nb.jpg\n  __auto__ ,20\n"
                     b"sub dir/c.jpg\n__all__")
    assert read_patch_match_cfg(path) == problems


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a.jpg\n", "has no line of source images"),
        ("a.jpg\n__auto__, x\n", "expected '__auto__, N'"),
        ("a.jpg\n__auto__, 0\n", "expected '__auto__, N'"),
        ("a.jpg\n , ;\n", "no source image names"),
    ],
)
def test_malformed_patch_match_cfg(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "patch-match.cfg"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_patch_match_cfg(path)


def test_names_colmap_would_misread_are_refused(tmp_path: Path) -> None:
    for problem in (PatchMatchProblem("a.jpg", sources=("b,c.jpg",)), PatchMatchProblem(" a.jpg", auto=3),
                    PatchMatchProblem("#a.jpg", auto=3), PatchMatchProblem("a.jpg", sources=("__all__",))):
        with pytest.raises(MapforgeError, match="COLMAP would read it differently"):
            write_patch_match_cfg(tmp_path / "patch-match.cfg", [problem])
    with pytest.raises(MapforgeError):
        PatchMatchProblem("a.jpg", sources=("b.jpg",), auto=3)
    with pytest.raises(MapforgeError):
        PatchMatchProblem("a.jpg")
    with pytest.raises(MapforgeError):
        write_fusion_cfg(tmp_path / "fusion.cfg", ["a\nb.jpg"])
    assert not list(tmp_path.iterdir())


def test_fusion_cfg_round_trip(tmp_path: Path) -> None:
    names = ["a.jpg", "sub/b.jpg", "#not a comment.jpg", "with, comma.jpg"]
    path = write_fusion_cfg(tmp_path / "fusion.cfg", names)
    assert path.read_text() == "".join(f"{n}\n" for n in names)
    assert read_fusion_cfg(path) == names
    path.write_text("\n a.jpg\r\n\n")
    assert read_fusion_cfg(path) == ["a.jpg"]
    with pytest.raises(InputError, match="cannot read"):
        read_fusion_cfg(tmp_path / "absent.cfg")


def test_parity_with_pycolmap(tmp_path: Path) -> None:
    pycolmap = pytest.importorskip("pycolmap")
    depth = np.random.default_rng(1).uniform(1.0, 5.0, size=(6, 9)).astype(np.float32)
    ours, theirs = tmp_path / "ours.bin", tmp_path / "theirs.bin"
    write_array(ours, depth)
    pycolmap.DepthMap.from_array(depth, 1.0, 5.0).write(str(theirs))
    assert ours.read_bytes() == theirs.read_bytes()
    loaded = pycolmap.DepthMap()
    loaded.read(str(ours))
    np.testing.assert_array_equal(loaded.to_array(), depth)
    np.testing.assert_array_equal(read_array(theirs), depth)
    # Normal maps: pycolmap's from_array/to_array copy [H, W, 3] memory as it is into COLMAP's channel-planar
    # buffer, so they do not show the layout; COLMAP's own per-pixel reads (NormalMap::ToBitmap) do.
    normals = _normals(5, 8)
    write_array(ours, normals)
    loaded = pycolmap.NormalMap()
    loaded.read(str(ours))
    assert (loaded.width, loaded.height) == (8, 5)
    bitmap = loaded.to_bitmap().to_array()
    expected = np.stack([127.5 * (1 - normals[..., 0]), 127.5 * (1 - normals[..., 1]), -255.0 * normals[..., 2]], -1)
    np.testing.assert_allclose(bitmap.astype(float), expected, atol=1.0)
