"""`mapforge run`: stages complete, a re-run skips them, and the saved config reproduces the run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mapforge.cli import main
from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene
from mapforge.errors import InputError, MapforgeError
from mapforge.run import CONFIG_NAME, RunConfig, run, summary_text


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

    run(replace(config, matcher="sequential"))
    out = capsys.readouterr().out
    assert "note: matcher differ" in out and "sfm: complete, skipped" in out
    assert report.stat().st_mtime_ns == stamp


def test_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('images = "x"\noutput = "y"\nbogus = 1\n')
    with pytest.raises(InputError, match="unknown option"):
        RunConfig.from_file(path)
    path.write_text("images = [\n")
    with pytest.raises(InputError, match="not valid TOML"):
        RunConfig.from_file(path)


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


def test_unwritable_output_is_one_line(tmp_path: Path, scene: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MapforgeError, match="cannot create output folder"):
        run(RunConfig(images=str(scene / "images"), output=str(blocker / "out"), method="none"))


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
