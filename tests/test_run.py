"""`mapforge run`: stages complete, a re-run skips them, and the saved config reproduces the run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mapforge.cli import main
from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene
from mapforge.errors import InputError, MapforgeError
from mapforge.run import CONFIG_NAME, RunConfig, clear_stale_stages, run, summary_text


NUM_IMAGES = 10


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 10 views (12 degrees apart) of a smaller built-in scene; the ground truth keeps all 30."""
    folder = tmp_path_factory.mktemp("scene") / "scene"
    write_scene(make_scene(SyntheticConfig(width=240, height=180)), folder, num_points=500)
    for path in sorted((folder / "images").iterdir())[NUM_IMAGES:]:
        path.unlink()
    return folder


def test_run_sfm_resumes_and_reproduces(scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = RunConfig(
        images=str(scene / "images"),
        output=str(tmp_path / "out"),
        method="none",
        intrinsics=str(scene / "sparse_gt" / "cameras.txt"),
        ground_truth=str(scene / "sparse_gt"),
    )
    results = run(config)
    assert results["sfm"]["models"][0]["registered_images"] == NUM_IMAGES
    assert results["ground_truth"]["num_registered"] == NUM_IMAGES
    assert results["ground_truth"]["median_rot_err_deg"] < 0.5
    assert (tmp_path / "out" / "report.html").is_file()
    report = tmp_path / "out" / "sfm" / "report.json"
    stamp = report.stat().st_mtime_ns

    capsys.readouterr()
    assert main(["run", "--config", str(tmp_path / "out" / CONFIG_NAME)]) == 0
    assert "sfm: complete, skipped" in capsys.readouterr().out
    assert report.stat().st_mtime_ns == stamp
    assert RunConfig.from_file(tmp_path / "out" / CONFIG_NAME) == config


def _fake_run(out: Path, config: RunConfig) -> None:
    """Complete sfm and splat folders, recorded as made with `config` (nothing is computed)."""
    clear_stale_stages(config, out)
    for stage, summary in (("sfm", "report.json"), ("splat", "metrics.json")):
        (out / stage).mkdir(parents=True, exist_ok=True)
        (out / stage / summary).write_text("{}")
    (out / "sfm" / "cache").mkdir(exist_ok=True)
    (out / "sfm" / "cache" / "features.npz").write_text("kept")


def _left(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.glob("*/**/*") if p.is_file()}


@pytest.mark.parametrize("change, cleared", [
    ({}, set()),
    ({"minutes": 2.0}, {"splat"}),
    ({"matcher": "sequential"}, {"sfm", "splat"}),
    ({"method": "nerf"}, set()),
    ({"method": "nerf", "downscale": 2}, {"splat"}),
    ({"overwrite": True}, {"sfm", "splat"}),
])
def test_rerun_clears_the_stages_its_options_change(tmp_path: Path, capsys, change: dict, cleared: set) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"1")
    config = RunConfig(images=str(images), output=str(tmp_path / "out"))
    _fake_run(tmp_path / "out", config)
    capsys.readouterr()
    clear_stale_stages(replace(config, **change), tmp_path / "out")
    printed = capsys.readouterr().out
    assert {stage for stage in ("sfm", "splat") if f"{stage}: " in printed} == cleared
    if change.get("method") == "nerf" and cleared:
        assert "splat: downscale changed since its outputs were made; removed (not part of this run)" in printed
    expected = {"sfm/report.json", "sfm/cache/features.npz", "splat/metrics.json"}
    expected -= {f"{stage}/{name}" for stage in cleared for name in ("report.json", "metrics.json")}
    assert _left(tmp_path / "out") == expected


def test_rerun_on_other_images_or_intrinsics_clears_everything(tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"1")
    intrinsics = tmp_path / "K.txt"
    intrinsics.write_text("500 0 320 0 500 240 0 0 1\n")
    config = RunConfig(images=str(images), output=str(tmp_path / "out"), intrinsics=str(intrinsics))
    everything = {"sfm/report.json", "sfm/cache/features.npz", "splat/metrics.json"}
    for edit in (lambda: (images / "b.png").write_bytes(b"2"), lambda: intrinsics.write_text("600 0 320 0 600 240 0 0 1\n")):
        _fake_run(tmp_path / "out", config)
        assert _left(tmp_path / "out") == everything
        edit()
        clear_stale_stages(config, tmp_path / "out")
        assert _left(tmp_path / "out") == {"sfm/cache/features.npz"}
    assert "images changed since its outputs were made" in capsys.readouterr().out


def test_outputs_without_a_record_are_recomputed(tmp_path: Path) -> None:
    (tmp_path / "out" / "sfm").mkdir(parents=True)
    (tmp_path / "out" / "sfm" / "report.json").write_text("{}")
    clear_stale_stages(RunConfig(images=str(tmp_path), output=str(tmp_path / "out")), tmp_path / "out")
    assert not (tmp_path / "out" / "sfm" / "report.json").exists()


def test_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('images = "x"\noutput = "y"\nbogus = 1\n')
    with pytest.raises(InputError, match="unknown option"):
        RunConfig.from_file(path)
    path.write_text("images = [\n")
    with pytest.raises(InputError, match="not valid TOML"):
        RunConfig.from_file(path)


