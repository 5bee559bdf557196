"""`mapforge pointmap` end to end on nle_tower with a small random-weight checkpoint, and its error exits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mapforge.cli as cli
from mapforge.io.colmap import read_model
from mapforge.io.images import write_image
from tests.conftest import shared_dataset
from tests.pointmap.test_pipeline import NUM_IMAGES, write_small_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("pointmap_cli") / "small.pth")


def test_runs_end_to_end(checkpoint, tmp_path, capsys) -> None:
    tower = shared_dataset("nle_tower")
    out = tmp_path / "out"
    code = cli.main(["pointmap", str(tower), "--weights", str(checkpoint), "-o", str(out), "--iterations", "10",
                     "--scene-graph", "swin-2", "--max-points", "5000", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"registered {NUM_IMAGES}/{NUM_IMAGES} images" in printed
    assert len(read_model(out / "sparse" / "0").images) == NUM_IMAGES
    assert (out / "points.ply").is_file() and len(list((out / "depth").glob("*.npy"))) == NUM_IMAGES
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["scene_graph"] == "swin-2" and report["config"]["iterations"] == 10
    assert report["num_pairs"] == 2 * 2 * NUM_IMAGES  # swin-2 on a cycle of 7: 14 pairs, both directions
    assert report["dense_points"] <= 5000


@pytest.fixture
def photos(tmp_path) -> Path:
    """Two small random photographs: the error paths fail before any network runs on them."""
    folder = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image(folder / name, rng.random((48, 64, 3)))
    return folder


def _error_exit(args: list[str], capsys) -> str:
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mapforge pointmap: error: ")
    return err


def test_missing_weights(photos, tmp_path, capsys) -> None:
    err = _error_exit(["pointmap", str(photos), "--weights", str(tmp_path / "none.pth"), "-o", str(tmp_path / "o")],
                      capsys)
    assert "none.pth does not exist" in err


def test_mismatching_checkpoint(checkpoint, photos, tmp_path, capsys) -> None:
    data = torch.load(checkpoint, weights_only=False)
    data["model"]["enc_blocks.0.attn.qkv.weight"] = data["model"]["enc_blocks.0.attn.qkv.weight"][:10]
    wrong = tmp_path / "wrong.pth"
    torch.save(data, wrong)
    err = _error_exit(["pointmap", str(photos), "--weights", str(wrong), "-o", str(tmp_path / "o")], capsys)
    assert "wrong shape: enc_blocks.0.attn.qkv.weight" in err


def test_bad_arguments(checkpoint, photos, tmp_path, capsys) -> None:
    base = ["pointmap", str(photos), "--weights", str(checkpoint), "-o", str(tmp_path / "o")]
    assert "unknown scene graph" in _error_exit([*base, "--scene-graph", "ring"], capsys)
    assert "does not exist" in _error_exit([*base, "--intrinsics", str(tmp_path / "K.txt")], capsys)
    (photos / "b.png").unlink()
    assert "at least 2 images" in _error_exit(base, capsys)
    assert not (tmp_path / "o").exists()


def test_bad_numbers_are_refused_when_parsed(photos, tmp_path, capsys) -> None:
    base = ["pointmap", str(photos), "--weights", str(tmp_path / "none.pth"), "-o", str(tmp_path / "o")]
    for option, value in [("--size", "8"), ("--iterations", "-1"), ("--lr", "0"), ("--batch-size", "0"),
                          ("--max-points", "x"), ("--min-conf", "nan")]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*base, option, value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"argument {option}: expected" in err


def test_output_that_is_a_file(checkpoint, photos, tmp_path, capsys) -> None:
    (tmp_path / "o").write_text("not a folder")
    err = _error_exit(["pointmap", str(photos), "--weights", str(checkpoint), "-o", str(tmp_path / "o")], capsys)
    assert "output folder" in err and "is an existing file" in err
