"""Checkerboard calibration against rendered boards seen by a known distorted camera."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.calibration import calibrate_checkerboard
from mapforge.cli import main
from mapforge.datasets.checkerboard import project_corners, random_board_poses, render_checkerboards
from mapforge.errors import InputError
from mapforge.io.colmap import read_cameras_text
from mapforge.io.images import write_image
from mapforge.scene import Camera

PATTERN = (9, 6)
SQUARE = 0.025
TRUE_CAMERA = Camera("OPENCV", 640, 480, [502.0, 498.0, 322.3, 238.1, -0.2, 0.05, 0.001, -0.0015])


@pytest.fixture(scope="module")
def boards() -> list[np.ndarray]:
    poses = random_board_poses(TRUE_CAMERA, PATTERN, SQUARE, 12, seed=0)
    return render_checkerboards(TRUE_CAMERA, poses, PATTERN, SQUARE, supersample=3)


def _max_pixel_difference(a: Camera, b: Camera) -> float:
    """Largest distance between where the two cameras put the same rays, over a grid covering the image."""
    xs, ys = np.meshgrid(np.linspace(0.5, a.width - 0.5, 17), np.linspace(0.5, a.height - 0.5, 13))
    rays = a.unproject(np.stack([xs.ravel(), ys.ravel()], axis=1))
    return float(np.linalg.norm(b.project(rays) - a.project(rays), axis=1).max())


def test_rendered_corners_match_the_projection(boards) -> None:
    from mapforge.calibration import find_checkerboard

    poses = random_board_poses(TRUE_CAMERA, PATTERN, SQUARE, 12, seed=0)
    gray = np.round(boards[0][..., 0] * 255).astype(np.uint8)
    found = find_checkerboard(gray, PATTERN)
    expected = project_corners(TRUE_CAMERA, poses[0], PATTERN, SQUARE)
    if np.linalg.norm(found[0] - expected[0]) > 5:  # the detector may list a symmetric board from either end
        found = found[::-1]
    error = np.linalg.norm(found - expected, axis=1)
    assert error.max() < 0.5
    assert abs((found - expected).mean(axis=0)).max() < 0.05  # no half-pixel convention slip


def test_opencv_calibration_recovers_the_camera(boards) -> None:
    result = calibrate_checkerboard(boards, PATTERN, SQUARE, "OPENCV")
    camera, truth = result.camera, TRUE_CAMERA.params
    assert camera.model == "OPENCV" and (camera.width, camera.height) == (640, 480)
    assert len(result.used) == 12 and not result.rejected
    np.testing.assert_allclose(camera.params[:2], truth[:2], rtol=0.005)
    np.testing.assert_allclose(camera.params[2:4], truth[2:4], atol=1.0)
    np.testing.assert_allclose(camera.params[4:6], truth[4:6], atol=0.02)
    np.testing.assert_allclose(camera.params[6:8], truth[6:8], atol=5e-4)
    assert result.rms < 0.3
    assert max(result.per_image_rms.values()) < 0.3
    # the same rays land within a pixel everywhere, corners included (mostly the principal point's offset)
    assert _max_pixel_difference(TRUE_CAMERA, camera) < 1.0
    # the board poses put the board in front of the camera at a plausible distance
    for pose in result.cam_from_board.values():
        assert 0.1 < pose.translation[2] < 2.0


def test_other_models_and_input_kinds(boards) -> None:
    gray_uint8 = [np.round(b[..., 0] * 255).astype(np.uint8) for b in boards]
    radial = calibrate_checkerboard(gray_uint8, PATTERN, SQUARE, "RADIAL")
    assert radial.camera.model == "RADIAL" and radial.camera.params.size == 5
    np.testing.assert_allclose(radial.camera.params[0], 500.0, rtol=0.01)
    assert radial.rms < 0.5
    pinhole = calibrate_checkerboard(gray_uint8, PATTERN, SQUARE, "PINHOLE")
    assert pinhole.rms > radial.rms  # a strongly distorted lens is not a pinhole


def test_too_few_boards_is_a_clear_error(boards) -> None:
    blank = np.full((480, 640), 0.5, dtype=np.float32)
    with pytest.raises(InputError, match=r"found in 2 of 4 images"):
        calibrate_checkerboard([boards[0], blank, boards[1], blank], PATTERN, SQUARE)
    with pytest.raises(InputError, match="8x5"):
        calibrate_checkerboard(boards[:3], (8, 5), SQUARE)
    with pytest.raises(InputError, match="first image"):
        calibrate_checkerboard([boards[0], boards[1][:240]], PATTERN, SQUARE)
    with pytest.raises(InputError, match="cannot calibrate camera model"):
        calibrate_checkerboard(boards[:3], PATTERN, SQUARE, "FOV")


def test_cli_writes_cameras_txt(boards, tmp_path, capsys) -> None:
    folder = tmp_path / "boards"
    for i, board in enumerate(boards[:8]):
        write_image(folder / f"board_{i:02d}.png", board)
    write_image(folder / "zz_blank.png", np.full((480, 640, 3), 0.5, dtype=np.float32))
    output = tmp_path / "out" / "cameras.txt"
    code = main(["calibrate", str(folder), "--pattern", "9x6", "--square", "0.025", "-o", str(output)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "RMS reprojection error" in printed and "zz_blank.png" in printed
    cameras = read_cameras_text(output)
    assert list(cameras) == [1] and cameras[1].model == "OPENCV"
    np.testing.assert_allclose(cameras[1].params[:2], TRUE_CAMERA.params[:2], rtol=0.01)


def test_cli_without_boards_fails_in_one_line(tmp_path, capsys) -> None:
    folder = tmp_path / "empty"
    for i in range(3):
        write_image(folder / f"{i}.png", np.full((48, 64, 3), 0.2 * i, dtype=np.float32))
    code = main(["calibrate", str(folder), "--pattern", "9x6", "--square", "0.025", "-o", str(tmp_path / "c.txt")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "checkerboard" in error
    assert not (tmp_path / "c.txt").exists()
