"""`mapforge nerf train|render|export` end to end on a tiny built-in scene, with a tiny model."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import numpy as np
import pytest

from mapforge import cli
from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene
from mapforge.io.ply import read_mesh, read_point_cloud
from mapforge.metrics.lpips import LPIPS
from mapforge.nerf.export import density_grid
from mapforge.nerf.trainer import load_checkpoint

TINY = ["num_levels=4", "log2_hashmap_size=12", "finest_resolution=64", "grid_resolution=16", "render_steps=64",
        "batch_rays=256", "target_samples=4096", "checkpoint_minutes=0", "log_interval=2"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(make_scene(SyntheticConfig(width=48, height=36, num_views=6, supersample=1)),
                       tmp_path_factory.mktemp("data") / "scene", num_points=200)


def test_train_render_export(scene, tmp_path):
    out = tmp_path / "run"
    settings = [arg for item in TINY for arg in ("--set", item)]
    assert cli.main(["nerf", "train", str(scene), "-o", str(out), "--iterations", "3", *settings]) == 0
    outputs = ("checkpoint.pt", "config.json", "history.json", "training_curve.svg", "metrics.json", "renders/test/000.png")
    for name in outputs:
        assert (out / name).is_file(), name
    assert ElementTree.parse(out / "training_curve.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and metrics["count"] == 1 and np.isfinite(metrics["psnr"])
    assert "lpips" not in metrics
    history = json.loads((out / "history.json").read_text())
    assert [h["iteration"] for h in history] == [2, 3]
    assert set(history[0]) == {"iteration", "loss", "psnr", "seconds"}
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["grid_resolution"] == 16 and config["downscale"] == 1

    renders = tmp_path / "renders"
    video = tmp_path / "path.mp4"
    code = cli.main(["nerf", "render", str(out), "--data", str(scene), "--split", "train", "-o", str(renders),
                     "--path", str(video), "--frames", "3"])
    assert code == 0
    assert sorted(p.name for p in renders.glob("*.png")) == ["001.png", "002.png", "003.png", "004.png", "005.png"]
    assert json.loads((renders / "metrics.json").read_text())["count"] == 5
    assert video.stat().st_size > 0

    model, _, setup, _ = load_checkpoint(out / "checkpoint.pt")
    level = float(np.median(density_grid(model, setup, 16)))
    mesh, points = tmp_path / "mesh.ply", tmp_path / "points.ply"
    code = cli.main(["nerf", "export", str(out), "-o", str(mesh), "--resolution", "16", "--threshold", f"{level}",
                     "--points", str(points), "--stride", "6"])
    assert code == 0
    vertices, faces, colors = read_mesh(mesh)
    assert len(vertices) > 0 and len(faces) > 0 and colors is not None
    lo, hi = setup.aabb
    assert np.all(vertices >= lo - 1e-4) and np.all(vertices <= hi + 1e-4)
    xyz, rgb = read_point_cloud(points)
    assert xyz.shape[1] == 3


def test_lpips_weights(scene, tmp_path, capsys):
    # Random LPIPS weights: only the plumbing is checked.
    lpips = LPIPS()
    lpips.load_weights(lpips.state_dict())
    weights = tmp_path / "lpips.safetensors"
    lpips.save(weights)
    out = tmp_path / "run"
    settings = [arg for item in TINY for arg in ("--set", item)]
    assert cli.main(["nerf", "train", str(scene), "-o", str(out), "--iterations", "2", *settings,
                     "--lpips-weights", str(weights)]) == 0
    assert "LPIPS" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["lpips"]) and metrics["views"][0]["lpips"] == pytest.approx(metrics["lpips"])
    renders = tmp_path / "renders"
    assert cli.main(["nerf", "render", str(out), "--data", str(scene), "-o", str(renders),
                     "--lpips-weights", str(weights)]) == 0
    assert "LPIPS" in capsys.readouterr().out
    rendered = json.loads((renders / "metrics.json").read_text())
    assert rendered["lpips"] == pytest.approx(metrics["lpips"], abs=1e-4)
    assert cli.main(["nerf", "render", str(out), "--data", str(scene), "-o", str(tmp_path / "bad"),
                     "--lpips-weights", str(tmp_path / "missing.pth")]) == 2
    assert cli.main(["nerf", "train", str(scene), "-o", str(tmp_path / "bad_run"), "--iterations", "2", *settings,
                     "--lpips-weights", str(tmp_path / "missing.pth")]) == 2
    assert not (tmp_path / "bad_run" / "checkpoint.pt").exists()  # refused before training


def test_missing_data_is_one_line_error(tmp_path, capsys):
    code = cli.main(["nerf", "train", str(tmp_path / "missing"), "-o", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err
    assert not (tmp_path / "out").exists()


def test_bad_setting_and_missing_run(tmp_path, scene, capsys):
    assert cli.main(["nerf", "train", str(scene), "-o", str(tmp_path / "out"), "--set", "no_such=1"]) == 2
    assert "no setting 'no_such'" in capsys.readouterr().err
    assert cli.main(["nerf", "export", str(tmp_path / "nothing"), "-o", str(tmp_path / "m.ply")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
