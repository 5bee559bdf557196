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
from mapforge.io.images import write_image
from mapforge.scene import Camera, Image, Point3D, Reconstruction
from tests.io.test_images import bomb_png


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


# ---------------------------------------------------------------------------------------------------------------
# Bad input of issue 17: each ends with one line on stderr and exit status 2 (130 for Ctrl-C)


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture, status: int = 2) -> str:
    assert main(args) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _photos(folder: Path, count: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for k in range(count):
        write_image(folder / f"{k:02d}.png", rng.random((48, 64, 3)))
    return folder


def test_decompression_bomb_is_one_line_for_sfm_and_calibrate(tmp_path: Path, capsys) -> None:
    folder = _photos(tmp_path / "photos")
    bomb_png(folder / "zz_bomb.png")
    err = _one_line_error(["sfm", str(folder), "-o", str(tmp_path / "out")], capsys)
    assert "zz_bomb.png" in err and "decompression bomb" in err
    err = _one_line_error(["calibrate", str(folder), "--pattern", "9x6", "--square", "0.025",
                           "-o", str(tmp_path / "cameras.txt")], capsys)
    assert "zz_bomb.png" in err and "decompression bomb" in err


def test_output_that_is_an_existing_file_for_sfm(tmp_path: Path, capsys) -> None:
    folder = _photos(tmp_path / "photos")
    (tmp_path / "out").write_text("a file")
    err = _one_line_error(["sfm", str(folder), "-o", str(tmp_path / "out")], capsys)
    assert "output folder" in err and "is an existing file" in err


def test_output_that_is_an_existing_file_for_splat_render(tmp_path: Path, capsys) -> None:
    from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene
    from mapforge.io.gaussians import GaussianData, write_gaussian_ply

    data = write_scene(make_scene(SyntheticConfig(width=32, height=24, num_views=2, supersample=1)), tmp_path / "s",
                       num_points=10)
    rng = np.random.default_rng(0)
    ply = write_gaussian_ply(tmp_path / "g.ply", GaussianData(rng.normal(size=(5, 3)), np.full((5, 3), -3.0),
                                                              np.tile([1.0, 0, 0, 0], (5, 1)), np.zeros(5),
                                                              np.zeros((5, 1, 3))))
    (tmp_path / "renders").write_text("a file")
    err = _one_line_error(["splat", "render", str(ply), "--data", str(data), "-o", str(tmp_path / "renders")], capsys)
    assert "output folder" in err and "is an existing file" in err


@pytest.mark.parametrize("file, content, message", [
    ("cameras.txt", "1 PINHOLE 64 48 nan 60 32 24", "NaN in the parameters of camera 1"),
    ("cameras.txt", "1 PINHOLE 64 48 -60 60 32 24", "camera 1 has focal length -60"),
    ("K.txt", "nan 0 32 0 60 24 0 0 1", "NaN in the calibration matrix"),
    ("K.txt", "-60 0 32 0 -60 24 0 0 1", "focal length -60"),
])
def test_bad_intrinsics_in_cameras_txt_or_a_k_file(tmp_path: Path, capsys, file: str, content: str,
                                                   message: str) -> None:
    folder = _photos(tmp_path / "photos")
    (tmp_path / file).write_text(content + "\n")
    err = _one_line_error(["sfm", str(folder), "-o", str(tmp_path / "out"), "--intrinsics", str(tmp_path / file)],
                          capsys)
    assert message in err


def test_nan_in_a_colmap_pose(tmp_path: Path, capsys) -> None:
    write_model(small_model(), tmp_path / "m", "txt")
    text = (tmp_path / "m" / "images.txt").read_text().splitlines()
    first = next(k for k, line in enumerate(text) if line and not line.startswith("#"))
    fields = text[first].split()
    fields[5] = "nan"
    text[first] = " ".join(fields)
    (tmp_path / "m" / "images.txt").write_text("\n".join(text) + "\n")
    err = _one_line_error(["model", "info", str(tmp_path / "m")], capsys)
    assert f"NaN in the pose of image {fields[0]}" in err


def test_ctrl_c_inside_a_numba_kernel_is_an_interrupt(tmp_path: Path, capsys, monkeypatch) -> None:
    """numba turns a KeyboardInterrupt raised while a kernel calls back into Python into a chained SystemError."""
    import mapforge.sfm.pipeline

    def interrupted_kernel(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(<function normal_equations>) returned a result with an exception set") from exc

    monkeypatch.setattr(mapforge.sfm.pipeline, "run_sfm", interrupted_kernel)
    err = _one_line_error(["sfm", str(tmp_path), "-o", str(tmp_path / "out")], capsys, status=130)
    assert "interrupted" in err


def test_other_errors_are_not_taken_for_interrupts(tmp_path: Path, monkeypatch) -> None:
    import mapforge.sfm.pipeline

    def failing(*args, **kwargs):
        raise SystemError("a real bug")

    monkeypatch.setattr(mapforge.sfm.pipeline, "run_sfm", failing)
    with pytest.raises(SystemError, match="a real bug"):
        main(["sfm", str(tmp_path), "-o", str(tmp_path / "out")])


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "argument --port: expected a port number from 0 to 65535"),
    (["--port", "-1"], "argument --port: expected a port number"),
    (["--host", "999.1.1.1"], "host '999.1.1.1' is not an IP address"),
])
def test_view_refuses_a_bad_port_or_host_at_once(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    try:
        status = main(["view", str(tmp_path), *args])
    except SystemExit as exit_info:
        status = exit_info.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
