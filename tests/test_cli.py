"""The command line: subcommands work end to end, and bad input gives one line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mapforge.cli import main
from mapforge.geometry.transforms import Rigid3
from mapforge.io.colmap import read_model, write_model
from mapforge.scene import Camera, Image, Point3D, Reconstruction


def small_model() -> Reconstruction:
    rec = Reconstruction()
    rec.cameras[1] = Camera("SIMPLE_RADIAL", 640, 480, [500.0, 320.0, 240.0, 0.01])
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (20, 3)) + [0, 0, 5]
    for image_id in (1, 2):
        pose = Rigid3(np.eye(3), [0.3 * (image_id - 1), 0.0, 0.0])
        keypoints = rec.cameras[1].project(pose.apply(xyz))
        rec.images[image_id] = Image(f"im{image_id}.png", 1, pose, keypoints, np.arange(20))
    for point_id in range(20):
        rec.points3D[point_id] = Point3D(xyz[point_id], [10, 20, 30], 0.0, [[1, point_id], [2, point_id]])
    return rec


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mapforge", *args], capture_output=True, text=True)


def test_model_info_and_convert(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_model(small_model(), tmp_path / "bin", "bin")
    assert main(["model", "info", str(tmp_path / "bin")]) == 0
    out = capsys.readouterr().out
    assert "Points" in out and "20" in out and "Mean track length" in out
    assert main(["model", "convert", str(tmp_path / "bin"), str(tmp_path / "txt"), "--format", "txt"]) == 0
    assert (tmp_path / "txt" / "points3D.txt").is_file()
    assert main(["model", "convert", str(tmp_path / "txt"), str(tmp_path / "points.ply"), "--format", "ply"]) == 0
    assert (tmp_path / "points.ply").stat().st_size > 0
    back = read_model(tmp_path / "txt")
    assert len(back.points3D) == 20 and np.allclose(back.reprojection_errors(), 0, atol=1e-6)


def assert_one_line_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "error" in lines[0]


def test_missing_model_folder(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("model", "info", str(tmp_path / "nope")))


def test_malformed_model(tmp_path: Path) -> None:
    write_model(small_model(), tmp_path / "m", "txt")
    (tmp_path / "m" / "cameras.txt").write_text("1 PINHOLE 640 480 500\n")
    assert_one_line_error(run_cli("model", "info", str(tmp_path / "m")))


def test_unknown_camera_model(tmp_path: Path) -> None:
    write_model(small_model(), tmp_path / "m", "txt")
    (tmp_path / "m" / "cameras.txt").write_text("1 NOT_A_MODEL 640 480 500 320 240\n")
    assert_one_line_error(run_cli("model", "info", str(tmp_path / "m")))


def test_truncated_binary(tmp_path: Path) -> None:
    write_model(small_model(), tmp_path / "m", "bin")
    data = (tmp_path / "m" / "images.bin").read_bytes()
    (tmp_path / "m" / "images.bin").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("model", "info", str(tmp_path / "m")))


def test_no_subcommand_prints_help() -> None:
    result = run_cli()
    assert result.returncode == 2 and "COMMAND" in result.stdout
