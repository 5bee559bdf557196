"""`mapforge splat train|render` on a tiny scene written to disk."""

from __future__ import annotations

import json
import math

import pytest

import mapforge.cli as cli
from mapforge.metrics.lpips import LPIPS
from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("splat_cli") / "scene"
    return write_scene(make_scene(SyntheticConfig(width=64, height=48, num_views=8, supersample=1)), folder, num_points=1500)


def test_train_then_render(data, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = cli.main(["splat", "train", str(data), "-o", str(out), "--iterations", "40", "--sh-degree", "1",
                     "--init", str(data / "sparse_gt")])
    assert code == 0
    assert "trained" in capsys.readouterr().out
    for name in ("point_cloud.ply", "scene.splat", "config.json", "metrics.json", "training_curve.svg", "history.json", "renders/test/000.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["downscale"] == 1 and config["config"]["iterations"] == 40

    renders = tmp_path / "renders"
    code = cli.main(["splat", "render", str(out), "--data", str(data), "--split", "test", "-o", str(renders)])
    assert code == 0
    assert sorted(p.name for p in renders.glob("*.png")) == ["000.png"]  # 8 views, every 8th is a test view
    metrics = json.loads((renders / "metrics.json").read_text())
    reference = json.loads((out / "metrics.json").read_text())
    assert metrics["count"] == 1 and metrics["psnr"] == pytest.approx(reference["psnr"], abs=1e-4)
    assert "lpips" not in metrics

    # LPIPS with user-supplied weights (random ones here: only the plumbing is checked).
    lpips = LPIPS()
    lpips.load_weights(lpips.state_dict())
    lpips.save(tmp_path / "lpips.safetensors")
    code = cli.main(["splat", "render", str(out), "--data", str(data), "-o", str(tmp_path / "with_lpips"),
                     "--lpips-weights", str(tmp_path / "lpips.safetensors")])
    assert code == 0 and "LPIPS" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "with_lpips" / "metrics.json").read_text())
    assert math.isfinite(metrics["lpips"]) and metrics["views"][0]["lpips"] == pytest.approx(metrics["lpips"])
    assert cli.main(["splat", "render", str(out), "--data", str(data), "-o", str(tmp_path / "bad"),
                     "--lpips-weights", str(tmp_path / "missing.pth")]) == 2

    # Resuming a finished run trains no further and re-exports.
    assert cli.main(["splat", "train", str(data), "-o", str(out), "--iterations", "40", "--sh-degree", "1", "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 40


def test_bad_input_is_a_one_line_error(tmp_path, capsys) -> None:
    assert cli.main(["splat", "train", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    assert cli.main(["splat", "render", str(tmp_path / "nothing"), "--data", str(tmp_path), "-o", str(tmp_path / "r")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("mapforge splat: error:") for line in errors)


@pytest.fixture
def no_training(monkeypatch):
    """Training that fails the test if it ever starts: what must be checked first is checked before it."""
    from mapforge.training.trainer import Trainer

    def started(self, *args, **kwargs):
        raise AssertionError("training started before the inputs were checked")

    monkeypatch.setattr(Trainer, "run", started)


@pytest.mark.parametrize("command", ["splat", "nerf"])
@pytest.mark.parametrize("weights", ["missing", "random"])
def test_bad_lpips_weights_fail_before_training(command, weights, data, tmp_path, capsys, no_training) -> None:
    from tests.conftest import plant_hostile_file

    path = tmp_path / "alex.pth"
    if weights == "random":
        plant_hostile_file(path, "random")
    code = cli.main([command, "train", str(data), "-o", str(tmp_path / "out"), "--lpips-weights", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "LPIPS weights" in err, err


def test_a_missing_init_file_fails_before_training(data, tmp_path, capsys, no_training) -> None:
    code = cli.main(["splat", "train", str(data), "-o", str(tmp_path / "out"), "--init", str(tmp_path / "no.ply")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no.ply does not exist" in err, err


def test_a_downscale_that_leaves_no_pixels_fails_before_any_work(data, tmp_path, capsys) -> None:
    code = cli.main(["splat", "train", str(data), "-o", str(tmp_path / "out"), "--downscale", "1000"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "would be 0x0 pixels" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option", ["--seed", "--max-gaussians"])
def test_negative_counts_are_refused_by_the_parser(option, data, tmp_path, capsys) -> None:
    from mapforge.errors import InputError
    from mapforge.splat.config import SplatConfig

    with pytest.raises(SystemExit) as exit_:
        cli.main(["splat", "train", str(data), "-o", str(tmp_path / "out"), option, "-1"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "Traceback" not in err
    assert len(err.splitlines()) == 1 and f"argument {option}: expected a non-negative integer, got '-1'" in err
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        SplatConfig(seed=-1)
