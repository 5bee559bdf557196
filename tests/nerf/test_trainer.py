"""The NeRF trainer on the shared loop: a minutes budget means minutes, checkpoints follow the training clock,
Ctrl-C leaves a checkpoint that resumes at the same step, and bad settings fail before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mapforge import cli
from mapforge.errors import InputError
from mapforge.nerf.config import FastNeRFConfig, OriginalNeRFConfig, make_config
from mapforge.nerf.trainer import NeRFTrainer
from mapforge.training.checkpoint import load_checkpoint
from tests.conftest import small_scene
from tests.nerf.scenes import sphere_dataset

TINY = dict(batch_rays=256, target_samples=4096, num_levels=4, log2_hashmap_size=12, finest_resolution=64,
            grid_resolution=16, render_steps=64, warmup_steps=0, log_interval=2)


def fake_clock(seconds_per_step: float):
    """A clock the loop reads before and after each step: every step then takes `seconds_per_step`."""
    ticks = iter(np.arange(100_000) * seconds_per_step)
    return lambda: float(next(ticks))


def test_a_minutes_budget_trains_for_its_minutes_not_the_default_iterations(tmp_path):
    # 0.05 minutes at 0.25 s a step is 12 steps; the 3 iterations must not cap it (the 3000-step cap did).
    config = FastNeRFConfig(minutes=0.05, iterations=3, **TINY)
    trainer = NeRFTrainer(sphere_dataset(2, 16), config, tmp_path)
    trainer.clock = fake_clock(0.25)
    trainer.run()
    assert trainer.step == 12 and trainer.seconds == pytest.approx(3.0)
    # The learning-rate schedule follows the clock too: the last step ran at 11/12 of the budget.
    expected = config.lr * (config.lr_final / config.lr) ** (11 / 12)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_run_method_nerf_hands_the_minutes_to_the_trainer(tmp_path, monkeypatch):
    import mapforge.nerf.trainer as nerf_trainer
    import mapforge.run as run

    seen = {}

    class Result:
        metrics = {"psnr": 1.0}

    def fake_train(dataset, config, out_dir, **options):
        seen["config"] = config
        return Result()

    monkeypatch.setattr(run, "_posed_dataset", lambda config, out: sphere_dataset(2, 16))
    monkeypatch.setattr(nerf_trainer, "train", fake_train)
    run.stage_nerf(run.RunConfig(images="x", output=str(tmp_path), method="nerf", minutes=12), tmp_path)
    budget = seen["config"].budget
    assert not budget.done(step=10**6, seconds=12 * 60 - 1) and budget.done(step=1, seconds=12 * 60)


def test_checkpoints_every_checkpoint_minutes_of_training(tmp_path, monkeypatch):
    trainer = NeRFTrainer(sphere_dataset(2, 16), FastNeRFConfig(iterations=7, checkpoint_minutes=1, **TINY), tmp_path)
    trainer.clock = fake_clock(25.0)
    saved = []
    save = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda: (saved.append(trainer.step), save())[1])
    trainer.run()
    assert saved == [3, 6, 7]  # after 75 s and 150 s of training (a minute apart at least), then at the end


def ctrl_c_at(trainer: NeRFTrainer, step: int, monkeypatch) -> None:
    train_step = trainer.train_step

    def interrupted(progress):
        if trainer.step == step:
            raise KeyboardInterrupt
        return train_step(progress)

    monkeypatch.setattr(trainer, "train_step", interrupted)


@pytest.mark.parametrize("config", [
    FastNeRFConfig(iterations=12, **TINY),
    OriginalNeRFConfig(iterations=12, batch_rays=64, num_coarse=8, num_fine=8, width=16, depth=2, precrop_steps=4,
                       log_interval=2),
], ids=["fast", "original"])
def test_ctrl_c_leaves_a_checkpoint_that_resumes_at_the_same_step(config, tmp_path, monkeypatch):
    dataset = sphere_dataset(2, 16)
    straight = NeRFTrainer(dataset, config, tmp_path / "straight")
    straight.run()

    interrupted = NeRFTrainer(dataset, config, tmp_path / "run")
    ctrl_c_at(interrupted, 7, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt", "nerf")["step"] == 7
    resumed = NeRFTrainer(dataset, config, tmp_path / "run", resume=True)
    assert resumed.step == 7 and resumed.history.entries == interrupted.history.entries
    resumed.run()
    assert resumed.step == 12
    for ours, theirs in zip(resumed.model.parameters(), straight.model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    assert [e["iteration"] for e in resumed.history.entries] == [2, 4, 6, 8, 10, 12]


def test_resume_refuses_the_other_model(tmp_path):
    dataset = sphere_dataset(2, 16)
    NeRFTrainer(dataset, FastNeRFConfig(iterations=1, **TINY), tmp_path).run()
    with pytest.raises(InputError, match="'fast' NeRF, not 'nerf'"):
        NeRFTrainer(dataset, OriginalNeRFConfig(iterations=1, width=16, depth=2), tmp_path, resume=True)


@pytest.mark.parametrize("setting, message", [
    ("grid_resolution=-4", "grid_resolution must be a positive integer"),
    ("grid_resolution=2.5", "grid_resolution must be a positive integer"),
    ("lr=0", "lr must be a positive number"),
    ("log2_hashmap_size=40", "log2_hashmap_size must be at most 24"),
    ("train_min_transmittance=2", r"train_min_transmittance must be a number in \[0, 1\]"),
    ("aabb=[[1, 1, 1], [0, 0, 0]]", "min < max"),
    ("eval_views=-1", "eval_views"),
])
def test_bad_settings_are_refused_by_the_config(setting, message):
    key, value = setting.split("=")
    with pytest.raises(InputError, match=message):
        make_config("fast", {key: value})


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return small_scene(tmp_path_factory.mktemp("data") / "scene", views=4, points=50)


@pytest.mark.parametrize("args, message", [
    (["--set", "grid_resolution=-4"], "grid_resolution must be a positive integer"),
    (["--downscale", "1000"], "would be 0x0 pixels"),
])
def test_bad_numbers_fail_in_one_line_before_any_work(args, message, scene, tmp_path, capsys):
    code = cli.main(["nerf", "train", str(scene), "-o", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_negative_seed_is_refused_by_the_parser(scene, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["nerf", "train", str(scene), "-o", str(tmp_path / "out"), "--seed", "-1"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "Traceback" not in err
    assert len(err.splitlines()) == 1 and "argument --seed: expected a non-negative integer, got '-1'" in err
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        FastNeRFConfig(seed=-1)