@pytest.mark.parametrize("line, message", [
    ("images = 5", "option images must be a string, got 5"),
    ('images = "x"\nminutes = "5"', "option minutes must be a number"),
    ('images = "x"\ndense = 1', "option dense must be true or false"),
    ('images = "x"\ndownscale = 0', "iterations and downscale must be positive"),
    ('images = "x"\nminutes = -1.0', "minutes must be 0"),
    ('images = "x"\nmatcher = "nearest"', "unknown matcher"),
])
def test_config_file_of_wrong_types_is_one_line(tmp_path: Path, capsys, line: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(f'output = "{tmp_path / "out"}"\n{line}\n')
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mapforge run: error: config file") and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["run", "IMAGES", "-o", "OUT", "--minutes", "-1"],
    ["run", "IMAGES", "-o", "OUT", "--downscale", "0"],
    ["run", "IMAGES", "-o", "OUT", "--iterations", "1.5"],
    ["run", "IMAGES", "-o", "OUT", "--max-image-size", "8"],
    ["run", "IMAGES", "-o", "OUT", "--minutes", "inf"],
    ["demo", "-o", "OUT", "--minutes", "-1"],
    ["demo", "-o", "OUT", "--minutes", "0"],
])
def test_bad_numbers_are_refused_before_any_stage(tmp_path: Path, capsys, args: list[str]) -> None:
    (tmp_path / "IMAGES").mkdir()
    args = [str(tmp_path / a) if a in ("IMAGES", "OUT") else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"mapforge {args[0]}: error: argument --" in err
    assert not (tmp_path / "OUT").exists()


def test_pointmap_needs_weights() -> None:
    with pytest.raises(InputError, match="--weights"):
        RunConfig(images="x", output="y", init="pointmap")


def test_run_pointmap_init(tmp_path: Path) -> None:
    """`--init pointmap` registers every photo through a (tiny, random) checkpoint instead of SfM."""
    from tests.conftest import shared_dataset
    from tests.pointmap.test_pipeline import write_small_checkpoint

    tower = shared_dataset("nle_tower")
    weights = write_small_checkpoint(tmp_path / "tiny.pth")
    results = run(RunConfig(images=str(tower), output=str(tmp_path / "out"), method="none", init="pointmap",
                            weights=str(weights)))
    assert results["pointmap"]["registered_images"] == 7
    assert (tmp_path / "out" / "pointmap" / "sparse" / "0" / "images.bin").is_file()


def test_run_mast3r_features(tmp_path: Path, scene: Path) -> None:
    """`--features mast3r` runs the MASt3R matcher into matches/database.db and SfM reads it (random weights give
    random matches, so SfM stops with its one-line error; tests/pointmap/test_correspondences.py checks that good
    descriptors reconstruct)."""
    from mapforge.errors import ReconstructionError
    from tests.pointmap.test_correspondences import write_tiny_mast3r

    with pytest.raises(InputError, match="--features mast3r needs --weights"):
        RunConfig(images="x", output="y", features="mast3r")
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((scene / "images").iterdir())[:3]:
        (images / path.name).symlink_to(path)
    weights = write_tiny_mast3r(tmp_path / "tiny_mast3r.pth")
    config = RunConfig(images=str(images), output=str(tmp_path / "out"), method="none", features="mast3r",
                       weights=str(weights))
    with pytest.raises(ReconstructionError):
        run(config)
    assert (tmp_path / "out" / "matches" / "database.db").is_file()
    assert (tmp_path / "out" / "matches" / "report.json").is_file()


def test_output_under_or_at_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot be created: .*file is a file"):
        run(RunConfig(images=str(tmp_path), output=str(blocker / "out"), method="none"))
    assert main(["run", str(tmp_path), "-o", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an existing file" in err


def test_full_disk_is_reported_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from mapforge.io.atomic import atomic_path

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(MapforgeError, match="no space left"):
        with atomic_path(tmp_path / "result.json") as tmp:
            tmp.write_text("{}")
    assert list(tmp_path.iterdir()) == []


def test_run_nerf_method(scene: Path, tmp_path: Path) -> None:
    """`--method nerf` trains the fast NeRF on the SfM poses and writes the stage's files."""
    config = RunConfig(images=str(scene / "images"), output=str(tmp_path / "out"), method="nerf", minutes=0,
                       iterations=60, intrinsics=str(scene / "sparse_gt" / "cameras.txt"), downscale=4)
    results = run(config)
    # On the two held-out 60x45 views the field scores 14.1 dB after one step; 60 steps of the fast NeRF on the
    # SfM poses reach 15.5 dB (its 3000-step schedule is made for minutes, not seconds).
    assert results["nerf"]["count"] == 2 and results["nerf"]["psnr"] > 15.0
    assert results["nerf"]["iterations"] == 60
    for name in ("metrics.json", "history.json", "checkpoint.pt"):
        assert (tmp_path / "out" / "nerf" / name).is_file(), name
    assert "nerf: test PSNR" in summary_text(results)
