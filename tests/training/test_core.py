"""The shared training core: budget, history, checkpoints, evaluation naming and the scene box."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mapforge.datasets.synthetic import look_at
from mapforge.errors import InputError
from mapforge.training.bounds import camera_extent, focus_box
from mapforge.training.budget import Budget
from mapforge.training.checkpoint import load_checkpoint, save_checkpoint
from mapforge.training.config import TrainingConfig
from mapforge.training.evaluation import evaluate_views, quality_text, render_names
from mapforge.training.history import History


def test_a_minutes_budget_ignores_the_iterations():
    budget = Budget(iterations=10, minutes=2.0)
    assert not budget.done(step=10**6, seconds=119.9) and budget.done(step=1, seconds=120.0)
    assert budget.progress(step=5, seconds=30.0) == pytest.approx(0.25)
    steps = Budget(iterations=10)
    assert steps.done(step=10, seconds=0.0) and not steps.done(step=9, seconds=1e9)
    assert steps.progress(step=5, seconds=1e9) == pytest.approx(0.5)


@pytest.mark.parametrize("values, message", [
    ({"iterations": 0}, "iterations"), ({"minutes": -1.0}, "minutes"), ({"minutes": float("nan")}, "minutes"),
    ({"seed": -1}, "seed"), ({"seed": 2**32}, "seed"), ({"log_interval": 0}, "log_interval"),
    ({"checkpoint_minutes": -1}, "checkpoint_minutes"), ({"iterations": True}, "iterations"),
    ({"lpips_weights": ("a", "b", "c")}, "LPIPS"),
])
def test_bad_shared_settings_are_one_line_errors(values, message):
    with pytest.raises(InputError, match=message) as info:
        TrainingConfig(**values)
    assert "\n" not in str(info.value)


def test_history_means_windows_and_logs_the_last_step():
    history = History(interval=2)
    assert history.add(1, 0.5, {"loss": 1.0, "mse": 0.1, "num_gaussians": 5}) is None
    entry = history.add(2, 1.0, {"loss": 3.0, "mse": 0.001, "num_gaussians": 7})
    assert entry == {"iteration": 2, "seconds": 1.0, "loss": 2.0, "psnr": pytest.approx(-10 * math.log10(0.0505)),
                     "num_gaussians": 7}
    history.add(3, 1.5, {"loss": 1.0, "mse": 0.01})
    state = history.state_dict()
    again = History(interval=2)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert again.add(4, 2.0, {"loss": 3.0, "mse": 0.01})["loss"] == 2.0  # the window carried over
    assert history.add(3, 1.5, {"loss": 1.0, "mse": 0.01}, last=True) is not None


def test_history_writes_json_and_a_standalone_svg(tmp_path):
    from xml.etree import ElementTree

    history = History(interval=1)
    for step in range(1, 4):
        history.add(step, step * 0.1, {"loss": 1.0 / step, "mse": 0.1 / step})
    history.write(tmp_path, "test training")
    assert [e["iteration"] for e in json.loads((tmp_path / "history.json").read_text())] == [1, 2, 3]
    root = ElementTree.parse(tmp_path / "training_curve.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.find("{http://www.w3.org/2000/svg}polyline") is not None


def test_checkpoints_round_trip_and_refuse_other_kinds_and_versions(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, "splat", {"step": 3, "weights": torch.ones(2), "config": json.dumps({"a": [1, 2]})})
    state = load_checkpoint(path, "splat")
    assert state["step"] == 3 and torch.equal(state["weights"], torch.ones(2)) and state["version"] == 2
    with pytest.raises(InputError, match="splat checkpoint, not a nerf"):
        load_checkpoint(path, "nerf")
    torch.save({"version": 1, "kind": "splat"}, path)
    with pytest.raises(InputError, match="format version 2 .found 1."):
        load_checkpoint(path, "splat")
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary sibling, renamed


def test_render_names_keep_file_names_unless_they_collide():
    assert render_names(["images/a.jpg", "images/b.JPG"]) == ["a.png", "b.png"]
    assert render_names(["train/r_0.png", "test/r_0.png"]) == ["train_r_0.png", "test_r_0.png"]


def test_evaluation_of_an_empty_split_and_of_views(tmp_path):
    empty = evaluate_views([], lambda k: None, tmp_path / "none")
    assert empty == {"psnr": None, "ssim": None, "count": 0, "views": []}
    assert quality_text({**empty, "split": "test"}) == "no test views"
    image = np.full((12, 12, 3), 0.5, np.float32)

    def render(k):
        return image, image + (0.1 if k else 0.0)  # view 0 is pixel-perfect: its PSNR is left out of the mean

    metrics = evaluate_views(["a.jpg", "b.jpg"], render, tmp_path / "renders")
    assert metrics["count"] == 2 and metrics["psnr"] == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(metrics["views"][0]["psnr"]) and metrics["views"][0]["ssim"] == pytest.approx(1.0)
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == ["a.png", "b.png"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="is an existing file"):
        evaluate_views(["a.jpg"], render, blocker)


def test_focus_box_is_centred_where_a_ring_of_cameras_looks():
    poses = [look_at(np.array([3 * math.cos(a), 3 * math.sin(a), 0.8]), np.zeros(3))
             for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)]
    low, high = focus_box(poses, 0.5)
    np.testing.assert_allclose((low + high) / 2, 0.0, atol=1e-9)
    np.testing.assert_allclose(high - low, math.hypot(3.0, 0.8), rtol=1e-9)
    assert camera_extent(poses) == pytest.approx(1.1 * 3.0)
    # Parallel optical axes have no nearest point: the box falls back to the camera centroid.
    row = [look_at(np.array([x, -3.0, 0.0]), np.array([x, 0.0, 0.0])) for x in (-1.0, 0.0, 1.0)]
    low, high = focus_box(row, 0.5)
    np.testing.assert_allclose((low + high) / 2, [0.0, -3.0, 0.0], atol=1e-9)
